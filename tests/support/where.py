"""Where the tests' files are, so a test reads them the same from any folder."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"
SHARED = REPO.parent / "shared"  # ../shared: data beside the clone (tests that read it skip without it)
MICRO_PIPELINE = SUPPORT / "micro_pipeline.gin"  # the pipeline at its smallest: every stage in seconds
MICRO_OVERRIDES = SUPPORT / "micro_overrides.gin"
RL_CHILD = SUPPORT / "rl_child.py"
PAPER_MICRO_OVERRIDES = SUPPORT / "paper_micro_overrides.gin"  # after configs/experiments/paper/*.gin

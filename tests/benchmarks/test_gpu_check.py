"""The GPU check stops at once without a GPU, and so does the GPU suite it opens."""
import os
import subprocess
import sys

from where import REPO


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cuda"}


def test_gpu_check_without_a_gpu_exits_2_and_says_why():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--json"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-1500:]
    assert "no GPU here" in done.stderr and "nothing was measured" in done.stderr
    assert done.stdout.strip() == ""


def test_gpu_suite_stops_before_its_benchmarks_without_a_gpu(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", str(tmp_path / "out")], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-1500:]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "stopped before the benchmarks: no GPU" in log
    assert "== attention" not in log and "== train_350m" not in log  # no device time spent on the rest

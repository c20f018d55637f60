"""The docs work as written: the tutorial fires a PQL, links resolve, the site builds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIAL = ROOT / "examples" / "tutorial.py"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "([^"]+?)(?::(\w+))?"\n', re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def blocks(page: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in a docs page, in order."""
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def expand_snippets(text: str) -> str:
    """Replace pymdownx.snippets lines (``--8<-- "path:section"``) the way the site does."""

    def include(match: re.Match[str]) -> str:
        content = (ROOT / match[1]).read_text()
        if match[2] is None:
            return content
        start = f"--8<-- [start:{match[2]}]"
        end = f"--8<-- [end:{match[2]}]"
        lines = content.splitlines(keepends=True)
        first = next(i for i, line in enumerate(lines) if start in line)
        last = next(i for i, line in enumerate(lines) if end in line)
        return "".join(lines[first + 1 : last])

    return SNIPPET.sub(include, text)


def run_python(
    args: list[str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the venv's Python with warnings as errors, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- the tutorial ------------------------------------------------------------------------------


def test_tutorial_script_fires_a_pql(tmp_path: Path) -> None:
    """``python tutorial.py`` fires Ada's PQL; a second run on the same file fires nothing."""
    shutil.copy(TUTORIAL, tmp_path / "tutorial.py")
    first = run_python(["tutorial.py"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("PQL: ada at initech, scores {'behavior': 70.0}\n")
    assert "pql: score('behavior') = 70 >= 70 -> true" in first.stdout
    assert (tmp_path / "tutorial.db").exists()
    second = run_python(["tutorial.py"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "PQL:" not in second.stdout
    assert second.stdout.startswith("bo: {'behavior': 20.0}\n")


def test_tutorial_as_written_runs_and_prints_what_the_page_shows(tmp_path: Path) -> None:
    """The page's code blocks, pasted in order into tutorial.py, print the page's output."""
    page = DOCS / "tutorial.md"
    python = [expand_snippets(b) for b in blocks(page, "python")]
    script = "\n".join(b for b in python if "from tutorial import" not in b)
    (tmp_path / "tutorial.py").write_text(script)
    done = run_python(["tutorial.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    (shown,) = [b for b in blocks(page, "text") if b.startswith("PQL:")]
    assert done.stdout == shown


def test_tutorial_test_passes_under_pytest(tmp_path: Path) -> None:
    """The page's test_tutorial.py passes with pqlkit's pytest plugin, warnings as errors."""
    page = DOCS / "tutorial.md"
    (test_code,) = [b for b in blocks(page, "python") if "from tutorial import" in b]
    shutil.copy(TUTORIAL, tmp_path / "tutorial.py")
    (tmp_path / "test_tutorial.py").write_text(test_code)
    done = run_python(
        ["-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "test_tutorial.py"],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_tutorial_page_includes_every_part_of_the_script() -> None:
    """Every snippet section of examples/tutorial.py is shown on the page."""
    sections = set(re.findall(r"--8<-- \[start:(\w+)\]", TUTORIAL.read_text()))
    shown = set(
        re.findall(r'--8<-- "examples/tutorial.py:(\w+)"', (DOCS / "tutorial.md").read_text())
    )
    assert sections == shown == {"model", "client", "track", "explain"}


def test_index_quickstart_runs(tmp_path: Path) -> None:
    """The home page's example runs as it is and prints jane's qualification."""
    (code,) = blocks(DOCS / "index.md", "python")
    (tmp_path / "quickstart.py").write_text(code)
    done = run_python(["quickstart.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["jane", "{'behavior': 50.0}"]


def test_lab_page_example_prints_what_the_page_shows(tmp_path: Path) -> None:
    """The "Validate your model" page's first example prints the report the page shows."""
    page = DOCS / "lab.md"
    code = blocks(page, "python")[0]
    shown = blocks(page, "text")[0]
    (tmp_path / "lab.py").write_text(code)
    done = run_python(["lab.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown


# -- the site ----------------------------------------------------------------------------------


def nav_pages() -> set[str]:
    """The pages mkdocs.yml's nav lists."""
    return set(re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M))


def test_every_page_is_in_the_nav() -> None:
    """Each docs page is in mkdocs.yml's nav, and each nav entry exists."""
    pages = {p.name for p in DOCS.glob("*.md")}
    assert nav_pages() == pages


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_resolve(page: str) -> None:
    """Every relative link in a page points at a docs page or an existing repository file.

    (mkdocs only reports links that leave docs/ as info, so this is where they are checked.)
    """
    text = FENCE.sub("", (DOCS / page).read_text())
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (DOCS / path).resolve().exists(), f"{page}: broken link {target}"


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` passes: every page, snippet and API reference renders."""
    if importlib.util.find_spec("mkdocs") is None:
        message = "mkdocs is not installed: pip install -e '.[dev]' (or '.[docs]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("pqlkit.Client", "pqlkit.AsyncClient", "pqlkit.Model", "pqlkit.testing.journey"):
        assert f'id="{name}"' in api, name

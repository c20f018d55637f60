"""The docs work as written: the tutorial fires a PQL, links resolve, the site builds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest needs tomli on 3.10
    import tomli as tomllib

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


def test_lab_page_calibration_example_prints_what_the_page_shows(tmp_path: Path) -> None:
    """The page's calibration example (on the first example's model and history) prints the
    code the page shows."""
    page = DOCS / "lab.md"
    python = blocks(page, "python")
    text = blocks(page, "text")
    (calibrate,) = [b for b in python if "pqlkit.calibrate(" in b]
    (shown,) = [b for b in text if b.startswith("# pqlkit.calibrate")]
    (tmp_path / "lab.py").write_text(python[0].replace("print(report)", "") + calibrate)
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

    (Without mkdocs: the site's build checks them too, see test_site_links_resolve.)
    """
    text = FENCE.sub("", (DOCS / page).read_text())
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (DOCS / path).resolve().exists(), f"{page}: broken link {target}"


def require_mkdocs() -> None:
    """Skip without mkdocs, but fail under CI=true (the dev extra installs it)."""
    if importlib.util.find_spec("mkdocs") is None:
        message = "mkdocs is not installed: pip install -e '.[dev]' (or '.[docs]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project at ``project`` into ``site``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class Site(NamedTuple):
    path: Path
    log: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The site, built once for the tests below (which skip without mkdocs)."""
    require_mkdocs()
    path = tmp_path_factory.mktemp("site") / "site"
    done = mkdocs_build(ROOT, path)
    assert done.returncode == 0, done.stderr
    return Site(path, done.stderr)


# What a clean build logs; anything else (a link or anchor mkdocs could not resolve, a
# missing signature formatter, ...) is a finding, even at INFO, which strict lets pass.
ROUTINE_LOG = re.compile(
    r"^INFO    -  (Cleaning site directory|Building documentation to directory: .*"
    r"|Documentation built in [\d.]+ seconds)$"
)


def test_docs_build_strict(site: Site) -> None:
    """``mkdocs build --strict`` passes: every page, snippet and API reference renders."""
    api = (site.path / "api" / "index.html").read_text()
    for name in ("pqlkit.Client", "pqlkit.AsyncClient", "pqlkit.Model", "pqlkit.testing.journey"):
        assert f'id="{name}"' in api, name


def test_docs_build_logs_nothing_but_routine(site: Site) -> None:
    """The build says nothing about links, anchors or missing targets, not even at INFO."""
    lines = [line for line in site.log.splitlines() if line.strip()]
    assert lines, "mkdocs logged nothing: is its log still on stderr?"
    findings = [line for line in lines if not ROUTINE_LOG.match(line)]
    assert not findings, "\n".join(findings)


def test_docs_build_fails_on_an_unresolved_link(tmp_path: Path) -> None:
    """A link to a missing page, to a missing anchor, or to a missing repository file fails the
    strict build, and the log names each."""
    require_mkdocs()
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(DOCS, project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project)
    for name in ("src", "examples", "CHANGELOG.md"):
        (project / name).symlink_to(ROOT / name)
    page = project / "docs" / "concepts.md"
    page.write_text(
        page.read_text() + "\n[gone](no-such-page.md), [nowhere](tutorial.md#no-such-heading),"
        " [lost](../examples/no_such_example.py)\n"
    )
    done = mkdocs_build(project, tmp_path / "site")
    assert done.returncode != 0, done.stderr
    for target in ("no-such-page.md", "no-such-heading", "../examples/no_such_example.py"):
        assert re.search(rf"^WARNING .*{re.escape(target)}", done.stderr, re.M), (
            target,
            done.stderr,
        )


HREF = re.compile(r'\bhref="([^"]*)"')


def test_site_links_resolve(site: Site) -> None:
    """Every relative link in the built site points at a file of the site, and each link to a
    repository file outside docs/ points at it in the repository (docs/hooks)."""
    config = (ROOT / "mkdocs.yml").read_text()
    repo_url = re.search(r"^repo_url: (\S+)$", config, re.M)
    site_url = re.search(r"^site_url: https://[^/]+(/\S*)$", config, re.M)
    assert repo_url is not None
    assert site_url is not None
    to_repository = []
    for page in site.path.rglob("*.html"):
        for href in HREF.findall(page.read_text()):
            if href.startswith(repo_url[1] + "/"):
                to_repository.append(href)
            if re.match(r"^[a-z]+:", href) or href.startswith(("#", "//")):
                continue
            path = href.split("#", 1)[0].split("?", 1)[0]
            if path.startswith("/"):  # 404.html's links start with site_url's path
                assert path.startswith(site_url[1]), f"{page.name}: {href}"
                target = (site.path / path.removeprefix(site_url[1])).resolve()
            else:
                target = (page.parent / path).resolve()
            if target.is_dir():
                target = target / "index.html"
            assert target.exists(), f"{page.relative_to(site.path)}: broken link {href}"
    prefix = f"{repo_url[1]}/blob/main/"
    assert f"{prefix}examples/tutorial.py" in to_repository
    for href in to_repository:
        if href.startswith(prefix):
            assert (ROOT / href.removeprefix(prefix)).is_file(), href


def test_api_reference_documents_each_public_name_once(site: Site) -> None:
    """Each name of ``pqlkit.__all__`` has one entry, under the package or the module that
    defines it (``__version__`` a sentence); ``__all__`` itself is none."""
    import pqlkit

    api = (site.path / "api" / "index.html").read_text()
    ids = re.findall(r'\bid="(pqlkit[\w.]*)"', api)
    assert not [i for i in ids if i.endswith(".__all__")]
    modules = ("pqlkit", "pqlkit.exceptions", "pqlkit.stores")
    for name in pqlkit.__all__:
        entries = [i for i in ids if i in {f"{module}.{name}" for module in modules}]
        if name.startswith("__"):  # __version__: the page's introduction says what it is
            assert (entries, f"<code>pqlkit.{name}</code>" in api) == ([], True), name
        else:
            assert len(entries) == 1, (name, entries)


def test_docs_extra_formats_signatures() -> None:
    """The docs extra brings a formatter for the API reference's signatures (mkdocstrings'
    separate_signature uses ruff or black; without one it logs INFO and leaves them long)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[\s<>=;\[!~]", spec, maxsplit=1)[0] for spec in extras["docs"]}
    assert names & {"ruff", "black"}, extras["docs"]


def test_project_urls_are_the_sites() -> None:
    """pyproject.toml's [project.urls] name the repository and the site mkdocs.yml names."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    config = (ROOT / "mkdocs.yml").read_text()
    assert f"\nrepo_url: {urls['Repository']}\n" in config
    assert f"\nsite_url: {urls['Documentation']}\n" in config
    assert urls["Changelog"].startswith(urls["Documentation"])


def test_the_privacy_page_example_runs(tmp_path: Path) -> None:
    """docs/privacy.md's example forgets and suppresses a user, and prints what it says."""
    (code,) = [b for b in blocks(DOCS / "privacy.md", "python") if "forget_preview" in b]
    (tmp_path / "privacy.py").write_text(code)
    done = run_python(["privacy.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    preview, suppressed = done.stdout.splitlines()
    assert "'events': 1" in preview
    assert suppressed == "True"


def test_the_retention_example_runs(tmp_path: Path) -> None:
    """docs/privacy.md's retention example prunes old events and prints the same values."""
    (code,) = [b for b in blocks(DOCS / "privacy.md", "python") if "prune" in b]
    (tmp_path / "retention.py").write_text(code)
    done = run_python(["retention.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 {'activated': True} {'logins': 2.0}"

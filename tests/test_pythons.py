"""Every Python the package promises is tested: the Makefile's list, .ci/find-python, and what
`make` does when one is missing (skipped with a message; an error under CI=true)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest needs tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
FIND_PYTHON = ROOT / ".ci" / "find-python"
THIS = f"{sys.version_info[0]}.{sys.version_info[1]}"
NOWHERE = "3.99"  # a version no machine has


def promised() -> list[str]:
    """The Python versions pyproject.toml's classifiers promise."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    return [
        c.removeprefix(prefix) for c in project["classifiers"] if re.match(rf"{prefix}3\.\d+$", c)
    ]


def clean_env(**changes: str) -> dict[str, str]:
    """This environment without make's own variables (a run under `make test` has them) and
    without CI, plus ``changes``."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CI"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **changes}


def test_the_makefile_tests_each_promised_python() -> None:
    """`make test` covers exactly the versions of the classifiers, from requires-python's."""
    versions = re.search(r"^PYTHON_VERSIONS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert versions is not None
    assert versions[1].split() == promised()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={promised()[0]}"


def test_find_python_finds_this_interpreter() -> None:
    """With this interpreter's folder on PATH, find-python names a Python of its version."""
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [str(FIND_PYTHON), THIS], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    found = done.stdout.strip()
    version = subprocess.run(
        [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == THIS


def test_find_python_fails_for_a_missing_version() -> None:
    done = subprocess.run(
        [str(FIND_PYTHON), NOWHERE], env=clean_env(), capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (1, "")


@pytest.fixture
def make() -> str:
    path = shutil.which("make")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("make is not installed")
        pytest.skip("make is not installed")
    return path


def test_a_missing_python_is_skipped_with_a_message(make: str) -> None:
    done = subprocess.run(
        [make, "--no-print-directory", f"PYTHON_VERSIONS={NOWHERE}", f"pytest-py{NOWHERE}"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"SKIPPED Python {NOWHERE}: not found" in done.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_python_fails_under_ci(make: str, ci: str) -> None:
    done = subprocess.run(
        [make, "--no-print-directory", f"PYTHON_VERSIONS={NOWHERE}", f"pytest-py{NOWHERE}"],
        cwd=ROOT,
        env=clean_env(CI=ci),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert f"error: Python {NOWHERE} is promised" in done.stderr
    assert "SKIPPED" not in done.stdout

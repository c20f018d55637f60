"""The release's compiled wheels: cibuildwheel's configuration in pyproject.toml, and the
smoke test (.ci/wheel-smoke.py) it runs against each wheel.

cibuildwheel itself builds in containers and on other operating systems, which this
machine cannot: what is tested here is that the configuration promises every Python the
classifiers promise, on Linux, macOS and Windows, with the mypyc hook switched on; that
cibuildwheel reads it so (``--print-build-identifiers``; ``make wheels-config``); and
that the smoke test passes on the build this run imports and refuses the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - mypy brings tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / ".ci" / "wheel-smoke.py"


def _pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def _promised_pythons() -> list[str]:
    """["310", "311", ...]: the CPython versions the classifiers promise."""
    classifiers = _pyproject()["project"]["classifiers"]
    found = [
        m.group(1) + m.group(2)
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: (3)\.(\d+)", c))
    ]
    assert found, "no Python version classifiers"
    return found


def test_cibuildwheel_builds_every_promised_python_compiled_on_three_platforms() -> None:
    config = _pyproject()["tool"]["cibuildwheel"]
    assert sorted(config["build"].split()) == sorted(f"cp{v}-*" for v in _promised_pythons())
    assert config["environment"] == {"HATCH_BUILD_HOOK_ENABLE_MYPYC": "1"}
    assert config["test-command"] == "python {project}/.ci/wheel-smoke.py --expect mypyc"
    assert SMOKE.is_file()
    assert config["linux"]["archs"] == ["x86_64", "aarch64"]
    assert config["macos"]["archs"] == ["x86_64", "arm64"]
    assert config["windows"]["archs"] == ["AMD64"]
    # the hook the variable switches on compiles files that exist
    hook = _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]
    assert hook["enable-by-default"] is False  # a plain build stays the pure wheel
    for path in hook["include"]:
        assert (ROOT / path.lstrip("/")).is_file(), path


def _cibuildwheel() -> str:
    found = shutil.which("cibuildwheel") or shutil.which(
        "cibuildwheel", path=str(Path(sys.executable).parent)
    )
    if found is None:
        reason = "cibuildwheel is not installed (the dev extra installs it)"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the wheel configuration must be checked)")
        pytest.skip(reason)
    return found


@pytest.mark.parametrize(
    ("platform", "tags"),
    [
        (
            "linux",
            [
                f"{libc}_{arch}"
                for libc in ("manylinux", "musllinux")
                for arch in ("x86_64", "aarch64")
            ],
        ),
        ("macos", ["macosx_x86_64", "macosx_arm64"]),
        ("windows", ["win_amd64"]),
    ],
)
def test_cibuildwheel_reads_the_configuration(platform: str, tags: list[str]) -> None:
    """What cibuildwheel itself says it would build, from pyproject.toml."""
    out = subprocess.run(
        [_cibuildwheel(), "--print-build-identifiers", "--platform", platform, str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert sorted(out) == sorted(f"cp{v}-{t}" for v in _promised_pythons() for t in tags)


def _smoke(expect: str) -> subprocess.CompletedProcess[str]:
    import pqlkit

    package_root = str(Path(pqlkit.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}
    return subprocess.run(
        [sys.executable, str(SMOKE), "--expect", expect],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_the_wheel_smoke_test_passes_on_this_build_and_refuses_the_other() -> None:
    from conftest import _build

    build = _build()
    done = _smoke(build)
    assert done.returncode == 0, done.stderr
    assert f"({build} build)" in done.stdout
    other = "pure" if build == "mypyc" else "mypyc"
    refused = _smoke(other)
    assert refused.returncode == 1
    assert f"expected the {other} build" in refused.stderr


@pytest.mark.slow
def test_make_mypyc_works_on_a_fresh_clone(tmp_path: Path) -> None:
    """``make mypyc`` in a fresh clone (its own .venv, nothing installed by hand) builds the
    compiled wheel, and the smoke test passes on it. It failed twice as the package grew:
    mypyc could not find psycopg, then matplotlib (types of modules the compiled ones reach,
    from extras a fresh clone does not have). Needs git, a C compiler and the package index."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        timeout=120,
    )
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHONPATH", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    build = subprocess.run(
        ["make", "mypyc", f"PYTHON={sys.executable}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    smoke = subprocess.run(
        [sys.executable, str(SMOKE), "--expect", "mypyc"],  # this Python has the dependencies
        env={**env, "PYTHONPATH": str(clone / "build" / "mypyc")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stderr
    assert "(mypyc build)" in smoke.stdout

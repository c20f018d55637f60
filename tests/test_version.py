"""``pqlkit.__version__``: the version pyproject.toml declares, in every build."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

import pqlkit
from pqlkit import _version

ROOT = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ImportError:  # Python 3.10: tomli (the dev extra's coverage[toml] brings it)
    import tomli as tomllib


def declared_version() -> str:
    """``version`` in the [project] table of the repository's pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        value = tomllib.load(f)["project"]["version"]
    assert isinstance(value, str)
    return value


def test_version_is_the_declared_one() -> None:
    """``pqlkit.__version__`` is the version in pyproject.toml (this run's build: the pure
    sources, or the compiled wheel under ``make pytest-mypyc``), and the installed metadata's."""
    assert isinstance(pqlkit.__version__, str)
    assert pqlkit.__version__ == declared_version()
    assert pqlkit.__version__ == installed_version("pqlkit")


def test_version_is_public_and_importable() -> None:
    """``from pqlkit import __version__`` works, and ``__version__`` is in ``__all__``
    (as httpx lists it)."""
    from pqlkit import __version__

    assert __version__ == pqlkit.__version__
    assert "__version__" in pqlkit.__all__


def test_version_is_read_on_first_use_not_at_import() -> None:
    """``import pqlkit`` does not import importlib.metadata (about 10 ms); reading
    ``__version__`` does, once."""
    code = (
        "import sys, pqlkit\n"
        "before = 'importlib.metadata' in sys.modules\n"
        "v = pqlkit.__version__\n"
        "print(before, 'importlib.metadata' in sys.modules, v, vars(pqlkit)['__version__'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True", declared_version(), declared_version()]


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    """The lazy lookup of ``__version__`` leaves other names alone."""
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        pqlkit.Clinet  # type: ignore[attr-defined]  # noqa: B018


def test_a_source_tree_says_its_version_when_nothing_is_installed(tmp_path: Path) -> None:
    """Without installed metadata (``PYTHONPATH=src`` from a checkout never installed), the
    version comes from the tree's pyproject.toml; from another project's, or none, it is
    the PEP 440 placeholder ``0+unknown``."""
    assert _version.source_version(ROOT) == declared_version()
    assert _version.source_version(tmp_path) == _version.UNKNOWN
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\n\n[project]\nname = "other"\nversion = "9.9"\n'
    )
    assert _version.source_version(tmp_path) == _version.UNKNOWN
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "pqlkit"\ndescription = "x"\nversion = "2.3.4rc1"\n\n'
        '[tool.other]\nversion = "0.0.1"\n'
    )
    assert _version.source_version(tmp_path) == "2.3.4rc1"
    assert re.fullmatch(r"\d+(\.\d+)*\+unknown", _version.UNKNOWN)


def test_cli_version_is_the_same(tmp_path: Path) -> None:
    """``pqlkit --version`` starts with ``pqlkit.__version__``."""
    from click.testing import CliRunner

    from pqlkit.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"pqlkit {pqlkit.__version__} (")

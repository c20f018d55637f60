"""The installed version: ``pqlkit.__version__`` and ``pqlkit --version``.

It comes from the package's metadata (``importlib.metadata``), which hatch writes
from ``version`` in ``pyproject.toml`` into every build: the editable and pure
installs, and the compiled wheel (``make mypyc`` installs its metadata next to
it). Where pqlkit runs from a source tree that was never installed
(``PYTHONPATH=src``), the tree's own ``pyproject.toml`` says it. It is looked up
on first use, not at ``import pqlkit`` (``importlib.metadata`` alone takes about
10 ms to import).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["UNKNOWN", "source_version", "version"]

UNKNOWN = "0+unknown"
"""The version reported when neither metadata nor a source tree says (a valid PEP 440 version)."""

_SOURCE_TREE = Path(__file__).resolve().parent.parent.parent
"""Where ``pyproject.toml`` is when this file is ``src/pqlkit/_version.py`` of a checkout."""

_NAME = re.compile(r'^name\s*=\s*["\']pqlkit["\']\s*$', re.MULTILINE)
_VERSION = re.compile(r'^version\s*=\s*["\']([^"\']+)["\']\s*$', re.MULTILINE)


@functools.cache
def version() -> str:
    """pqlkit's version as installed; else as its source tree declares it; else UNKNOWN."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("pqlkit")
    except PackageNotFoundError:
        return source_version(_SOURCE_TREE)


def source_version(tree: Path) -> str:
    """The version ``tree/pyproject.toml`` declares in its ``[project]`` table, if that
    project is pqlkit; else :data:`UNKNOWN`."""
    try:
        text = (tree / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return UNKNOWN
    _, found, rest = ("\n" + text).partition("\n[project]\n")
    project = rest.split("\n[", 1)[0]  # up to the next table
    match = _VERSION.search(project)
    if not found or not _NAME.search(project) or match is None:
        return UNKNOWN
    return match.group(1)

"""The examples in docstrings run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pqlkit

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(pqlkit.__path__, "pqlkit.")
    if not m.name.endswith("_pytest_plugin") and not m.name.endswith(".postgres")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """Every ``>>>`` example in the module's docstrings passes."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0

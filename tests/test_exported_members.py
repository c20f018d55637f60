"""The public surface: ``__all__`` is complete, sorted, and every name is importable."""

from __future__ import annotations

from types import ModuleType

import pytest

import pqlkit
import pqlkit.exceptions
import pqlkit.integrations
import pqlkit.integrations.django
import pqlkit.integrations.django.apps
import pqlkit.integrations.fastapi
import pqlkit.integrations.flask
import pqlkit.integrations.web
import pqlkit.sinks
import pqlkit.stores
import pqlkit.testing


def test_all_is_sorted() -> None:
    """``pqlkit.__all__`` is sorted, so additions are easy to review."""
    assert pqlkit.__all__ == sorted(pqlkit.__all__)


def test_all_is_exactly_the_public_names() -> None:
    """``__all__`` is every public name of the package and ``__version__``, and nothing else
    (as httpx checks)."""
    public = {"__version__"} | {
        name
        for name, value in vars(pqlkit).items()
        if name.isidentifier()  # not what pytest's assertion rewriting adds
        and not name.startswith("_")
        and not isinstance(value, ModuleType)  # pqlkit.stores, pqlkit.cli once imported
        and name != "annotations"  # from __future__
    }
    assert sorted(public) == pqlkit.__all__


@pytest.mark.parametrize(
    "module",
    [
        pqlkit.exceptions,
        pqlkit.integrations,
        pqlkit.integrations.fastapi,
        pqlkit.integrations.flask,
        pqlkit.integrations.web,
        pqlkit.sinks,
        pqlkit.stores,
        pqlkit.testing,
    ],
)
def test_public_modules_export_what_they_define(module: ModuleType) -> None:
    """Each public module's ``__all__`` is sorted and holds every public name it defines
    (names it merely imports from elsewhere in pqlkit are not exports)."""
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and not isinstance(value, ModuleType)
    }
    assert module.__all__ == sorted(module.__all__)
    assert defined <= set(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_all_names_exist() -> None:
    """Every name in ``__all__`` can be imported."""
    for name in pqlkit.__all__:
        assert hasattr(pqlkit, name), name


def test_errors_share_one_root() -> None:
    """Every error class derives from PqlkitError; validation errors are ValueErrors."""
    for name in pqlkit.exceptions.__all__:
        assert issubclass(getattr(pqlkit.exceptions, name), pqlkit.PqlkitError)
    assert issubclass(pqlkit.ValidationError, ValueError)
    assert issubclass(pqlkit.ModelError, ValueError)


def test_validation_error_carries_field_and_reason() -> None:
    """ValidationError exposes the offending field and the reason."""
    err = pqlkit.ValidationError("user_id", "must not be empty")
    assert (err.field, err.reason) == ("user_id", "must not be empty")
    assert str(err) == "user_id: must not be empty"

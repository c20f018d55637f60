"""The public surface: ``__all__`` is complete, sorted, and every name is importable."""

from __future__ import annotations

import pqlkit
import pqlkit.exceptions
import pqlkit.testing


def test_all_is_sorted() -> None:
    """``pqlkit.__all__`` is sorted, so additions are easy to review."""
    assert pqlkit.__all__ == sorted(pqlkit.__all__)


def test_all_is_complete() -> None:
    """Every public attribute of the package is in ``__all__`` (no accidental exports)."""
    public = {
        name
        for name, value in vars(pqlkit).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("pqlkit")
    }
    assert public - {"exceptions", "stores", "testing"} <= set(pqlkit.__all__)


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

"""Finding a user's objects by name: ``"module:attribute"`` (a model, a callback).

The command line (``--model myapp.pql:model``) and the framework integrations
(``PQLKIT["MODEL"]`` in Django settings, ``PQLKIT_MODEL`` in Flask config) name
objects the way uvicorn and gunicorn do. A name that does not load is a
:class:`ValidationError` naming where it came from and why.
"""

from __future__ import annotations

import importlib
import os
import sys

from ._model import Model
from .exceptions import ValidationError

__all__ = ["load_model", "load_object"]


def load_object(path: object, field: str) -> object:
    """The object at ``module:attribute`` (dotted attributes allowed: ``app:hooks.slack``).

    The current directory is importable, as when running ``python -m``.

    Raises:
        ValidationError: ``path`` is malformed, or its module or attribute does not
            load (the import's own error is in the reason, and is the cause).
    """
    if not isinstance(path, str):
        raise ValidationError(field, f"must be a 'module:attribute' str, got {type(path).__name__}")
    module_name, separator, attribute = path.partition(":")
    if not separator or not module_name.strip() or not attribute.strip():
        raise ValidationError(
            field, f"expected module:attribute (e.g. myapp.pql:model), got {path!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        value: object = importlib.import_module(module_name)
    except Exception as error:  # the user's module: any error importing it is a bad name
        raise ValidationError(
            field, f"cannot load {path!r}: {type(error).__name__}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValidationError(
                field, f"cannot load {path!r}: no attribute {part!r} in {module_name!r}"
            ) from None
    return value


def load_model(path: object, field: str) -> Model:
    """A :class:`Model` given as one, or as ``module:attribute`` (see :func:`load_object`).

    Raises:
        ValidationError: It does not load, or is not a Model.
    """
    value = path if isinstance(path, Model) else load_object(path, field)
    if not isinstance(value, Model):
        raise ValidationError(field, f"{path!r} is a {type(value).__name__}, not a pqlkit.Model")
    return value

"""Errors raised by pqlkit.

Every error pqlkit raises on purpose derives from one root, and subclasses the
built-in exception it resembles where one fits::

    PqlkitError
    ├── ValidationError (also ValueError)   bad input to track/identify/group/...
    ├── ModelError (also ValueError)        a Model declaration that cannot work
    ├── StoreError                          the store cannot do what was asked
    │   ├── SchemaError                     the stored schema is newer than this pqlkit
    │   └── TransientStoreError             a conflict (or a lost connection) aborted it; retry
    ├── ClientClosedError (also RuntimeError)  a closed Client was used
    └── SinkError                           a sink's receiver refused a qualification (retried)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClientClosedError",
    "ModelError",
    "PqlkitError",
    "SchemaError",
    "SinkError",
    "StoreError",
    "TransientStoreError",
    "ValidationError",
]


class PqlkitError(Exception):
    """The root of every error pqlkit raises on purpose."""


class ValidationError(PqlkitError, ValueError):
    """Input was rejected before anything was stored.

    Attributes:
        field: The name of the offending argument, e.g. ``"user_id"`` or
            ``"properties.plan"`` for a nested value.
        reason: Why it was rejected, in plain words.

    Example:
        >>> err = ValidationError("user_id", "must not be empty")
        >>> str(err)
        'user_id: must not be empty'
        >>> isinstance(err, ValueError)
        True
    """

    field: str
    reason: str

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[type[ValidationError], tuple[str, str]]:
        return (type(self), (self.field, self.reason))


class ModelError(PqlkitError, ValueError):
    """A :class:`~pqlkit.Model` declaration is inconsistent.

    Raised when the model is built, never at ``track()`` time.

    Attributes:
        name: The signal, score or rule at fault (``"pql"``, ``"signals.habit"``...),
            or ``None`` when the whole model is at fault.
        reason: What is wrong.
    """

    name: str | None
    reason: str

    def __init__(self, name: str | None, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}" if name else reason)

    def __reduce__(self) -> tuple[type[ModelError], tuple[str | None, str]]:
        return (type(self), (self.name, self.reason))


class StoreError(PqlkitError):
    """The store could not complete an operation.

    The message names the store and says why (for an SQLite file: corrupt, full,
    read-only...); the database's own error, if any, is its ``__cause__``.
    """


class SchemaError(StoreError):
    """The store's schema was written by a newer pqlkit than this one."""


class TransientStoreError(StoreError):
    """The database aborted a transaction to resolve a conflict; running it again may succeed.

    Raised by :class:`~pqlkit.stores.postgres.PostgresStore` for a deadlock or a
    serialization failure; for a connection lost mid-transaction (the server, or
    PgBouncer in front of it, restarted); and for a statement prepared on another
    server connection behind a transaction pooler (the store stops preparing).
    Nothing of the transaction was stored, unless the connection was lost while
    its COMMIT was answered: running it again then finds its event's
    ``message_id`` stored. The Client retries its writes a few times before
    letting it through.
    """


class ClientClosedError(PqlkitError, RuntimeError):
    """A :class:`~pqlkit.Client` was used after :meth:`~pqlkit.Client.close`."""


class SinkError(PqlkitError):
    """A sink in :mod:`pqlkit.sinks` could not hand a qualification over.

    Raised from the callback, so pqlkit keeps the delivery in its outbox and
    tries it again with backoff (then dead-letters it). A network failure (a
    refused connection, a timeout) raises an ``OSError`` instead, with the same
    effect.

    Attributes:
        status: The HTTP status the receiver answered, or None.
    """

    status: int | None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_sink_error, (str(self), self.status))


def _sink_error(message: str, status: int | None) -> SinkError:
    return SinkError(message, status=status)

"""Store URLs: ``store="sqlite:///pql.db"`` and friends, turned into a Store."""

from __future__ import annotations

import importlib

from ..exceptions import StoreError, ValidationError
from ._base import Store
from .memory import MemoryStore
from .sqlite import DEFAULT_SQLITE_PATH, SQLiteStore

__all__ = ["open_store"]

_EXPECTED = (
    "expected 'sqlite:///relative/path.db', 'sqlite:////absolute/path.db', "
    "'sqlite:///:memory:', 'memory://', 'postgresql://...' or a Store"
)


def open_store(url: str | Store | None = None, *, read_only: bool = False) -> Store:
    """The store a URL names (URLs in the form SQLAlchemy uses).

    ============================== ===============================================
    ``None``                       ``SQLiteStore("pqlkit.db")`` in the current directory
    ``sqlite:///relative/path.db`` an SQLite file, relative to the current directory
    ``sqlite:////absolute/path.db`` an SQLite file at an absolute path
    ``sqlite:///:memory:``         an in-memory SQLite database (also ``sqlite://:memory:``
                                   and ``sqlite://``)
    ``memory://``                  a :class:`~pqlkit.MemoryStore`
    ``postgresql://...``           a ``PostgresStore`` (also ``postgres://``)
    a Store                        the store itself
    ============================== ===============================================

    Args:
        url: A store URL, a store, or None for the default SQLite file.
        read_only: Open an existing store only to read it: nothing is created
            (a URL naming no store raises), migrated or written (see
            ``SQLiteStore(read_only=True)``). A store instance is returned as it is.

    Returns:
        A store; the caller owns it and should close it.

    Raises:
        ValidationError: ``url`` is not a URL of a known kind (field ``"store"``).
        StoreError: The store cannot be opened, e.g. ``PostgresStore`` is not installed,
            or (``read_only``) there is no store there.

    Example:
        >>> from pqlkit.stores import open_store
        >>> open_store("memory://")
        MemoryStore(events=0)
    """
    if url is None:
        return SQLiteStore(DEFAULT_SQLITE_PATH, read_only=read_only)
    if not isinstance(url, str):
        if callable(getattr(url, "transaction", None)) and callable(getattr(url, "close", None)):
            return url
        raise ValidationError("store", f"got a {type(url).__name__}; {_EXPECTED}")
    # Never repeat the URL in an error: it may hold a password.
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValidationError(
            "store", f"not a store URL (a file path needs 'sqlite:///'); {_EXPECTED}"
        )
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(rest), read_only=read_only)
    if scheme == "memory":
        if rest:
            raise ValidationError("store", "a memory:// URL takes nothing after '//'")
        if read_only:
            raise StoreError("a memory:// URL names a new, empty store: there is nothing to read")
        return MemoryStore()
    if scheme in ("postgresql", "postgres"):
        return _postgres_store(url, read_only)
    raise ValidationError("store", f"unknown store URL scheme {scheme!r}; {_EXPECTED}")


def _sqlite_path(rest: str) -> str:
    """The file path in what follows ``sqlite://``."""
    if rest in ("", ":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ValidationError(
            "store",
            "an sqlite URL has no host: write 'sqlite:///relative.db' or 'sqlite:////absolute.db'",
        )
    if "?" in rest:
        raise ValidationError("store", "sqlite URLs take no query parameters")
    path = rest[1:]
    if not path:
        raise ValidationError("store", "the sqlite URL has no file path")
    return path


def _postgres_store(url: str, read_only: bool) -> Store:
    try:
        module = importlib.import_module(".postgres", __package__)
        factory = module.PostgresStore
    except (ImportError, AttributeError) as error:
        raise StoreError(
            f"a postgresql:// store needs pqlkit's PostgresStore, which cannot be imported "
            f"({error}); install it with: pip install 'pqlkit[postgres]'"
        ) from error
    store: Store = factory(url, read_only=True) if read_only else factory(url)
    return store

"""Stores: where pqlkit keeps the event log, derived state and the outbox."""

from __future__ import annotations

from ._base import Store, Transaction
from ._url import open_store
from .memory import MemoryStore
from .postgres import PostgresStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "PostgresStore", "SQLiteStore", "Store", "Transaction", "open_store"]

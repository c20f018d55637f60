"""Stores: where pqlkit keeps the event log, derived state and the outbox."""

from __future__ import annotations

from ._base import Store, Transaction
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "Transaction"]

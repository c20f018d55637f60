"""pqlkit: product-qualified leads, in process."""

from __future__ import annotations

from .exceptions import ModelError, PqlkitError, ValidationError
from .stores import MemoryStore, Store

__all__ = ["MemoryStore", "ModelError", "PqlkitError", "Store", "ValidationError"]

"""Suppression: ids whose later ``track()``, ``identify()`` and ``alias()`` are dropped.

``forget(user, suppress=True)`` records each of the user's ids as a keyed one-way
digest, ``HMAC-SHA256(key, id)``, where ``key`` is 32 random bytes made once per
store (kept in its metadata). The store never holds the id itself; but whoever can
read the store can read the key too, and test a guessed id (an e-mail address is
easily guessed) against the digests: the key only stops digests from being
compared across stores or looked up in precomputed tables. See docs/privacy.md.

Every client checks the store, so a stale client in another process drops the
calls too. The check is cheap: an empty list of suppressions is remembered while
no other connection commits (the warm cache's token tells); otherwise one indexed
read, and a digest only when the list is not empty.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

from .stores._base import Transaction

__all__ = ["Suppressions"]

_KEY = "suppression:key"
"""The metadata key of the store's digest key (hex)."""


class Suppressions:
    """One client's view of its store's suppressions (see the module docstring)."""

    __slots__ = ("_key", "empty")

    def __init__(self) -> None:
        self._key: bytes | None = None  # the store's key, once read (it never changes)
        # no suppression, as of this client's unbroken chain of transactions (the hot
        # path reads it first: see Core._suppressed)
        self.empty = False

    def digest(self, tx: Transaction, user_id: str, *, create: bool = False) -> str | None:
        """The digest of ``user_id`` (None if the store has no key and ``create`` is False)."""
        key = self._key
        if key is None:
            text = tx.get_meta(_KEY)
            if text is None:
                if not create:
                    return None
                text = secrets.token_hex(32)
                tx.set_meta(_KEY, text)  # cached once read back in a committed transaction
                key = bytes.fromhex(text)
            else:
                key = self._key = bytes.fromhex(text)
        return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()

    def dropped(self, tx: Transaction, ids: Sequence[str], *, cached: bool) -> bool:
        """True if one of ``ids`` is suppressed (the dropped call is then counted).

        ``cached``: nobody else committed since this client's previous transaction,
        so an empty list it saw then is still empty.
        """
        if cached and self.empty:
            return False
        if not tx.has_suppressions():
            self.empty = True
            return False
        self.empty = False
        digests = [d for d in (self.digest(tx, i) for i in ids) if d is not None]
        return bool(digests) and tx.drop_suppressed(digests)

    def suppress(self, tx: Transaction, ids: Sequence[str], at: datetime) -> None:
        """Suppress every one of ``ids``."""
        self.empty = False
        for i in ids:
            digest = self.digest(tx, i, create=True)
            assert digest is not None
            tx.suppress(digest, at)

    def unsuppress(self, tx: Transaction, user_id: str) -> bool:
        """Lift the suppression of ``user_id``; False if it had none."""
        self.empty = False
        digest = self.digest(tx, user_id)
        return digest is not None and tx.unsuppress(digest)

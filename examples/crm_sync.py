"""Append qualifications to a JSON Lines file that a reverse-ETL tool syncs to the CRM.

One line per ``Qualification.id``: pqlkit delivers at least once (a retry after a
crash, another callback failing, a second process), so the sink remembers the ids
already in the file and skips a redelivery. Disqualifications have ids of their
own and get a line each (``"type": "disqualified"``).

Each line is ``Qualification.to_dict()`` as JSON (datetimes in ISO 8601) plus ``type``
(``pql``, ``pqa`` or ``disqualified``). Several processes may share one file: on
POSIX an exclusive ``flock`` serialises the appends and every process re-reads
what the others added before it writes. A line torn by a crash mid-write is
ended and skipped; its qualification, not acknowledged, is delivered again.

Use it::

    sink = JsonlSink("pql.jsonl")
    client.on_pql(sink)
    client.on_pqa(sink)
    client.on_disqualified(sink)

Run it: ``python examples/crm_sync.py [path]`` qualifies two users and prints the file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pqlkit

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per file
    fcntl = None  # type: ignore[assignment]


def record(q: pqlkit.Qualification) -> dict[str, Any]:
    """The line's object: ``q.to_dict()`` (ISO 8601 datetimes) and ``type``."""
    data = q.to_dict()
    data["type"] = "disqualified" if q.disqualified_at is not None else q.kind
    return data


def read(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records in the file, skipping a line torn by a crash."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


class JsonlSink:
    """A pqlkit callback appending each qualification once to a JSON Lines file.

    Args:
        path: The file (created if missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._offset = 0  # how far this sink has read the file

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"

    def __call__(self, q: pqlkit.Qualification) -> None:
        """Append ``q`` unless a line with its id is already in the file."""
        with self._lock, self._locked_file() as f:
            self._catch_up(f)
            if q.id in self._seen:
                return
            line = json.dumps(record(q), sort_keys=True, allow_nan=False) + "\n"
            f.seek(0, os.SEEK_END)
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
            self._offset = f.tell()
            self._seen.add(q.id)

    @contextmanager
    def _locked_file(self) -> Iterator[IO[bytes]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield f
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _catch_up(self, f: IO[bytes]) -> None:
        """Read the ids appended since the last call (by this sink or another process)."""
        size = f.seek(0, os.SEEK_END)
        if size < self._offset:  # the file was replaced or truncated: start over
            self._offset, self._seen = 0, set()
        f.seek(self._offset)
        for raw in f.read().splitlines(keepends=True):
            if not raw.endswith(b"\n"):  # torn by a crash: end it so the next line stands alone
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                break
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                self._seen.add(value["id"])
        self._offset = f.seek(0, os.SEEK_END)


def main(path: str) -> None:
    """Two users qualify; the second delivery of the first (a redelivery) adds no line."""
    model = pqlkit.Model("crm-sync-demo", pql=pqlkit.did("dashboard_built"))
    sink = JsonlSink(path)
    with pqlkit.Client(model, store="memory://") as client:
        client.on_pql(sink)
        first = client.track("jane", "dashboard_built", account_id="acme").qualified[0]
        client.track("raj", "dashboard_built", account_id="acme")
        sink(first)  # as if pqlkit delivered it again
    for data in read(path):
        print(data["type"], data["subject_id"], data["account_id"], data["id"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pqlkit-qualifications.jsonl")

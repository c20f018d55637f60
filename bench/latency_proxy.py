"""A TCP proxy that delays each direction and counts round trips: a network in a box.

``LatencyProxy(("127.0.0.1", 5432), delay=0.0005)`` listens on a free local port
(``proxy.port``) and forwards every connection to the upstream address, holding each
chunk of bytes ``delay`` seconds (from when it was read) before writing it on, in each
direction: a round trip through it costs ``2 x delay`` more than the loopback, as a
network between an app server and its database does. It runs in a process of its own
(so it never competes for the benchmark's GIL), with two threads per direction of each
connection: one reads and stamps each chunk with its due time, one sleeps until that
time and writes it (order kept; ``time.sleep``'s precision, tens of microseconds).

**Round trips** are counted, not inferred: per connection, a run of client-to-server
chunks with no server-to-client chunk between them is one *burst*, and a burst counts
as one round trip when the server's first bytes after it arrive (the client waited
for an answer). A pipelined batch of statements is one burst; a reply the server
sends in several chunks is still one answer. ``proxy.round_trips`` is the total over
every connection since the proxy started (read it before and after what you measure);
chunks the server sends unprompted (none in the PostgreSQL protocol as pqlkit uses it)
would not be counted.

Usage::

    with LatencyProxy(("127.0.0.1", 5432), delay=0.002) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        before = proxy.round_trips
        ...
        print(proxy.round_trips - before)
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.sharedctypes
import socket
import threading
import time
from typing import Any

__all__ = ["LatencyProxy"]

_CHUNK = 65_536


class _Connection:
    """One proxied connection: its two sockets and which side spoke last."""

    def __init__(self, client: socket.socket, server: socket.socket, counter: Any) -> None:
        self.client = client
        self.server = server
        self.counter = counter
        self.lock = threading.Lock()
        self.awaiting = False  # the client sent a burst the server has not answered yet

    def saw(self, from_client: bool) -> None:
        with self.lock:
            if from_client:
                self.awaiting = True
            elif self.awaiting:
                self.awaiting = False
                with self.counter.get_lock():
                    self.counter.value += 1


def _pump(conn: _Connection, source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Forward ``source`` to ``sink``, each chunk ``delay`` seconds after it was read."""
    from_client = source is conn.client
    pending: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()
    done = False

    def write() -> None:
        while True:
            with ready:
                while not pending and not done:
                    ready.wait()
                if not pending:
                    break
                due, data = pending.popleft()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                break
            if not data:
                break
            conn.saw(from_client)
            with ready:
                pending.append((time.perf_counter() + delay, data))
                ready.notify()
    finally:
        with ready:
            done = True
            ready.notify()
        writer.join()


def _handle(client: socket.socket, upstream: tuple[str, int], delay: float, counter: Any) -> None:
    try:
        server = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = _Connection(client, server, counter)
    back = threading.Thread(target=_pump, args=(conn, server, client, delay), daemon=True)
    back.start()
    _pump(conn, client, server, delay)
    back.join()
    client.close()
    server.close()


def _serve(listener: socket.socket, upstream: tuple[str, int], delay: float, counter: Any) -> None:
    """The proxy process: accept connections until killed."""
    while True:
        client, _ = listener.accept()
        threading.Thread(
            target=_handle, args=(client, upstream, delay, counter), daemon=True
        ).start()


class LatencyProxy:
    """A proxy to ``upstream`` adding ``delay`` seconds each way, in a process of its own."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port: int = listener.getsockname()[1]
        # spawn, not fork: the benchmark (or test) process has threads by now
        context = multiprocessing.get_context("spawn")
        self._counter: Any = context.Value("q", 0)
        self._process = context.Process(
            target=_serve, args=(listener, upstream, delay, self._counter), daemon=True
        )
        self._process.start()
        listener.close()  # the child holds it

    @property
    def round_trips(self) -> int:
        """Round trips through the proxy so far, over every connection."""
        with self._counter.get_lock():
            return int(self._counter.value)

    def close(self) -> None:
        """Stop the proxy (its connections drop)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(10)

    def __enter__(self) -> LatencyProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""bench/latency_proxy.py, the delaying proxy bench/bench_latency.py measures through:
its delay is applied each way, and its round trips are counted as documented."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from latency_proxy import LatencyProxy

DELAY = 0.1  # seconds each way: long beside a thread's scheduling delay on a loaded machine


@pytest.fixture(name="echo")
def fixture_echo() -> Iterator[tuple[str, int]]:
    """A server answering each chunk it reads with the same bytes, in two chunks."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data[:1])
                time.sleep(0.005)  # the answer's second chunk comes separately
                conn.sendall(data[1:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    listener.close()
    thread.join(10)


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the proxy closed the connection"
        data += chunk
    return data


def test_each_direction_is_delayed_and_each_answered_burst_is_one_round_trip(
    echo: tuple[str, int],
) -> None:
    with (
        LatencyProxy(echo, DELAY) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock,
    ):
        times = []
        for n in range(3):
            started = time.perf_counter()
            sock.sendall(b"ping%d" % n)
            assert _receive(sock, 5) == b"ping%d" % n
            times.append(time.perf_counter() - started)
        assert min(times) >= 2 * DELAY  # one delay each way
        assert max(times) < 2 * DELAY + 2.0, times  # and not much more (a loaded machine)
        assert proxy.round_trips == 3, proxy.round_trips  # two-chunk answers count once each

        # a burst of two client chunks before any answer is one round trip
        sock.sendall(b"ab")
        sock.sendall(b"cd")
        assert _receive(sock, 4) == b"abcd"
        time.sleep(0.1)  # the answers of both chunks went through
        assert proxy.round_trips == 4, proxy.round_trips

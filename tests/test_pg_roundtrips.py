"""PostgresStore's write path in round trips: a warm ``track()`` is one pipeline, and a
stale warm cache (another client wrote the subject, or changed an alias, traits or a
suppression) is found at commit and the write runs again cold.

Round trips are counted, not inferred: the store talks to the server through a small
TCP proxy that counts each request (bytes from the client after a reply from the
server: the client waited for an answer before sending more).
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conftest import T0
from pqlkit import Client, Model, Qualification, count, did, points, score
from pqlkit.stores.postgres import PostgresStore
from pqlkit.testing import FrozenClock

pytestmark = pytest.mark.postgres

MODEL = Model(
    "rt-tests",
    signals={"activated": did("dashboard_built")},
    scores={"logins": count("login"), "behavior": points(activated=60)},
    pql=(count("login") >= 1000) | (score("behavior") >= 50),
)


class CountingProxy:
    """A TCP proxy to the server counting round trips: a client's send that follows a
    reply (or opens the connection) starts one."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.round_trips = 0
        self._lock = threading.Lock()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            server = socket.create_connection(self._target)
            self._sockets.append(server)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            waiting = [False]  # this connection's client has sent, and awaits a reply
            threading.Thread(
                target=self._pump, args=(client, server, waiting, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, waiting, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, waiting: list[bool], request: bool
    ) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if request and not waiting[0]:
                        self.round_trips += 1
                    waiting[0] = request
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture(name="proxy")
def fixture_proxy(postgres_dsn: str) -> Iterator[CountingProxy]:
    params = conninfo_to_dict(postgres_dsn)
    proxy = CountingProxy(str(params.get("host", "127.0.0.1")), int(params.get("port", 5432)))
    yield proxy
    proxy.close()


def proxied(postgres_dsn: str, proxy: CountingProxy) -> str:
    params: dict[str, Any] = dict(conninfo_to_dict(postgres_dsn))
    params.update(host="127.0.0.1", port=str(proxy.port))
    return make_conninfo(**params)


def round_trips(proxy: CountingProxy, calls: int, call: Any) -> float:
    """Round trips per call, over ``calls`` calls."""
    before = proxy.round_trips
    for n in range(calls):
        call(n)
    return (proxy.round_trips - before) / calls


def each_call(proxy: CountingProxy, calls: int, call: Any) -> list[int]:
    """The round trips of each of ``calls`` calls."""
    counts = []
    for n in range(calls):
        before = proxy.round_trips
        call(n)
        counts.append(proxy.round_trips - before)
    return counts


def test_a_warm_track_is_one_round_trip(
    postgres_dsn: str, pg_schema: str, proxy: CountingProxy
) -> None:
    """Once a subject is warm, track() sends its whole transaction in one round trip
    (BEGIN, locks, event, checked state writes, generation check, COMMIT); with an
    account too. Before: about 12. (On a loaded machine psycopg may write a pipeline in
    two sends with the server's first answers already back in between, which the proxy
    counts as two though the client waited for neither: one call in 20 did so in a CI
    run; hence the median, and at most 2 for any call.)"""
    store = PostgresStore(proxied(postgres_dsn, proxy), schema=pg_schema, max_size=1)
    with Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline") as client:
        for n in range(3):  # cold, then warm
            client.track("u1", "login", account_id="acme", message_id=f"w{n}")
            client.track("u2", "login", message_id=f"x{n}")
        with_account = each_call(
            proxy, 20, lambda n: client.track("u1", "login", account_id="acme", message_id=f"a{n}")
        )
        user_only = each_call(proxy, 20, lambda n: client.track("u2", "login", message_id=f"b{n}"))
        for counts in (with_account, user_only):
            assert statistics.median(counts) == 1, counts
            assert max(counts) <= 2, counts
        assert client.scores("u1")["logins"] == 23
        assert client.scores("acme", of="account")["logins"] == 23
        assert client.scores("u2")["logins"] == 23


def test_a_duplicate_on_the_warm_path_is_still_a_duplicate(
    postgres_dsn: str, pg_schema: str
) -> None:
    """A message id stored already fails the batched write, which runs again cold and
    reports the duplicate: counted once."""
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    with Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline") as client:
        for n in range(3):
            client.track("u1", "login", message_id=f"m{n}")
        assert client.track("u1", "login", message_id="m1").duplicate is True
        assert client.track("u1", "login", message_id="m9").duplicate is False
        assert client.scores("u1")["logins"] == 4


def test_two_clients_writing_one_subject_count_every_event(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Two clients (stores of their own: two processes' worth) on one user and account,
    in threads at once: each one's warm cache goes stale whenever the other wrote, the
    checked write finds it and falls back, and every event is counted exactly once."""
    clients = [
        Client(
            MODEL,
            store=PostgresStore(postgres_dsn, schema=pg_schema),
            clock=FrozenClock(T0),
            dispatch="inline",
        )
        for _ in range(2)
    ]
    per_client = 60
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            for n in range(per_client):
                clients[index].track("u1", "login", account_id="acme", message_id=f"c{index}-{n}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        for client in clients:
            assert client.scores("u1")["logins"] == 2 * per_client
            assert client.scores("acme", of="account")["logins"] == 2 * per_client
        # and each stays right when it goes on (its cache was found stale, or is current)
        clients[0].track("u1", "login", account_id="acme", message_id="last0")
        clients[1].track("u1", "login", account_id="acme", message_id="last1")
        assert clients[0].scores("u1")["logins"] == 2 * per_client + 2
    finally:
        for client in clients:
            client.close()


def test_alternating_clients_fall_back_and_count_exactly(
    postgres_dsn: str, pg_schema: str, proxy: CountingProxy
) -> None:
    """Clients taking turns on one subject: each write finds the other's change (the
    row's version) and runs again cold, so nothing is lost; a turn costs more round
    trips than a warm write, never a wrong count."""
    dsn = proxied(postgres_dsn, proxy)
    first, second = (
        Client(
            MODEL,
            store=PostgresStore(dsn, schema=pg_schema, max_size=1),
            clock=FrozenClock(T0),
            dispatch="inline",
        )
        for _ in range(2)
    )
    with first, second:
        for n in range(3):
            first.track("u1", "login", message_id=f"f{n}")
            second.track("u1", "login", message_id=f"s{n}")
        stale = round_trips(
            proxy,
            10,
            lambda n: (first if n % 2 else second).track("u1", "login", message_id=f"t{n}"),
        )
        assert stale > 1.0  # the fallback is taken (and counted)
        assert first.scores("u1")["logins"] == 16
        assert second.scores("u1")["logins"] == 16


@pytest.fixture(name="pair")
def fixture_pair(postgres_dsn: str, pg_schema: str) -> Iterator[tuple[Client, Client]]:
    """Two clients with stores of their own on one schema (two processes' worth)."""
    made = [
        Client(
            MODEL,
            store=PostgresStore(postgres_dsn, schema=pg_schema),
            clock=FrozenClock(T0),
            dispatch="inline",
        )
        for _ in range(2)
    ]
    yield made[0], made[1]
    for client in made:
        client.close()


def warm_up(client: Client, user: str) -> None:
    for n in range(3):
        client.track(user, "login", message_id=f"warm-{user}-{n}")


def test_a_stale_client_honours_another_clients_alias(pair: tuple[Client, Client]) -> None:
    """A client that kept "anon" warm tracks it after another client aliased it to a
    user: the event is the user's (the generation changed: the warm write fell back)."""
    stale, other = pair
    warm_up(stale, "anon")
    other.track("u2", "login", message_id="u2-0")
    other.alias("anon", "u2")
    stale.track("anon", "login", message_id="after-alias")
    assert other.scores("u2")["logins"] == 5  # anon's 3, u2's 1, and the new one
    assert stale.scores("u2")["logins"] == 5


def test_a_stale_client_honours_another_clients_forget_and_suppression(
    pair: tuple[Client, Client],
) -> None:
    """Forgotten with suppress=True by another client: the stale client's next track()
    of the user is dropped, not written from its warm state."""
    stale, other = pair
    warm_up(stale, "u1")
    other.forget("u1", suppress=True)
    assert stale.track("u1", "login", message_id="after-forget").suppressed is True
    assert other.scores("u1")["logins"] == 0
    assert other.stats().suppressed == 1


def test_a_stale_client_starts_over_after_another_clients_forget(
    pair: tuple[Client, Client],
) -> None:
    """Forgotten (no suppression) by another client: the stale client's next event starts
    the user over, from nothing, instead of writing back its warm count."""
    stale, other = pair
    warm_up(stale, "u1")
    other.forget("u1")
    stale.track("u1", "login", message_id="after-forget")
    assert stale.scores("u1")["logins"] == 1
    assert other.scores("u1")["logins"] == 1


def test_a_stale_client_sees_another_clients_traits(pair: tuple[Client, Client]) -> None:
    """Traits set by another client (identify) reach the stale client's next evaluation."""
    stale, other = pair
    fired: list[Qualification] = []
    stale.on("pql", fired.append)
    warm_up(stale, "u1")
    other.identify("u1", {"plan": "pro"})
    stale.track("u1", "dashboard_built", message_id="after-identify")
    stale.flush()
    assert [q.subject_id for q in fired] == ["u1"]
    assert fired[0].context["user_traits"] == {"plan": "pro"}


def test_joined_track_keeps_todays_path(
    postgres_dsn: str, pg_schema: str, proxy: CountingProxy
) -> None:
    """track(connection=) runs inside the caller's transaction, statement by statement
    (as documented in docs/deployment.md): more round trips than a warm track()."""
    store = PostgresStore(proxied(postgres_dsn, proxy), schema=pg_schema, max_size=1)
    with (
        Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline") as client,
        psycopg.connect(proxied(postgres_dsn, proxy)) as conn,
    ):
        warm_up(client, "u1")
        joined = round_trips(
            proxy, 5, lambda n: client.track("u1", "login", message_id=f"j{n}", connection=conn)
        )
        conn.commit()
        assert joined > 2
        assert client.scores("u1")["logins"] == 8


def test_rows_from_before_versions_are_written_checked(postgres_dsn: str, pg_schema: str) -> None:
    """States stored before schema version 6 have version 0 (the migration's default): a
    warm Client loads, checks and rewrites them like any other (each write a new version)."""
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    with Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline") as client:
        client.track("u1", "login", account_id="acme", message_id="old")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("UPDATE {} SET version = 0").format(
                psycopg.sql.Identifier(pg_schema, "states")
            )
        )
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    with Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline") as client:
        for n in range(5):  # cold (reads version 0), then warm (checks it, then its own)
            client.track("u1", "login", account_id="acme", message_id=f"new{n}")
        assert client.scores("u1")["logins"] == 6
        assert client.scores("acme", of="account")["logins"] == 6
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        versions = conn.execute(
            psycopg.sql.SQL("SELECT version FROM {}").format(
                psycopg.sql.Identifier(pg_schema, "states")
            )
        ).fetchall()
    assert len(versions) == 2
    assert all(v != 0 for (v,) in versions)


def test_many_stale_batches_in_a_row_leave_the_connection_usable(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Two clients taking turns on one user and account 40 times: every batch fails its
    check at commit, past psycopg's prepare threshold, and each connection stays usable
    (a statement psycopg prepared in a failed pipeline is forgotten with it, not run
    later by a name the server never kept)."""
    clients = [
        Client(
            MODEL,
            store=PostgresStore(postgres_dsn, schema=pg_schema, max_size=1),
            clock=FrozenClock(T0),
            dispatch="inline",
        )
        for _ in range(2)
    ]
    try:
        for n in range(40):
            clients[n % 2].track("u1", "login", account_id="acme", message_id=f"t{n}")
            clients[n % 2].track("u2", "login", message_id=f"v{n}")  # a warm one between
        for client in clients:
            assert client.scores("u1")["logins"] == 40
            assert client.scores("acme", of="account")["logins"] == 40
            assert client.scores("u2")["logins"] == 40
    finally:
        for client in clients:
            client.close()

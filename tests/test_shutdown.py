"""The exit hook: a client left open is flushed and closed when its process exits, bounded.

Each test runs a small script (``CHILD``) in a subprocess on an SQLite file: it
tracks an event that fires, registers a callback that writes a file, and exits
without ``close()``. The tests then read the files and the store.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from pqlkit import (
    Client,
    ClientClosedError,
    MemoryStore,
    Model,
    SQLiteStore,
    ValidationError,
    _shutdown,
    did,
)

CHILD = r'''
"""python child.py MODE DB OUT FLUSH_AT_EXIT (seconds, or "off")."""
import os
import sys
import time
from datetime import timedelta

from pqlkit import Client, Model, did

mode, db, out, wait = sys.argv[1:5]
flush_at_exit = None if wait == "off" else timedelta(seconds=float(wait))


def write(name, text=""):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)


def slow_sink(q):  # long enough that an exit that does not wait kills it first
    time.sleep(0.5)
    write("delivered", f"{os.getpid()} {q.subject_id}")


def hung_sink(q):
    write("started")
    time.sleep(600)


def sink(q):
    write("delivered", f"{os.getpid()} {q.subject_id}")


model = Model("exit", pql=did("signup"))
lease = timedelta(seconds=1)
if mode == "deliver":  # the next process: the same callback name, after the lease
    client = Client(model, store=f"sqlite:///{db}", delivery_lease=lease)
    client.on_pql(sink, name="sink")
    time.sleep(lease.total_seconds() + 0.5)
    left = client.flush(timeout=10)
    client.close()
    print("left", left)
elif mode == "fork":  # inline, nothing delivered by track(): the exit delivers it
    client = Client(
        model,
        store=f"sqlite:///{db}",
        inline_budget=timedelta(0),
        flush_at_exit=flush_at_exit,
    )
    client.on_pql(sink, name="sink")
    client.track("u1", "signup")
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a normal exit: the child's atexit hooks run
    os.waitpid(pid, 0)
    assert not os.path.exists(os.path.join(out, "delivered")), "the child delivered"
else:
    client = Client(
        model,
        store=f"sqlite:///{db}",
        dispatch="background",
        delivery_lease=lease,
        flush_at_exit=flush_at_exit,
    )
    client.on_pql(hung_sink if mode == "hang" else slow_sink, name="sink")
    client.track("u1", "signup")
    if mode == "closed":
        client.close()
print("exiting", os.getpid(), flush=True)
'''


Run = Callable[..., tuple["subprocess.CompletedProcess[str]", float]]


def _threads_start_at_exit() -> bool:
    """Whether an atexit hook may start a thread here (CPython 3.12 refuses: RuntimeError)."""
    probe = (
        "import atexit, threading\n"
        "def hook():\n"
        "    t = threading.Thread(target=print, args=('started',)); t.start(); t.join()\n"
        "atexit.register(hook)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.strip() == "started"


THREADS_AT_EXIT = _threads_start_at_exit()


@pytest.fixture(name="run")
def fixture_run(tmp_path: Path) -> Run:
    """run(mode, flush_at_exit="5") -> (the finished process, seconds it took)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def run(mode: str, wait: str = "5") -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path / "pql.db"), str(tmp_path), wait],
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        return done, took

    return run


def _pid(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.split("exiting")[-1].split()[0]


def _statuses(db: Path) -> list[tuple[str | None, str, int]]:
    client = Client(Model("exit", pql=did("signup")), store=SQLiteStore(db), flush_at_exit=None)
    try:
        return [(d.callback, d.status, d.attempts) for d in client.deliveries()]
    finally:
        client.close()
        client.store.close()


def test_exit_flushes_an_open_client(run: Run, tmp_path: Path) -> None:
    """A process that tracks with background dispatch and exits without close() delivers first."""
    done, _ = run("exit", "5")
    delivered = tmp_path / "delivered"
    assert delivered.exists(), done.stderr
    assert delivered.read_text() == f"{_pid(done)} u1"
    assert _statuses(tmp_path / "pql.db") == [("sink", "delivered", 1)]


def test_switched_off_the_delivery_stays_pending_for_the_next_process(
    run: Run, tmp_path: Path
) -> None:
    """flush_at_exit=None: the exit does not wait; the next process delivers from the outbox."""
    run("exit", "off")
    assert not (tmp_path / "delivered").exists()
    assert [s for _, s, _ in _statuses(tmp_path / "pql.db")] == ["pending"]
    done, _ = run("deliver")
    assert "left 0" in done.stdout
    assert (tmp_path / "delivered").read_text() == f"{_pid(done)} u1"
    assert [s for _, s, _ in _statuses(tmp_path / "pql.db")] == ["delivered"]


def test_zero_turns_the_hook_off_too(run: Run, tmp_path: Path) -> None:
    """flush_at_exit=timedelta(0) is off, as None is."""
    run("exit", "0")
    assert not (tmp_path / "delivered").exists()


def test_a_hung_callback_does_not_hold_the_exit(run: Run, tmp_path: Path) -> None:
    """A callback that never returns: the process exits about flush_at_exit after it ends."""
    done, took = run("hang", "1")
    assert (tmp_path / "started").exists()  # the exit hook waited on a running callback
    # 1 s of flush_at_exit (+ up to 1 s to close the store) and the interpreter's start;
    # without the bound the callback's sleep would hold it for 600 s
    assert took < 12, took
    assert "did not wait for a callback still running after 1.0 s" in done.stderr
    assert [s for _, s, _ in _statuses(tmp_path / "pql.db")] == ["pending"]


def test_a_client_closed_already_is_left_alone(run: Run, tmp_path: Path) -> None:
    """close() then exit: the hook has nothing to do, and says nothing."""
    done, _ = run("closed", "5")
    assert (tmp_path / "delivered").exists()  # close() delivered it
    assert done.stderr == ""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_flush_its_parents_client(run: Run, tmp_path: Path) -> None:
    """The child exits normally without delivering; the parent's exit delivers."""
    done, _ = run("fork", "5")
    assert (tmp_path / "delivered").read_text() == f"{_pid(done)} u1"


def test_the_exit_runs_on_a_standby_thread_where_python_needs_one() -> None:
    """CPython 3.12 refuses new threads in atexit hooks: there the exit's work runs on a
    thread started with the first client (the tests above then pass on 3.12 too)."""
    assert _shutdown.STANDBY == (sys.version_info[:2] == (3, 12)) == (not THREADS_AT_EXIT)


def test_the_exit_hook_holds_no_reference() -> None:
    """A client dropped without close() is collected: the exit hook does not keep it alive."""
    client = Client(Model("exit", pql=did("signup")), store="memory://")
    ref = weakref.ref(client)
    with pytest.warns(ResourceWarning, match="never closed"):
        del client  # the last strong reference
    gc.collect()
    assert ref() is None


def test_flush_at_exit_is_checked() -> None:
    """A negative or non-timedelta flush_at_exit is refused, naming it."""
    for bad in (timedelta(seconds=-1), 5, "5s"):
        with pytest.raises(ValidationError) as caught:
            Client(Model("exit"), store="memory://", flush_at_exit=bad)  # type: ignore[arg-type]
        assert caught.value.field == "flush_at_exit"


def test_close_all_closes_what_is_open_within_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    """The hook itself, in this process: a hung callback is left behind after the bound."""
    release = threading.Event()
    client = Client(
        Model("exit", pql=did("signup")),
        store="memory://",
        dispatch="background",
        flush_at_exit=timedelta(seconds=0.2),
    )
    client.on_pql(lambda q: release.wait(10), name="hung")
    closed = Client(Model("exit"), store="memory://")
    closed.close()
    client.track("u1", "signup")
    started = time.monotonic()
    try:
        _shutdown.close_all()
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 0.2 + _shutdown.GRACE + 0.5, took
    with pytest.raises(ClientClosedError):
        client.track("u2", "signup")
    assert "did not wait for a callback still running" in caplog.text


def test_a_standby_thread_woken_once_does_not_close_later_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the exit's work runs on a standby thread (CPython 3.12), close_all() called before
    the exit (as a test does) closes what is open then, and a client built after it stays open:
    the next standby thread waits for the next close_all()."""
    monkeypatch.setattr(_shutdown, "STANDBY", True)
    monkeypatch.setattr(_shutdown, "_standby", None)
    model = Model("standby", pql=did("signup"))
    first = Client(model, store=MemoryStore(), flush_at_exit=timedelta(seconds=1))
    _shutdown.close_all()
    with pytest.raises(ClientClosedError):
        first.track("u1", "signup")
    second = Client(model, store=MemoryStore(), flush_at_exit=timedelta(seconds=1))
    time.sleep(0.2)  # a standby thread woken at once would have closed it by now
    assert second.track("u1", "signup").qualified
    second.close()

"""Crash safety: processes SIGKILLed mid-run lose no committed event and no delivery.

Each test runs small scripts (``CHILD`` below) in subprocesses on one SQLite file
and kills them with SIGKILL at chosen or random moments. Callbacks log
``begin``/``end`` lines to a file opened with O_APPEND, one ``os.write`` per
line, so lines are whole even when a process dies between two of them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from pqlkit import SQLiteStore
from pqlkit.stores._base import QualificationRecord

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

CHILD = r'''
"""A pqlkit process for the crash tests: python child.py MODE DB LOG [RUN]."""
import os
import sys
import time
from datetime import timedelta

from pqlkit import Client, Model, SQLiteStore, count, signal

mode, db, log = sys.argv[1], sys.argv[2], sys.argv[3]
run = sys.argv[4] if len(sys.argv) > 4 else "-"
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def line(*words):
    os.write(fd, (" ".join([run, *words]) + "\n").encode())


MODEL = Model(
    "crash",
    signals={"engaged": count("step") >= 3},
    pql=signal("engaged"),
)
LEASE = timedelta(seconds=1)
dispatch = "background" if mode == "block-background" else "inline"
store = SQLiteStore(db)
client = Client(MODEL, store=store, dispatch=dispatch, delivery_lease=LEASE)


def blocking(q):
    line("begin", q.id, q.subject_id)
    time.sleep(3600)  # SIGKILLed in here
    line("end", q.id, q.subject_id)


def quick(q):
    line("begin", q.id, q.subject_id)
    time.sleep(0.005)
    line("end", q.id, q.subject_id)


# one callback name in every process, as a restarted app registers its callbacks again
if mode.startswith("block"):
    client.on_pql(blocking, name="sink")
    for step in range(3):
        client.track("u1", "step", message_id=f"m-{step}")
        line("returned", f"m-{step}")
    time.sleep(3600)
elif mode == "run":
    client.on_pql(quick, name="sink")
    line("ready")
    for i in range(100_000):
        message_id = f"{run}-m{i}"
        client.track(f"{run}-u{i // 3}", "step", message_id=message_id)
        line("returned", message_id)
elif mode == "deliver":
    client.on_pql(quick, name="sink")
    time.sleep(LEASE.total_seconds() + 0.5)  # past any lease a killed process held
    client.flush()
    line("flushed", str(len(client.pending())), str(len(client.dead_letters())))
    client.close()
    store.close()
'''


@pytest.fixture(name="child")
def fixture_child(tmp_path: Path) -> Path:
    """The child script, written to a file."""
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture(name="processes")
def fixture_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses started by a test; any still running afterwards is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


class Runner:
    def __init__(self, child: Path, db: Path, log: Path, processes: list[subprocess.Popen[bytes]]):
        self.child, self.db, self.log, self.processes = child, db, log, processes

    def start(self, mode: str, run: str = "-") -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, str(self.child), mode, str(self.db), str(self.log), run],
            stdout=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def wait_for(
        self, process: subprocess.Popen[bytes], run: str, *words: str, timeout: float = 60
    ) -> None:
        """Wait until the log has a line of ``run`` starting with ``words``."""
        deadline = time.monotonic() + timeout
        want = [run, *words]
        while not any(line[: len(want)] == want for line in self.lines()):
            assert process.poll() is None, f"child exited with {process.returncode}"
            assert time.monotonic() < deadline, f"timed out waiting for {words}"
            time.sleep(0.01)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    def deliver(self) -> None:
        """A fresh process that waits past the lease, flushes and exits cleanly."""
        process = self.start("deliver", "final")
        assert process.wait(timeout=60) == 0
        flushed = [line for line in self.lines() if line[:2] == ["final", "flushed"]]
        assert flushed == [["final", "flushed", "0", "0"]]  # nothing pending, nothing dead


@pytest.fixture(name="runner")
def fixture_runner(child: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> Runner:
    return Runner(child, tmp_path / "pql.db", tmp_path / "log.txt", processes)


def stored(db: Path) -> tuple[set[str], list[QualificationRecord]]:
    """The message ids and the qualification records in the database."""
    with SQLiteStore(db) as store, store.transaction() as tx:
        return {e.message_id for e in tx.events()}, list(tx.qualifications("crash"))


@pytest.mark.parametrize("dispatch", ["inline", "background"])
def test_killed_mid_callback_is_delivered_once_after_restart(runner: Runner, dispatch: str) -> None:
    """Killed after the commit, before the callback finished: a restart delivers it once."""
    process = runner.start("block" if dispatch == "inline" else "block-background")
    runner.wait_for(process, "-", "begin")
    runner.kill(process)
    messages, records = stored(runner.db)
    assert messages == {"m-0", "m-1", "m-2"}  # the qualifying event was committed
    (record,) = records
    runner.deliver()
    lines = runner.lines()
    assert [w[1:] for w in lines if w[1] in ("begin", "end")] == [
        ["begin", record.id, "u1"],  # the killed attempt
        ["begin", record.id, "u1"],  # the redelivery: the same stable id
        ["end", record.id, "u1"],
    ]
    assert Counter(w[2] for w in lines if w[1] == "end") == {record.id: 1}


def test_random_kills_lose_nothing(runner: Runner) -> None:
    """Five runs of tracks, each SIGKILLed at a random moment, then a clean restart.

    No event that track() returned for is lost; every qualification is delivered,
    under one stable id; an id is delivered more than once only when a kill
    interrupted its delivery.
    """
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    runs = [f"r{k}" for k in range(5)]
    for run in runs:
        process = runner.start("run", run)
        runner.wait_for(process, run, "ready")
        time.sleep(rng.uniform(0.05, 0.5))
        if process.poll() is None:
            runner.kill(process)
    runner.deliver()

    lines = runner.lines()
    messages, records = stored(runner.db)
    returned = {w[2] for w in lines if w[1] == "returned"}
    assert returned, f"seed {seed}: no track() returned before the kills"
    assert returned <= messages, f"seed {seed}: lost {sorted(returned - messages)[:5]}"

    # one qualification per user with 3 stored events, under one id
    steps = Counter(m.split("-m")[0] + "-u" + str(int(m.split("-m")[1]) // 3) for m in messages)
    qualified = {subject for subject, n in steps.items() if n >= 3}
    by_subject = {r.subject_id: r.id for r in records}
    assert set(by_subject) == qualified, f"seed {seed}"
    assert len(records) == len(by_subject), f"seed {seed}: a subject qualified twice"

    # every qualification delivered, always under its record's id
    ended = Counter(w[2] for w in lines if w[1] == "end")
    assert set(ended) == set(by_subject.values()), f"seed {seed}"
    for w in lines:
        if w[1] in ("begin", "end"):
            assert by_subject[w[3]] == w[2], f"seed {seed}: {w}"

    # extra deliveries only where a kill interrupted one: its run's last callback line
    interrupted: Counter[str] = Counter()
    per_run: dict[str, list[list[str]]] = defaultdict(list)
    for w in lines:
        per_run[w[0]].append(w)
    for run in runs:
        tail = [w for w in per_run[run] if w[1] in ("begin", "end", "returned")]
        if tail and tail[-1][1] in ("begin", "end"):
            interrupted[tail[-1][2]] += 1  # killed in (or right after) this callback
    begun = Counter(w[2] for w in lines if w[1] == "begin")
    for qid, n in begun.items():
        assert n <= 1 + interrupted[qid], f"seed {seed}: {qid} delivered {n} times"

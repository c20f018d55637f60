"""pqlkit._process: a forked child's own process id and locks."""

from __future__ import annotations

import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable

import pytest

from pqlkit import _process

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def fork() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may..."
        return os.fork()


def exit_after(child: Callable[[], None]) -> None:  # pragma: no cover - the child
    """In a forked child: run ``child`` and exit, 0 if it returned."""
    status = 1
    try:
        child()
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def exit_code(pid: int) -> int:
    """The forked child's exit code, or -1 if it did not exit within 30 s (it is killed)."""
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return -1
    return os.waitstatus_to_exitcode(done[1])


def take(lock: _process.Lock) -> None:
    assert os.getpid() == _process.pid
    with lock:
        pass


def test_a_lock_another_thread_held_at_fork_is_free_in_the_child() -> None:
    lock = _process.Lock()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        exit_after(lambda: take(lock))
    release.set()
    holder.join()
    assert exit_code(pid) == 0


def test_a_lock_the_forking_thread_held_is_released_by_it_in_the_child() -> None:
    """Forked inside ``with lock``: the child leaves the block too (releasing the lock
    it held, not its new one) and can take the lock again."""
    lock = _process.Lock()
    with lock:
        pid = fork()
    if pid == 0:  # pragma: no cover - the child
        exit_after(lambda: take(lock))
    assert exit_code(pid) == 0
    take(lock)

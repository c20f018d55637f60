"""The one backoff every retry loop uses: how long it waits, and when it gives up."""

from __future__ import annotations

import time

import pytest

from pqlkit import _retry


@pytest.fixture(name="slept")
def fixture_slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays pause() asked for, instead of sleeping them (jitter fixed at 1)."""
    delays: list[float] = []
    monkeypatch.setattr(_retry.time, "sleep", delays.append)
    monkeypatch.setattr(_retry.random, "uniform", lambda a, b: 1.0)
    return delays


def test_delays_double_from_first_up_to_the_cap(slept: list[float]) -> None:
    """first * 2**(failed - 1), capped."""
    for failed in range(1, 6):
        assert _retry.pause(failed, first=0.01, cap=0.05)
    assert slept == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_gives_up_after_the_attempts(slept: list[float]) -> None:
    """With attempts=3: waits after the first and second failure, gives up after the third."""
    assert [_retry.pause(n, first=0.01, attempts=3) for n in (1, 2, 3)] == [True, True, False]
    assert slept == [0.01, 0.02]


def test_never_waits_past_the_deadline(slept: list[float]) -> None:
    """The wait is cut to what is left before the deadline; past it, pause() gives up."""
    soon = time.monotonic() + 0.5
    assert _retry.pause(10, first=1.0, deadline=soon)
    assert 0 < slept[0] <= 0.5
    assert not _retry.pause(1, first=0.001, deadline=time.monotonic() - 1)
    assert len(slept) == 1


def test_jitter_stays_within_half_and_one_and_a_half() -> None:
    """Real jitter: each wait is within [0.5, 1.5) of the nominal one."""
    for _ in range(20):
        began = time.monotonic()
        assert _retry.pause(1, first=0.002)
        assert 0.001 <= time.monotonic() - began < 0.05

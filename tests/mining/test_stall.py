"""The stall judgement for silent local workers, and the worker's batch sizing under CPU starvation, alone."""
from __future__ import annotations

import psutil
import pytest

from mining.stall import (
    ALIVE,
    CANNOT_RUN,
    HUNG,
    RUNNABLE,
    SPIN_CPU_SECONDS,
    STARVED,
    STARVED_LIMIT,
    STARVED_TOO_LONG,
    judge_silence,
)
from mining.worker import BATCH, BATCH_SECONDS, MAX_NATIVE_BATCH, REPORT_INTERVAL, STARVED_BATCH, next_batch_size

TIMEOUT = 10.0


def test_status_names_are_psutils():
    assert CANNOT_RUN == {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}
    assert RUNNABLE == {psutil.STATUS_RUNNING, psutil.STATUS_DISK_SLEEP, psutil.STATUS_WAKING}


@pytest.mark.parametrize("status", [None, "running", "stopped", "sleeping"])
def test_nothing_is_judged_before_the_timeout(status):
    verdict = judge_silence(TIMEOUT, TIMEOUT, status, 50.0)
    assert verdict.kind == ALIVE and not verdict.replace


@pytest.mark.parametrize("status", sorted(CANNOT_RUN))
def test_a_process_that_cannot_run_is_hung_at_the_timeout(status):
    verdict = judge_silence(TIMEOUT + 0.1, TIMEOUT, status, 0.0)
    assert verdict.kind == HUNG and verdict.replace
    assert status in verdict.reason


@pytest.mark.parametrize("status", ["sleeping", "idle", "parked", "waiting"])
def test_a_worker_with_work_that_blocks_is_hung(status):
    """It is not waiting for CPU: starvation can't explain its silence."""
    verdict = judge_silence(TIMEOUT + 0.1, TIMEOUT, status, 0.0)
    assert verdict.kind == HUNG and "blocked" in verdict.reason


@pytest.mark.parametrize("status", sorted(RUNNABLE))
def test_a_runnable_worker_given_almost_no_cpu_is_starved_not_hung(status):
    for silent in (TIMEOUT + 0.1, 60.0, STARVED_LIMIT):
        for used in (None, 0.0, 0.004, SPIN_CPU_SECONDS - 0.01):
            verdict = judge_silence(silent, TIMEOUT, status, used)
            assert verdict.kind == STARVED and not verdict.replace, (silent, used)
            assert "starved" in verdict.reason


def test_a_runnable_worker_that_burned_cpu_without_a_report_is_spinning():
    verdict = judge_silence(TIMEOUT + 1.5, TIMEOUT, "running", SPIN_CPU_SECONDS)
    assert verdict.kind == HUNG and "spinning" in verdict.reason
    assert judge_silence(TIMEOUT + 1.5, TIMEOUT, "running", 7.0, spin_cpu=5.0).kind == HUNG
    assert judge_silence(TIMEOUT + 1.5, TIMEOUT, "running", 4.9, spin_cpu=5.0).kind == STARVED


def test_starvation_is_waited_out_only_so_long():
    verdict = judge_silence(STARVED_LIMIT + 0.1, TIMEOUT, "running", 0.01)
    assert verdict.kind == STARVED_TOO_LONG and verdict.replace
    assert f"longer than {STARVED_LIMIT:.0f}s" in verdict.reason
    assert judge_silence(31.0, TIMEOUT, "running", 0.01, starved_limit=30.0).kind == STARVED_TOO_LONG
    assert judge_silence(29.0, TIMEOUT, "running", 0.01, starved_limit=30.0).kind == STARVED


def test_an_unreadable_process_falls_back_to_silence_alone():
    assert judge_silence(TIMEOUT + 0.1, TIMEOUT, None, None).kind == HUNG
    assert judge_silence(TIMEOUT - 0.1, TIMEOUT, None, None).kind == ALIVE


def test_negative_cpu_readings_count_as_none_used():
    assert judge_silence(TIMEOUT + 1, TIMEOUT, "running", -3.0).kind == STARVED


# ---------------------------------------------------------------- batch sizing (mining/worker.py)

def test_batches_grow_at_most_2x_towards_the_target_when_the_worker_runs():
    assert next_batch_size(BATCH, BATCH_SECONDS / 100, BATCH_SECONDS / 100, starved=False) == 2 * BATCH
    assert next_batch_size(8 * BATCH, BATCH_SECONDS, BATCH_SECONDS, starved=False) == 8 * BATCH
    assert next_batch_size(8 * BATCH, 2 * BATCH_SECONDS, 2 * BATCH_SECONDS, starved=False) == 4 * BATCH
    assert next_batch_size(MAX_NATIVE_BATCH, 1e-6, 1e-6, starved=False) == MAX_NATIVE_BATCH
    assert next_batch_size(BATCH, 1.0, 1.0, starved=False) == BATCH  # never below one outer value
    assert next_batch_size(3 * BATCH, 0.0, 0.0, starved=False) == 3 * BATCH


def test_a_batch_that_lost_the_cpu_drops_to_the_starved_size():
    """Waiting longer than a report interval for the CPU mid-batch: the worker is starved."""
    assert STARVED_BATCH <= BATCH
    assert next_batch_size(16 * BATCH, REPORT_INTERVAL + 0.01, 0.0, starved=False) == STARVED_BATCH
    assert next_batch_size(16 * BATCH, REPORT_INTERVAL / 2, 0.0, starved=False) == BATCH  # preempted, not starved


def test_a_starved_worker_does_not_grow_its_batches_even_after_a_quick_one():
    """One batch that ran through (a lucky turn) must not grow the next past what one turn gives:
    that next batch would need several turns, seconds apart, before the worker can report."""
    assert next_batch_size(STARVED_BATCH, BATCH_SECONDS / 100, BATCH_SECONDS / 100, starved=True) == STARVED_BATCH
    assert next_batch_size(4 * BATCH, BATCH_SECONDS / 100, BATCH_SECONDS / 100, starved=True) == STARVED_BATCH


class _DescheduledOnce:
    """A fake native kernel: its first batch waits off the CPU (as a throttled worker does), the rest are instant."""

    name = "fake-native"

    def __init__(self, wait) -> None:
        self.wait = wait
        self.calls = 0

    def searcher(self, data, difficulty):
        def search(start, count):
            self.calls += 1
            if self.calls == 1:
                self.wait.wait(REPORT_INTERVAL * 2)  # blocked, off the CPU: wall time passes, CPU time doesn't
            return count, None
        return search


def test_search_holds_batches_at_the_minimum_after_losing_the_cpu(monkeypatch):
    import threading

    from mining.worker import BatchPacer, Search

    never = threading.Event()
    pacer = BatchPacer()  # one per worker process
    monkeypatch.setattr("mining.worker.STARVED_HOLD", 1e9)  # the hold outlasts the test, however slow the machine
    search = Search(1, b"p" * 80, 64, "0-ab", _DescheduledOnce(never), pacer)
    first = search.batch_size
    assert first > BATCH
    search.batch()
    assert search.batch_size == STARVED_BATCH
    for _ in range(5):
        search.batch()  # instant batches: they would double the size each time
        assert search.batch_size == STARVED_BATCH

    # New work (every 2 s) must not start a starved worker over at a big batch: the pacer carries over.
    search = Search(2, b"q" * 80, 64, "0-ab", search.kernel, pacer)
    search.batch()
    assert search.batch_size == STARVED_BATCH

    monkeypatch.setattr("mining.worker.STARVED_HOLD", 0.0)  # the hold over: quick batches grow again
    for _ in range(1000):  # (a batch the busy machine preempted for over a millisecond doesn't grow)
        search.batch()
        if search.batch_size > BATCH:
            break
    assert search.batch_size == 2 * BATCH  # (from STARVED_BATCH: first back to BATCH, then doubling)

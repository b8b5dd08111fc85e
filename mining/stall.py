"""Is a silent local miner worker hung, or only starved of CPU? The judgement, kept pure.

A worker with work reports its hash count every 0.1 s of *wall* time, but only
between batches, and only when it runs. Silence alone therefore says little: under
a CPU quota far below one core (a cgroup shared by many workers), on an
overcommitted machine, or while a freshly spawned interpreter is still importing
at a tiny CPU share, a healthy worker can go tens of seconds without a report, and
replacing it only makes things worse (the new one starts from scratch at the same
share, and is silent even longer). Busy is not hung: a worker is judged hung on
evidence, which the MinerActor gathers (with psutil, only once silence has passed
the timeout) and passes in here:

* its scheduler state: stopped or traced (SIGSTOP, a debugger), zombie or dead can
  never report again: hung. Sleeping (blocked) is hung too: a worker with work
  never waits for anything (it polls its inbox, and its reports are small pipe
  writes), and a task that waits is not one that is waiting for CPU. Running (which
  includes runnable but not scheduled, and throttled by a CPU quota) is "runnable":
  it may just not be given CPU; so is a brief uninterruptible sleep (paging in under
  memory pressure), which is the kernel's doing, not a hang of the worker's own.
* the CPU it used while watched (since silence passed the timeout): a runnable
  worker that burned SPIN_CPU_SECONDS of CPU without a single report is spinning
  outside the hash loop (the loop reports after every batch of a few ms of CPU
  once 0.1 s has passed): hung. One that used less is starved, and is left alone.
* how long it has been silent: a starved worker is still replaced after
  STARVED_LIMIT seconds of silence, so a hang that looks like starvation (a loop
  that also gets almost no CPU) is bounded; the caller logs that replacement as
  what it is.

If the worker could not be probed at all (no access to the process), wall-clock
silence is all there is, and it decides as before.

No clocks and no psutil in here: the caller measures and passes the values, so the
rule is tested alone. Status strings are psutil's.
"""
from __future__ import annotations

from dataclasses import dataclass

SPIN_CPU_SECONDS = 1.0  # CPU a worker may burn without a report before it counts as spinning (a healthy one: ~0.1 s)
STARVED_LIMIT = 300.0  # seconds of silence after which even a starved worker is replaced

# psutil's status() strings.
CANNOT_RUN = frozenset({"stopped", "tracing-stop", "zombie", "dead"})
RUNNABLE = frozenset({"running", "disk-sleep", "waking"})

ALIVE = "alive"  # not silent for long enough to ask
STARVED = "starved"  # runnable, hardly any CPU: waiting for the CPU, not hung; keep it
HUNG = "hung"  # evidence it will not report again: replace it
STARVED_TOO_LONG = "starved too long"  # starved past STARVED_LIMIT: replace it, as a bound


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # ALIVE, STARVED, HUNG or STARVED_TOO_LONG
    reason: str  # for the log and the WorkerDied message

    @property
    def replace(self) -> bool:
        return self.kind in (HUNG, STARVED_TOO_LONG)


def judge_silence(
    silent: float,
    timeout: float,
    status: str | None,
    cpu_used: float | None,
    spin_cpu: float = SPIN_CPU_SECONDS,
    starved_limit: float = STARVED_LIMIT,
) -> Verdict:
    """Judge a local worker that has work and has not reported for `silent` seconds.

    `status` is the worker process's psutil status (None: it could not be read);
    `cpu_used` the CPU seconds (user + system) it used since silence passed
    `timeout` (None: unknown). See the module docstring for the rule.
    """
    if silent <= timeout:
        return Verdict(ALIVE, f"silent for {silent:.1f}s")
    if status is None:
        return Verdict(HUNG, f"no report for {silent:.1f}s (process state unreadable)")
    if status in CANNOT_RUN:
        return Verdict(HUNG, f"no report for {silent:.1f}s, process {status}")
    if status not in RUNNABLE:
        return Verdict(HUNG, f"no report for {silent:.1f}s, process {status} (blocked, not waiting for CPU)")
    used = 0.0 if cpu_used is None else max(0.0, cpu_used)
    if used >= spin_cpu:
        return Verdict(HUNG, f"no report for {silent:.1f}s while it used {used:.2f}s of CPU (spinning outside the hash loop)")
    if silent > starved_limit:
        return Verdict(STARVED_TOO_LONG, f"no report for {silent:.1f}s, {status} but given only {used:.3f}s of CPU "
                                         f"(starved of CPU for longer than {starved_limit:.0f}s)")
    return Verdict(STARVED, f"no report for {silent:.1f}s, {status} but given only {used:.3f}s of CPU (starved, not hung)")

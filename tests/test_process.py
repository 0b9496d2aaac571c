"""isolation="process": actions in supervised OS processes (trio-parallel workers).

Real processes run here, so time is real: waits are on events and replies, bounded by
``fail_after``; what another process does is observed through the hub's stats.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from actionhub import (
    ActionHub,
    ConfigurationError,
    Job,
    ProcessActionError,
    WorkerProcessDied,
)
from actionhub.testing import EscalationLog
from tests import process_jobs
from tests.polling import wait_until


def worker_processes(parent: int | None = None) -> list[int]:
    """PIDs of the children of ``parent`` (this process) that are multiprocessing workers."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def stat_of(hub: ActionHub, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in hub.stats() if s.addr == name)


def test_process_isolation_is_checked_when_bound() -> None:
    hub = ActionHub()

    async def coroutine(job: Job) -> None: ...

    def local(payload: object) -> None: ...

    with pytest.raises(ConfigurationError, match="plain"):
        hub.bind("a", coroutine, isolation="process")
    with pytest.raises(ConfigurationError, match="module-level"):
        hub.bind("b", local, isolation="process")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="only apply with isolation='process'"):
        hub.bind("c", process_jobs.pid, max_jobs_per_process=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="isolation must be"):
        hub.bind("d", process_jobs.pid, isolation="thread")  # type: ignore[arg-type]


async def test_result_is_the_reply_and_errors_retry_reject_cross_as_data(
    escalations: EscalationLog,
) -> None:
    hub = ActionHub(on_escalation=escalations)
    hub.bind("pid", process_jobs.pid, isolation="process", min_workers=1, max_workers=1)  # type: ignore[arg-type]
    hub.bind("fail", process_jobs.fail, isolation="process", max_attempts=1)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            reply = await hub.request("pid", None, timeout=60)
            await hub.publish("fail", {"x": 1})
            await wait_until(lambda: stat_of(hub, "fail").total_dead_lettered == 1)
    assert isinstance(reply.payload, int) and reply.payload != os.getpid()
    (escalation,) = escalations
    assert isinstance(escalation.error, ProcessActionError)
    assert "ValueError: bad input {'x': 1}" in str(escalation.error)  # the child's traceback


async def test_on_redis_the_result_is_the_reply_too(redis_url: str) -> None:
    hub = ActionHub(redis_url)
    hub.bind("burn", process_jobs.burn, isolation="process", max_workers=2)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            replies = [await hub.request("burn", {"seconds": 0.01}, timeout=30) for _ in range(3)]
            await wait_until(lambda: stat_of(hub, "burn").total_message_processed == 3)  # acked
    assert all(isinstance(reply.payload, int) and reply.payload > 0 for reply in replies)


async def test_a_cpu_bound_action_in_two_processes_does_not_delay_an_echo(
    record_property: pytest.RecordProperty,
) -> None:
    burn_seconds = 1.0
    hub = ActionHub()
    hub.bind("burn", process_jobs.burn, isolation="process", min_workers=2, max_workers=2)  # type: ignore[arg-type]
    latencies: list[float] = []

    @hub.action("echo", max_workers=1)
    async def echo(job: Job) -> None:
        latencies.append(time.perf_counter() - job.payload["sent"])  # type: ignore[index,operator]

    async with hub.running():
        with trio.fail_after(60):
            await wait_until(lambda: stat_of(hub, "burn").processes_alive == 2)
            for _ in range(2):
                await hub.publish("burn", {"seconds": burn_seconds})
            await wait_until(lambda: stat_of(hub, "burn").in_flight == 2, poll=0.01)
            for _ in range(40):  # 0.4 s of echoes while both processes burn
                await hub.publish("echo", {"sent": time.perf_counter()})
                await trio.sleep(0.01)  # the echo's pace, not a wait for anything
            await wait_until(lambda: stat_of(hub, "burn").total_message_processed == 2)
    assert len(latencies) == 40
    worst = max(latencies)
    record_property(
        "echo latency p50 / max (ms)", f"{statistics.median(latencies) * 1e3:.2f} / {worst * 1e3:.2f}"
    )
    # in the hub's own thread each burn would hold every echo for the whole second
    assert worst < burn_seconds / 10


@pytest.mark.parametrize(
    ("how", "says"),
    [("segfault", "killed by SIGSEGV"), ("exit", "exited with code 3"), ("memory", "ran out of memory")],
)
async def test_a_dying_process_is_a_panic_retried_then_dead_lettered_and_replaced(
    how: str, says: str, escalations: EscalationLog
) -> None:
    hub = ActionHub(on_escalation=escalations)
    hub.bind(
        "crash",
        process_jobs.crash,  # type: ignore[arg-type]
        isolation="process",
        min_workers=2,
        max_workers=2,
        max_attempts=2,
        retry_backoff=(0.01, 0.01, 0),
        memory_limit=512 << 20,
    )
    async with hub.running():
        with trio.fail_after(60):
            await hub.publish("crash", {"how": how})
            await wait_until(lambda: stat_of(hub, "crash").total_dead_lettered == 1)
            await wait_until(lambda: stat_of(hub, "crash").processes_alive == 2)
        stat = stat_of(hub, "crash")
        (letter,) = await hub.dead_letters("crash")
    assert [e.reason for e in escalations] == ["panic", "panic"]
    assert all(isinstance(e.error, WorkerProcessDied) and says in str(e.error) for e in escalations)
    assert stat.total_process_deaths == 2 and stat.total_processes_started == 4
    assert "max_attempts" in letter.reason
    assert worker_processes() == []


async def test_processes_that_cannot_start_are_panics_up_to_the_restart_limit(
    escalations: EscalationLog,
) -> None:
    hub = ActionHub(on_escalation=escalations)
    # 1 MiB of address space: the new interpreter fails as soon as its limit applies
    hub.bind("doomed", process_jobs.pid, isolation="process", memory_limit=1 << 20, max_restarts=2)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            await wait_until(lambda: "max_restarts" in escalations.reasons())
    assert escalations.reasons() == ["panic", "panic", "max_restarts"]
    assert all("could not start" in str(e.error) and e.offending_message is None for e in escalations)


async def test_timeout_kills_and_replaces_the_process_and_recycling_after_n_jobs() -> None:
    hub = ActionHub()
    hub.bind("slow", process_jobs.sleep, isolation="process", max_workers=1, timeout=0.5, max_attempts=1)  # type: ignore[arg-type]
    hub.bind("pid", process_jobs.pid, isolation="process", max_workers=1, max_jobs_per_process=2)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            await hub.publish("slow", {"seconds": 30})
            await wait_until(lambda: stat_of(hub, "slow").total_dead_lettered == 1)
            await wait_until(lambda: stat_of(hub, "slow").processes_alive == 1)
            pids = [(await hub.request("pid", None, timeout=30)).payload for _ in range(5)]
        slow, recycled = stat_of(hub, "slow"), stat_of(hub, "pid")
    assert slow.total_timeouts == 1 and slow.total_process_kills == 1 and slow.total_processes_started == 2
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert recycled.total_process_recycles == 2


async def test_a_process_whose_memory_passed_the_bound_is_recycled_after_its_job() -> None:
    hub = ActionHub()
    hub.bind("hog", process_jobs.hog, isolation="process", max_workers=1, max_memory_per_process=150 << 20)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            pids = [(await hub.request("hog", {"mb": mb}, timeout=30)).payload for mb in (1, 1, 200, 1, 1)]
        stat = stat_of(hub, "hog")
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4]
    assert stat.total_process_recycles == 1 and stat.total_process_deaths == 0


async def test_stop_lets_jobs_finish_within_shutdown_timeout_kills_the_rest_and_leaves_no_process() -> None:
    hub = ActionHub()
    hub.bind("short", process_jobs.sleep, isolation="process", shutdown_timeout=3.0)  # type: ignore[arg-type]
    hub.bind("long", process_jobs.sleep, isolation="process", shutdown_timeout=0.5)  # type: ignore[arg-type]
    async with hub.running():
        with trio.fail_after(60):
            await wait_until(lambda: all(s.processes_alive == 1 for s in hub.stats()))
            await hub.publish("short", {"seconds": 1.0})
            await hub.publish("long", {"seconds": 30})
            await wait_until(lambda: all(s.in_flight == 1 for s in hub.stats()), poll=0.01)
            assert len(worker_processes()) == 2
        started = time.perf_counter()
    stopped_in = time.perf_counter() - started
    short, long = stat_of(hub, "short"), stat_of(hub, "long")
    assert short.total_message_processed == 1 and short.total_process_kills == 0
    assert long.total_message_processed == 0 and long.total_process_kills == 1
    assert stopped_in < 10  # the 30 s job did not hold the stop
    assert worker_processes() == []


async def test_busy_worker_processes_do_not_outlive_a_sigkilled_hub() -> None:
    command = [sys.executable, "-m", "tests.process_hub"]
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(partial(trio.run_process, command, stdout=subprocess.PIPE, check=False))
        assert hub.stdout is not None
        with trio.fail_after(60):
            assert (await hub.stdout.receive_some(100)).strip() == b"ready"
        children = worker_processes(hub.pid)
        assert len(children) == 2
        hub.kill()
        with trio.fail_after(10):  # each notices within a second, mid-job
            await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))

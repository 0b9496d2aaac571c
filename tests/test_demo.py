"""The demo (actionhub.demo) really shows what it claims: scale up and down, a restart, an escalation."""

from __future__ import annotations

import pytest
import trio

from actionhub import GroupState
from actionhub.demo import NOTIFICATIONS, ORDERS, RESIZE_JOBS, format_table, main


async def test_demo_shows_scaling_restart_and_escalation(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = await main()
    stats = {s.addr: s for s in summary.stats}

    # (a) resize scaled up under the burst, then back down to min_workers once idle
    samples = summary.worker_samples
    assert samples[0] == summary.min_workers == 1
    assert max(samples) == summary.max_workers == 8
    assert samples[-1] == summary.min_workers
    resize = stats["resize"]
    assert resize.total_message_processed == RESIZE_JOBS
    assert resize.total_created_workers == 8 and resize.total_idled_workers == 7
    assert resize.total_panics == resize.total_restarts == 0

    # (b) charge: each panic replaced its worker; the panicked orders succeeded on their retry
    charge = stats["charge"]
    assert charge.total_panics == charge.total_restarts == charge.total_retried == 3
    assert charge.total_message_processed == len(ORDERS) - 1 + 1  # minus the rejected one, plus the request
    assert charge.total_dead_lettered == charge.total_rejected == 1
    assert charge.total_escalations == 3  # every panic is reported, whatever the behaviour

    # (c) notify hit its restart limit: one escalation with reason max_restarts reached the
    # callback; the group cooled down instead of leaving, came back and sent every notification
    notify = stats["notify"]
    assert notify.total_restarts == 2 and notify.total_panics == 3 and notify.total_escalations == 3
    assert notify.total_message_processed == NOTIFICATIONS and notify.total_retried == 3
    assert notify.state is GroupState.RUNNING and notify.total_current_workers == 1
    (final,) = [e for e in summary.escalations if e.reason != "panic"]
    assert final.group == "notify" and final.reason == "max_restarts"
    assert isinstance(final.error, OSError) and final.cool_down_until is not None
    assert final.pending_messages == ()  # in-process, the unstarted messages stay in the buffer
    panics = [e for e in summary.escalations if e.reason == "panic"]
    assert sorted(e.group for e in panics) == ["charge"] * 3 + ["notify"] * 2

    # (d) the dead letters: the rejected order only
    assert summary.dead_letters == 1
    assert summary.seconds < 10

    out = capsys.readouterr().out
    assert "workers  8 ########" in out
    assert "RESTART     charge" in out
    assert "ESCALATION  notify: reason=max_restarts" in out
    assert "the group cools down for 1.5s" in out
    assert "dead letters: 1" in out
    assert format_table(summary.stats) in out


async def test_demo_can_run_twice(autojump_clock: trio.abc.Clock) -> None:
    """main() builds a fresh hub each time, so importing and re-running it is safe."""
    first = await main()
    second = await main()
    assert first.worker_samples[-1] == second.worker_samples[-1] == 1

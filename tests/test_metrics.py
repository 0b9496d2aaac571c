"""Prometheus metrics: every WorkerStat field per group, histograms, scraped over HTTP."""

from __future__ import annotations

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from actionhub import ActionHub, Job, Reject, WorkerStat
from actionhub.metrics import HubMetrics, metric_name, serve_metrics
from tests.polling import wait_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: str, name: str, **labels: str) -> float:
    return samples(scraped).get((name, frozenset(labels.items())), 0.0)


def shop() -> ActionHub:
    hub = ActionHub(name="shop")

    @hub.action("charge", max_attempts=1)
    async def charge(job: Job) -> None:
        if job.payload == "poison":
            raise ValueError("poison")
        if job.payload == "refuse":
            raise Reject("no")

    return hub


async def test_scraped_counters_move_with_the_work() -> None:
    hub = shop()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        url = (await nursery.start(serve_metrics, hub, 0)).replace("0.0.0.0", "127.0.0.1")
        async with httpx.AsyncClient() as http:
            before = (await http.get(url)).text
            labels = {"hub": "shop", "group": "charge", "topic": "charge"}
            assert value(before, "actionhub_messages_processed_total", **labels) == 0
            for payload in ["a", "b", "c", "poison", "refuse"]:
                await hub.publish("charge", payload)
            await wait_until(lambda: hub.group("charge").stats().total_dead_lettered == 2)
            after = (await http.get(url)).text
        await hub.stop()
        nursery.cancel_scope.cancel()
    assert value(after, "actionhub_messages_received_total", **labels) == 5
    assert value(after, "actionhub_messages_processed_total", **labels) == 3
    assert value(after, "actionhub_panics_total", **labels) == 1
    assert value(after, "actionhub_dead_lettered_total", **labels) == 2
    assert value(after, "actionhub_escalations_total", **labels) == 1
    assert value(after, "actionhub_max_workers", **labels) == 10
    assert value(after, "actionhub_current_workers", **labels) >= 1  # a gauge: no _total
    count = "actionhub_action_duration_seconds_count"
    assert value(after, count, hub="shop", group="charge", outcome="ok") == 3
    assert value(after, count, hub="shop", group="charge", outcome="panic") == 1
    assert value(after, count, hub="shop", group="charge", outcome="rejected") == 1
    assert value(after, "actionhub_queue_wait_seconds_count", hub="shop", group="charge") == 5


async def test_every_worker_stat_field_is_exported(autojump_clock: trio.abc.Clock) -> None:
    hub = shop()
    metrics = HubMetrics(hub)
    async with hub.running():
        exported = {family.name for family in metrics.registry.collect()}
    numbers = [
        f.name for f in attrs.fields(WorkerStat) if f.name not in {"addr", "topic", "instance", "behaviour"}
    ]
    for field in numbers:
        assert metric_name(field).removesuffix("_total") in exported, field
    assert {"actionhub_action_duration_seconds", "actionhub_queue_wait_seconds"} <= exported
    assert "actionhub_escalations_callback_errors" in exported


async def test_timeouts_are_their_own_outcome(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(name="slow")
    metrics = HubMetrics(hub)

    @hub.action("nap", timeout=1, max_attempts=1)
    async def nap(job: Job) -> None:
        await trio.sleep(5)

    async with hub.running():
        await hub.publish("nap", None)
        await trio.sleep(2)
    timed_out = metrics.durations.labels("slow", "nap", "timeout")
    assert timed_out._sum.get() == 1.0  # the mock clock: exactly the timeout

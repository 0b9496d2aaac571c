"""Prometheus metrics: every WorkerStat field per group, histograms, scraped over HTTP."""

from __future__ import annotations

import enum
import time
from functools import partial

import attrs
import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from actionhub import (
    ActionHub,
    GroupState,
    Job,
    Message,
    Reject,
    Retry,
    SlaveTemplate,
    WorkerStat,
    WorkerTemplateRegistry,
)
from actionhub.metrics import BUCKETS, HubMetrics, metric_name, serve_metrics
from actionhub.supervision.runner import Outcome
from actionhub.testing import EscalationLog
from tests.polling import wait_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: str, name: str, **labels: str) -> float:
    return samples(scraped).get((name, frozenset(labels.items())), 0.0)


def shop(escalations: EscalationLog | None = None) -> ActionHub:
    hub = ActionHub(name="shop", on_escalation=escalations)

    @hub.action("charge", max_attempts=1)
    async def charge(job: Job) -> None:
        if job.payload == "poison":
            raise ValueError("poison")
        if job.payload == "refuse":
            raise Reject("no")

    return hub


@attrs.frozen
class Seen:
    group: str
    queue_wait: float
    duration: float
    outcome: Outcome


class Recorder:
    """A `MessageObserver` that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
        self.seen.append(Seen(group, queue_wait, duration, outcome))


def settled(stat: WorkerStat) -> bool:
    """Every message of the test run and observed (in_flight drops as the observer is told)."""
    done = stat.total_message_processed + stat.total_dead_lettered
    return done == stat.total_message_received == 5 and stat.in_flight == stat.buffered == 0


async def test_scraped_counters_move_with_the_work(escalations: EscalationLog) -> None:
    hub = shop(escalations)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        url = await nursery.start(partial(serve_metrics, hub, 0, host="127.0.0.1"))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        async with httpx.AsyncClient() as http:
            before = (await http.get(url)).text
            labels = {"hub": "shop", "group": "charge", "topic": "charge"}
            assert value(before, "actionhub_messages_processed_total", **labels) == 0
            for payload in ["a", "b", "c", "poison", "refuse"]:
                await hub.publish("charge", payload)
            await wait_until(lambda: settled(hub.group("charge").stats()) and len(escalations) == 1)
            response = await http.get(url)
        await hub.stop()
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert value(after, "actionhub_messages_received_total", **labels) == 5
    assert value(after, "actionhub_messages_processed_total", **labels) == 3
    assert value(after, "actionhub_panics_total", **labels) == 1
    assert value(after, "actionhub_dead_lettered_total", **labels) == 2
    assert value(after, "actionhub_escalations_total", **labels) == 1
    assert value(after, "actionhub_max_workers", **labels) == 10
    assert value(after, "actionhub_current_workers", **labels) >= 1  # a gauge: no _total
    info = {**labels, "instance": "scaling", "behaviour": "restart_one"}
    assert value(after, "actionhub_group_info", **info) == 1
    assert value(after, "actionhub_escalations_delivered_total", hub="shop") == 1
    count = "actionhub_action_duration_seconds_count"
    assert value(after, count, hub="shop", group="charge", outcome="ok") == 3
    assert value(after, count, hub="shop", group="charge", outcome="panic") == 1
    assert value(after, count, hub="shop", group="charge", outcome="rejected") == 1
    waited = {"hub": "shop", "group": "charge"}
    assert value(after, "actionhub_queue_wait_seconds_count", **waited) == 5
    assert value(after, "actionhub_queue_wait_seconds_bucket", **waited, le="+Inf") == 5
    assert hub.observer is None  # serve_metrics took its observer away when it stopped


async def test_every_worker_stat_field_is_exported_with_its_value(autojump_clock: trio.abc.Clock) -> None:
    hub = shop()
    metrics = HubMetrics(hub)
    types = {family.name: family.type for family in metrics.registry.collect()}
    async with hub.running():
        for payload in ["a", "poison", "refuse"]:
            await hub.publish("charge", payload)
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        (stat,) = hub.stats()
        registry = metrics.registry
        labels = {"hub": "shop", "group": stat.addr, "topic": stat.topic}
        info = {
            f.name: str(getattr(stat, f.name).value)
            for f in attrs.fields(WorkerStat)
            if isinstance(getattr(stat, f.name), enum.Enum) and f.name != "state"
        }
        for field in attrs.fields(WorkerStat):
            current = getattr(stat, field.name)
            if field.name in ("addr", "topic"):
                continue  # the group and topic labels of every series
            if field.name == "state":  # a series per state, 1 for the group's
                for state in GroupState:
                    series = {**labels, "state": state.value}
                    value = registry.get_sample_value("actionhub_group_state", series)
                    assert value == (1 if state is current else 0), state
                continue
            if field.name in ("rate_limit", "concurrency_limit"):  # tests/test_limits.py sets them
                assert current is None
                name = f"actionhub_{field.name}" + ("_per_second" if field.name == "rate_limit" else "")
                assert registry.get_sample_value(name, labels) is None  # a series only with a limit
                assert types[name] == "gauge"
                continue
            if field.name == "cool_down_until":
                assert current is None
                assert registry.get_sample_value("actionhub_cool_down_remaining_seconds", labels) == 0
                continue
            if isinstance(current, enum.Enum):
                assert registry.get_sample_value("actionhub_group_info", {**labels, **info}) == 1, field.name
                continue
            assert isinstance(current, int), f"{field.name}: a field of a new kind, export it"
            name = metric_name(field.name)
            counter = field.name.startswith("total_") and field.name != "total_current_workers"
            assert name.endswith("_total") == counter, field.name
            assert types[name.removesuffix("_total")] == ("counter" if counter else "gauge"), field.name
            assert registry.get_sample_value(name, labels) == current, field.name
    assert stat.total_message_received == 3 and stat.total_dead_lettered == 2  # the values moved
    assert {"actionhub_action_duration_seconds", "actionhub_queue_wait_seconds"} <= set(types)
    assert "actionhub_escalations_callback_errors" in types


async def test_the_observer_sees_each_outcome_and_the_action_time(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(name="outcomes")
    recorder = Recorder()
    hub.observer = recorder
    retried: set[str] = set()

    @hub.action("work", timeout=10, max_attempts=2, shutdown_timeout=4)
    async def work(job: Job) -> None:
        await trio.sleep(job.payload["sleep"])
        what = job.payload["what"]
        if what == "retry" and what not in retried:
            retried.add(what)
            raise Retry(delay=1)
        if what == "reject":
            raise Reject("no")
        if what == "panic":
            raise ValueError("boom")

    async with hub.running():
        for what, sleep in [("ok", 1), ("retry", 2), ("reject", 3), ("panic", 0.5), ("timeout", 60)]:
            await hub.publish("work", {"what": what, "sleep": sleep})
        await trio.sleep(30)
        await hub.publish("work", {"what": "cut short", "sleep": 60})
        await trio.sleep(1)
    seen = sorted((s.outcome, s.duration) for s in recorder.seen)
    assert seen == [
        ("cancelled", pytest.approx(5)),  # 1 s, then stop() waited its shutdown_timeout of 4 s
        ("ok", pytest.approx(1)),
        ("ok", pytest.approx(2)),  # the retry's second attempt
        ("panic", pytest.approx(0.5)),  # first attempt, retried
        ("panic", pytest.approx(0.5)),  # second, dead-lettered
        ("rejected", pytest.approx(3)),
        ("retry", pytest.approx(2)),
        ("timeout", pytest.approx(10)),  # a panic too: retried
        ("timeout", pytest.approx(10)),
    ]
    assert {s.group for s in recorder.seen} == {"work"}
    assert all(0 <= s.queue_wait < 60 for s in recorder.seen)  # wall clock: what the runs took


async def test_queue_wait_counts_from_publish_and_is_never_negative(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(name="waits")
    recorder = Recorder()
    hub.observer = recorder
    hub.bind("w", _noop)
    async with hub.running():
        now = time.time()
        await hub.bus.publish(Message(topic="w", payload=1, id="old", created_at=now - 120))
        await trio.sleep(1)
        await hub.bus.publish(Message(topic="w", payload=2, id="skewed", created_at=now + 120))
        await trio.sleep(1)
    old, skewed = recorder.seen
    assert 120 <= old.queue_wait < 150  # the wall clock moved on a little meanwhile
    assert skewed.queue_wait == 0  # a publisher's clock ahead of ours


async def _noop(job: Job) -> None:
    pass


async def test_slaves_and_groups_created_later_are_observed(autojump_clock: trio.abc.Clock) -> None:
    registry = WorkerTemplateRegistry()

    registry.action("orders", slaves=[SlaveTemplate("audit", _noop)])(_noop)
    hub = ActionHub(name="lazy", registry=registry)
    metrics = HubMetrics(hub)
    async with hub.running():
        assert hub.stats() == []  # the group starts on its first message
        await hub.publish("orders", 1)
        await trio.sleep(1)
        await hub.publish("orders/slaves/audit", 2)
        await trio.sleep(1)
    count = metrics.registry.get_sample_value
    for group in ["orders", "orders/slaves/audit"]:
        assert (
            count("actionhub_action_duration_seconds_count", {"hub": "lazy", "group": group, "outcome": "ok"})
            == 1
        )
        assert count("actionhub_queue_wait_seconds_count", {"hub": "lazy", "group": group}) == 1


async def test_histograms_bucket_like_prometheus_client(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub(name="slow")
    metrics = HubMetrics(hub, registry := CollectorRegistry())
    assert hub.observer is metrics

    @hub.action("nap", timeout=1, max_attempts=1)
    async def nap(job: Job) -> None:
        await trio.sleep(job.payload)

    async with hub.running():
        for seconds in [0.002, 0.3, 5]:
            await hub.publish("nap", seconds)
        await trio.sleep(2)
    ok = {"hub": "slow", "group": "nap", "outcome": "ok"}
    timed_out = {"hub": "slow", "group": "nap", "outcome": "timeout"}
    get = registry.get_sample_value
    assert get("actionhub_action_duration_seconds_sum", timed_out) == pytest.approx(1)  # the timeout
    assert get("actionhub_action_duration_seconds_count", ok) == 2
    assert get("actionhub_action_duration_seconds_sum", ok) == pytest.approx(0.302)
    les = ["0.001", "0.0025", "0.25", "0.5", repr(float(BUCKETS[-1])), "+Inf"]
    buckets = [get("actionhub_action_duration_seconds_bucket", {**ok, "le": le}) for le in les]
    assert buckets == [0, 1, 1, 2, 2, 2]  # cumulative, as Prometheus reads them
    metrics.observe("nap", 400, 1, "ok")  # on a bound: in its bucket (le); past the last: +Inf only
    waits = [
        get("actionhub_queue_wait_seconds_bucket", {"hub": "slow", "group": "nap", "le": le}) for le in les
    ]
    assert buckets[:3] == [0, 1, 1] and waits[-2:] == [3, 4]
    assert get("actionhub_action_duration_seconds_bucket", {**ok, "le": "1.0"}) == 3


async def test_a_failing_observer_is_logged_and_the_work_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
            raise RuntimeError("observer bug")

    hub = ActionHub(name="broken")
    hub.observer = Broken()
    hub.bind("w", _noop)
    async with hub.running():
        await hub.publish("w", 1)
        await hub.publish("w", 2)
        await trio.sleep(1)
        (stat,) = hub.stats()
    assert stat.total_message_processed == 2 and stat.total_panics == 0
    assert sum("message observer" in r.getMessage() for r in caplog.records) == 2

"""Prometheus metrics of a hub (prometheus-client), served over HTTP under trio (hypercorn).

`HubMetrics` reads ``hub.stats()`` at scrape time, so every `WorkerStat` field is exported per
group with nothing kept twice: each ``total_*`` field as a counter, every other number as a
gauge, labelled ``hub``, ``group`` and ``topic``. It also keeps two histograms fed by every
message a group runs: ``actionhub_action_duration_seconds{hub,group,outcome}`` and
``actionhub_queue_wait_seconds{hub,group}`` (publish to start), and exports the escalation
dispatcher's counters. ``actionhub run --metrics-port`` and `serve_metrics` put it on
``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, Histogram, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .stats import WorkerStat
from .supervision.group import Outcome

if TYPE_CHECKING:
    from .hub import ActionHub

_LABELS = ["hub", "group", "topic"]
_NOT_NUMBERS = {"addr", "topic", "instance", "behaviour"}
#: Numbers that go down as well as up; every other ``total_*`` field only ever grows.
GAUGES = frozenset(
    {
        "max_workers",
        "min_workers",
        "available_worker_capacity",
        "total_current_workers",
        "buffered",
        "in_flight",
    }
)

#: 1 ms to 5 min: a fast handler and a slow batch job both land in a useful bucket.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def metric_name(field: str) -> str:
    """The Prometheus name of a WorkerStat field: ``total_panics`` -> ``actionhub_panics_total``,
    ``total_current_workers`` (a gauge) -> ``actionhub_current_workers``."""
    name = field.removeprefix("total_").replace("message_", "messages_")
    return f"actionhub_{name}" if field in GAUGES else f"actionhub_{name}_total"


_FIELDS = [f.name for f in attrs.fields(WorkerStat) if f.name not in _NOT_NUMBERS]


class HubMetrics(Collector):
    """The metrics of ``hub`` in ``registry`` (a new one by default); installs itself as the
    hub's message observer."""

    def __init__(self, hub: ActionHub, registry: CollectorRegistry | None = None) -> None:
        self.hub = hub
        self.registry = registry or CollectorRegistry()
        self.durations = Histogram(
            "actionhub_action_duration_seconds",
            "How long a run of the action took, by outcome",
            ["hub", "group", "outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.waits = Histogram(
            "actionhub_queue_wait_seconds",
            "From publish to the start of the action",
            ["hub", "group"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}
        self.registry.register(self)
        hub.observer = self

    def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
        # called for every message: the labelled children are looked up once, then cached
        try:
            durations, waits = self._children[group, outcome]
        except KeyError:
            durations = self.durations.labels(self.hub.name, group, outcome)
            waits = self.waits.labels(self.hub.name, group)
            self._children[group, outcome] = durations, waits
        durations.observe(duration)
        waits.observe(queue_wait)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for field in _FIELDS:
            kind = GaugeMetricFamily if field in GAUGES else CounterMetricFamily
            families[field] = kind(
                metric_name(field).removesuffix("_total"), f"WorkerStat.{field} of each group", labels=_LABELS
            )
        for stat in self.hub.stats():
            labels = [self.hub.name, stat.addr, stat.topic]
            for field, family in families.items():
                family.add_metric(labels, getattr(stat, field))
        yield from families.values()
        dispatcher = self.hub._dispatcher
        for name, value, help in [
            ("delivered", dispatcher.delivered, "Escalations handed to every callback"),
            ("dropped", dispatcher.dropped, "Escalations dropped: the callbacks were too far behind"),
            ("callback_errors", dispatcher.callback_errors, "Escalation callbacks that raised or timed out"),
        ]:
            counter = CounterMetricFamily(f"actionhub_escalations_{name}", help, labels=["hub"])
            counter.add_metric([self.hub.name], value)
            yield counter


async def serve_metrics(
    hub: ActionHub,
    port: int,
    *,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub``'s metrics on ``http://host:port/metrics`` until cancelled; `started` with
    the bound URL (port 0 picks a free port)."""
    metrics = HubMetrics(hub)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None  # hypercorn's own lines; failures to bind still raise
    app = make_asgi_app(metrics.registry)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, mode="asgi"))
        task_status.started(f"{binds[0]}/metrics")


__all__ = ["BUCKETS", "HubMetrics", "metric_name", "serve_metrics"]

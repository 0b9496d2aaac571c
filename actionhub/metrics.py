"""Prometheus metrics of a hub (prometheus-client), served over HTTP under trio (hypercorn).

`HubMetrics` reads ``hub.stats()`` at scrape time, so every `WorkerStat` field is exported per
group with nothing kept twice, labelled ``hub``, ``group`` and ``topic``: each ``total_*`` field
as a counter (``total_panics`` -> ``actionhub_panics_total``), every other number as a gauge
(``buffered`` -> ``actionhub_buffered``; ``total_current_workers``, which goes down, too:
``actionhub_current_workers``), and the rest (``instance``, ``behaviour``) as the labels of
``actionhub_group_info``. It keeps two histograms fed by every run of an action in every group:
``actionhub_action_duration_seconds{hub,group,outcome}`` and
``actionhub_queue_wait_seconds{hub,group}`` (publish to start), and exports the escalation
dispatcher's counters. ``actionhub run --metrics-port`` and `serve_metrics` put it on
``/metrics``.
"""

from __future__ import annotations

import enum
import time
import typing
from bisect import bisect_left
from collections.abc import Iterator
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING

import attrs
import trio
from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .health import health_app, serve_asgi
from .stats import WorkerStat
from .supervision.limits import parse_rate
from .supervision.policy import GroupState
from .supervision.runner import Outcome

if TYPE_CHECKING:
    from .hub import ActionHub

#: 1 ms to 5 min: a fast handler and a slow batch job both land in a useful bucket.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LE = [
    *(repr(float(bound)) for bound in BUCKETS),
    "+Inf",
]  # the ``le`` labels, as prometheus-client writes them

_LABELS = ["hub", "group", "topic"]
#: WorkerStat fields that are the series' labels rather than values.
LABEL_FIELDS = {"addr": "group", "topic": "topic"}
#: ``total_*`` fields that go down as well as up: gauges, not counters.
_TOTALS_THAT_GO_DOWN = frozenset({"total_current_workers"})

_TYPES = typing.get_type_hints(WorkerStat)
#: Numeric WorkerStat fields, in declaration order: a counter or a gauge each.
NUMBERS = [f.name for f in attrs.fields(WorkerStat) if _TYPES[f.name] in (int, float)]
#: Every numeric field that is a gauge; the other numbers are counters.
GAUGES = frozenset(name for name in NUMBERS if not name.startswith("total_") or name in _TOTALS_THAT_GO_DOWN)
#: Fields with series of their own: ``actionhub_group_state{state}`` (1 for the group's state, 0
#: for the others), ``actionhub_cool_down_remaining_seconds``, and a group's limits, if it has
#: any: ``actionhub_rate_limit_per_second`` and ``actionhub_concurrency_limit``.
_STATE_FIELDS = frozenset({"state", "cool_down_until", "rate_limit", "concurrency_limit"})
#: The other WorkerStat fields (enums, strings): the labels of ``actionhub_group_info``.
INFO_FIELDS = [
    f.name
    for f in attrs.fields(WorkerStat)
    if f.name not in LABEL_FIELDS and f.name not in NUMBERS and f.name not in _STATE_FIELDS
]


def metric_name(field: str) -> str:
    """The Prometheus name of a numeric WorkerStat field: ``total_panics`` ->
    ``actionhub_panics_total``, ``total_current_workers`` (a gauge) -> ``actionhub_current_workers``."""
    name = field.removeprefix("total_").replace("message_", "messages_")
    return f"actionhub_{name}" if field in GAUGES else f"actionhub_{name}_total"


class _Histogram:
    """One labelled histogram series: a count per bucket (the last one +Inf) and the sum.

    Kept by hand rather than with prometheus-client's `Histogram` (a lock and a linear scan per
    observation): this runs for every message, and observations and scrapes happen in the
    hub's own trio thread. A scrape from another thread copies the counts first, so it sees
    a series that is at most one observation behind, never an inconsistent one."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(_LE)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1  # the first bound >= value: ``le`` semantics
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        return list(zip(_LE, accumulate(list(self.counts)), strict=True))


class HubMetrics(Collector):
    """The metrics of ``hub``, registered in ``registry`` (a new one by default). Installs
    itself as ``hub.observer`` (replacing any other observer): every group of the hub, those
    created later included, feeds its histograms. One `HubMetrics` per hub."""

    def __init__(self, hub: ActionHub, registry: CollectorRegistry | None = None) -> None:
        self.hub = hub
        self.registry = registry if registry is not None else CollectorRegistry()
        self._durations: dict[tuple[str, str], _Histogram] = {}  # (group, outcome)
        self._waits: dict[str, _Histogram] = {}  # group
        self._series: dict[tuple[str, str], tuple[_Histogram, _Histogram]] = {}  # the per-message lookup
        self.registry.register(self)
        hub.observer = self

    def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
        """`MessageObserver`: one run of ``group``'s action."""
        try:
            durations, waits = self._series[group, outcome]
        except KeyError:
            durations = self._durations.setdefault((group, outcome), _Histogram())
            waits = self._waits.setdefault(group, _Histogram())
            self._series[group, outcome] = durations, waits
        durations.observe(duration)
        waits.observe(queue_wait)

    def collect(self) -> Iterator[Metric]:
        hub = self.hub.name
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for field in NUMBERS:
            kind = GaugeMetricFamily if field in GAUGES else CounterMetricFamily
            families[field] = kind(
                metric_name(field).removesuffix("_total"), f"WorkerStat.{field} of each group", labels=_LABELS
            )
        info = InfoMetricFamily(
            "actionhub_group", f"WorkerStat.{', '.join(INFO_FIELDS)} of each group", labels=_LABELS
        )
        states = GaugeMetricFamily(
            "actionhub_group_state",
            "WorkerStat.state of each group: 1 for the state it is in, 0 for the others",
            labels=[*_LABELS, "state"],
        )
        cooling = GaugeMetricFamily(
            "actionhub_cool_down_remaining_seconds",
            "Seconds until a group cooling down past its restart limit starts again (0: not cooling down)",
            labels=_LABELS,
        )
        rates = GaugeMetricFamily(
            "actionhub_rate_limit_per_second",
            "WorkerStat.rate_limit of each group that has one, in runs per second",
            labels=_LABELS,
        )
        concurrency = GaugeMetricFamily(
            "actionhub_concurrency_limit",
            "WorkerStat.concurrency_limit of each group that has one: runs at once, over every hub",
            labels=_LABELS,
        )
        now = time.time()
        for stat in self.hub.stats():
            labels = [hub, stat.addr, stat.topic]
            for field, family in families.items():
                family.add_metric(labels, getattr(stat, field))
            info.add_metric(labels, {field: _label(getattr(stat, field)) for field in INFO_FIELDS})
            for state in GroupState:
                states.add_metric([*labels, state.value], float(stat.state is state))
            until = stat.cool_down_until
            cooling.add_metric(labels, 0.0 if until is None else max(0.0, until - now))
            if stat.rate_limit is not None:
                rates.add_metric(labels, parse_rate(stat.rate_limit))
            if stat.concurrency_limit is not None:
                concurrency.add_metric(labels, stat.concurrency_limit)
        yield from families.values()
        yield info
        yield states
        yield cooling
        yield rates
        yield concurrency

        durations = HistogramMetricFamily(
            "actionhub_action_duration_seconds",
            "How long a run of the action took (settling the message excluded), by outcome",
            labels=["hub", "group", "outcome"],
        )
        for (group, outcome), histogram in list(self._durations.items()):
            durations.add_metric([hub, group, outcome], histogram.buckets(), histogram.sum)
        yield durations
        waits = HistogramMetricFamily(
            "actionhub_queue_wait_seconds",
            "From publish (the message's created_at) to the start of a run of the action",
            labels=["hub", "group"],
        )
        for group, histogram in list(self._waits.items()):
            waits.add_metric([hub, group], histogram.buckets(), histogram.sum)
        yield waits

        dispatcher = self.hub._dispatcher
        for name, value, help in [
            ("delivered", dispatcher.delivered, "Escalations handed to every callback"),
            ("dropped", dispatcher.dropped, "Escalations dropped: the callbacks were too far behind"),
            ("callback_errors", dispatcher.callback_errors, "Escalation callbacks that raised or timed out"),
        ]:
            counter = CounterMetricFamily(f"actionhub_escalations_{name}", help, labels=["hub"])
            counter.add_metric([hub], value)
            yield counter


def _label(value: object) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


async def serve_metrics(
    hub: ActionHub,
    port: int,
    *,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub``'s metrics (a `HubMetrics` on a registry of its own) on
    ``http://host:port/metrics``, and its health probes (`actionhub.health`) on ``/healthz`` and
    ``/readyz``, until cancelled; `started` with the metrics URL as bound (port 0 picks a free
    port). On the way out the hub's observer is cleared again."""
    metrics = HubMetrics(hub)
    app = health_app(hub, fallback=make_asgi_app(metrics.registry))
    try:
        async with trio.open_nursery() as nursery:
            base: str = await nursery.start(partial(serve_asgi, app, host, port))
            task_status.started(f"{base}/metrics")
    finally:
        if hub.observer is metrics:
            hub.observer = None  # nobody scrapes these histograms any more: stop paying for them


__all__ = ["BUCKETS", "GAUGES", "NUMBERS", "HubMetrics", "metric_name", "serve_metrics"]

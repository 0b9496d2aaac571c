"""WorkerStat: the frozen snapshot of one group's counters."""

from __future__ import annotations

import operator

import attrs

from .supervision.policy import Behaviour, GroupState, Instance


@attrs.frozen
class WorkerStat:
    """One consistent snapshot of a WorkerGroup (the seed's fields, snake_case, and more)."""

    addr: str
    topic: str
    instance: Instance
    behaviour: Behaviour
    max_workers: int
    min_workers: int
    total_message_received: int
    total_message_processed: int
    total_escalations: int
    total_panics: int
    total_restarts: int
    available_worker_capacity: int
    total_current_workers: int
    total_created_workers: int
    total_killed_workers: int
    total_idled_workers: int
    buffered: int
    in_flight: int
    total_failed: int
    total_retried: int
    total_dead_lettered: int
    total_rejected: int
    total_timeouts: int
    total_overloaded: int
    total_dropped: int
    total_malformed: int
    #: running, paused (by an operator), cooling_down (past its restart limit, back at
    #: ``cool_down_until``, epoch seconds) or stopped
    state: GroupState = GroupState.RUNNING
    cool_down_until: float | None = None
    # isolation="process" only (0 otherwise): worker processes running, started, died (signal,
    # exit, memory limit), killed mid-job (timeout or a stop past shutdown_timeout), recycled
    processes_alive: int = 0
    total_processes_started: int = 0
    total_process_deaths: int = 0
    total_process_kills: int = 0
    total_process_recycles: int = 0
    # ordered groups on Redis (0 otherwise): partitions of the topic whose lease this hub holds,
    # and how many times that set changed (see docs/ordering.md)
    partitions_owned: int = 0
    total_rebalances: int = 0
    # rate_limit / concurrency_limit groups (None otherwise): the limits as configured, and the
    # messages a limit held back before their run (each once)
    total_throttled: int = 0
    rate_limit: str | None = None
    concurrency_limit: int | None = None

    def fields(self) -> dict[str, object]:
        """Every field by name, enums as they are (no attrs.asdict walk: a hub announces
        thousands of these)."""
        return dict(zip(_FIELDS, _values(self), strict=True))

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-friendly dict (enums by value)."""
        out = self.fields()
        out["instance"] = self.instance.value
        out["behaviour"] = self.behaviour.value
        out["state"] = self.state.value
        return out


_FIELDS = tuple(field.name for field in attrs.fields(WorkerStat))
_values = operator.attrgetter(*_FIELDS)

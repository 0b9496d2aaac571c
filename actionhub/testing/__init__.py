"""Helpers for testing code that uses actionhub (shipped in the package, like ``trio.testing``):
snapshots and escalation logs to feed what reads them, and private Redis deployments (a server,
a Sentinel deployment, a Cluster) started and stopped by a test."""

from __future__ import annotations

import attrs

from ..stats import WorkerStat
from ..supervision.escalation import Escalation
from ..supervision.policy import Behaviour, Instance
from ._cluster import RedisCluster
from ._sentinels import RedisSentinels, SentinelServer
from ._server import RedisServer, redis_command

__all__ = [
    "EscalationLog",
    "RedisCluster",
    "RedisSentinels",
    "RedisServer",
    "SentinelServer",
    "redis_command",
    "worker_stat",
]


def worker_stat(addr: str, **fields: object) -> WorkerStat:
    """A `WorkerStat` of group ``addr`` (on topic ``addr``) with every counter 0, but ``fields``:
    a snapshot to feed what reads them (a dashboard, an exporter) without running a hub."""
    required = {f.name: 0 for f in attrs.fields(WorkerStat) if f.default is attrs.NOTHING}  # counters
    base: dict[str, object] = {
        **required,
        "addr": addr,
        "topic": addr,
        "instance": Instance.SCALING,
        "behaviour": Behaviour.RESTART_ONE,
    }
    return WorkerStat(**{**base, **fields})  # type: ignore[arg-type]


class EscalationLog(list[Escalation]):
    """An escalation callback that records what it receives: ``ActionHub(on_escalation=log)``."""

    def __call__(self, escalation: Escalation) -> None:
        self.append(escalation)

    def reasons(self) -> list[str]:
        """The ``reason`` of each escalation received, in order."""
        return [e.reason for e in self]

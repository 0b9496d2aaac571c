"""The awaited method set that `AsyncClient` (asyncio) and `TrioClient` (trio) share: each builds
its operation (`actionhub.client._ops`) and hands it to the flavour's ``_run``."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import TypeVar

from ..bus.base import DeadLetter
from ..inspect import CommandAnswer, HubSnapshot
from ..message import JSON, Message
from ._ops import Op, Operations

T = TypeVar("T")


class AwaitedMethods(abc.ABC):
    """`Client`'s methods, awaited."""

    _ops: Operations

    @abc.abstractmethod
    async def _run(self, op: Op[T], what: str) -> T:
        """Run ``op``'s Redis calls; a Redis error becomes `BusError` saying ``what`` failed."""

    async def publish(
        self,
        topic: str,
        payload: JSON,
        *,
        headers: dict[str, str] | None = None,
        delay: float | None = None,
        key: str | None = None,
    ) -> str:
        """See `Client.publish`."""
        return await self._run(
            self._ops.publish(topic, payload, headers=headers, delay=delay, key=key), "publish"
        )

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[JSON],
        *,
        headers: dict[str, str] | None = None,
        keys: Iterable[str | None] | None = None,
    ) -> list[str]:
        """See `Client.publish_many`."""
        return await self._run(self._ops.publish_many(topic, payloads, headers=headers, keys=keys), "publish")

    async def request(
        self, topic: str, payload: JSON, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Message:
        """See `Client.request`."""
        op = self._ops.request(topic, payload, timeout=timeout, headers=headers)
        return await self._run(op, "request")

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        return await self._run(self._ops.dead_letters(topic, limit), "read dead letters")

    async def requeue_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        return await self._run(self._ops.requeue_dead_letters(topic, ids), "requeue dead letters")

    async def purge_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        return await self._run(self._ops.purge_dead_letters(topic, ids), "purge dead letters")

    async def hubs(self) -> list[HubSnapshot]:
        return await self._run(self._ops.hubs(), "read hubs")

    async def command(
        self, verb: str, group: str, *, timeout: float = 5.0, **arguments: int
    ) -> list[CommandAnswer]:
        return await self._run(self._ops.command(verb, group, timeout=timeout, **arguments), "send a command")

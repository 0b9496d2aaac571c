"""The awaited method set that `AsyncClient` (asyncio) and `TrioClient` (trio) share: each builds
its operation (`actionhub.client._ops`) and hands it to the flavour's ``_run``."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, overload

from ..bus.base import DeadLetter
from ..inspect import CommandAnswer, HubSnapshot
from ..message import Message
from ..payloads import decode_reply
from ..results import MessageStatus
from ._ops import Op, Operations

T = TypeVar("T")
R = TypeVar("R")


class AwaitedMethods(abc.ABC):
    """`Client`'s methods, awaited."""

    _ops: Operations

    @abc.abstractmethod
    async def _run(self, op: Op[T], what: str) -> T:
        """Run ``op``'s Redis calls; a Redis error becomes `BusError` saying ``what`` failed."""

    async def publish(
        self,
        topic: str,
        payload: object,
        *,
        headers: dict[str, str] | None = None,
        delay: float | None = None,
        key: str | None = None,
        dedupe_key: str | None = None,
        dedupe_for: float | None = None,
        durable: int | None = None,
    ) -> str:
        """See `Client.publish`."""
        op = self._ops.publish(
            topic,
            payload,
            headers=headers,
            delay=delay,
            key=key,
            dedupe_key=dedupe_key,
            dedupe_for=dedupe_for,
            durable=durable,
        )
        return await self._run(op, "publish")

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[object],
        *,
        headers: dict[str, str] | None = None,
        keys: Iterable[str | None] | None = None,
        durable: int | None = None,
    ) -> list[str]:
        """See `Client.publish_many`."""
        return await self._run(
            self._ops.publish_many(topic, payloads, headers=headers, keys=keys, durable=durable), "publish"
        )

    @overload
    async def request(
        self, topic: str, payload: object, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Message: ...

    @overload
    async def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: type[R],
    ) -> R: ...

    async def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: object | None = None,
    ) -> Any:
        """See `Client.request`."""
        op = self._ops.request(topic, payload, timeout=timeout, headers=headers)
        reply = await self._run(op, "request")
        return reply if reply_type is None else decode_reply(reply.payload, reply_type)

    async def status(self, message_id: str) -> MessageStatus:
        """See `Client.status`."""
        return await self._run(self._ops.status(message_id), "read a message status")

    async def result(
        self, message_id: str, timeout: float | None = None, *, result_type: object | None = None
    ) -> Any:
        """See `Client.result`."""
        value = await self._run(self._ops.result(message_id, timeout=timeout), "wait for a result")
        return value if result_type is None else decode_reply(value, result_type)

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        return await self._run(self._ops.dead_letters(topic, limit), "read dead letters")

    async def requeue_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        return await self._run(self._ops.requeue_dead_letters(topic, ids), "requeue dead letters")

    async def purge_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        return await self._run(self._ops.purge_dead_letters(topic, ids), "purge dead letters")

    async def key_names(
        self, topic: str, key: str | None = None, *, partitions: int | None = None
    ) -> list[tuple[str, str]]:
        """See `Client.key_names`."""
        return await self._run(self._ops.key_names(topic, key, partitions), "read key names")

    async def hubs(self) -> list[HubSnapshot]:
        return await self._run(self._ops.hubs(), "read hubs")

    async def command(
        self, verb: str, group: str, *, timeout: float = 5.0, **arguments: int
    ) -> list[CommandAnswer]:
        return await self._run(self._ops.command(verb, group, timeout=timeout, **arguments), "send a command")

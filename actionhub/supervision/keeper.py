"""ResultKeeper: what a group with ``keep_result`` writes about each message it runs.

The runner calls it at each step of a message's fate (only for such groups: the others hold
None and do nothing per message): ``running`` before the action, ``retrying`` with the next
attempt's number and time, ``done`` with the return value BEFORE the ack (a crash between the
two leaves a done record and a redelivery, never an ack without a result: on Redis streams the
worker only queues it, and the bus's acker sends it ahead of the XACK), ``dead`` before the
message moves to the dead letters. Records are JSON (`actionhub.results`), kept by the bus
(`actionhub.bus.statuses`).
"""

from __future__ import annotations

import time
from typing import Any

from ..bus.base import Bus, Delivery
from ..bus.statuses import StatusStore
from ..payloads import to_json
from ..results import MessageStatus, State, encode, rank, ttl


class ResultKeeper:
    """The status writes of one group keeping results ``keep_result`` seconds."""

    def __init__(self, bus: Bus, keep_result: float) -> None:
        self.store: StatusStore = bus.statuses()  # a bus that keeps none says so at bind time
        self.keep_result = keep_result

    async def start(self, topic: str, group: str) -> None:
        """Consumer group ``group`` is about to read ``topic``: publishes to it write pending
        records from now on (`ConfigurationError` if another group of the topic keeps results)."""
        await self.store.keep(topic, group, self.keep_result)

    async def running(self, delivery: Delivery) -> None:
        await self._write(delivery, "running", attempt=delivery.message.attempt)

    async def retrying(self, delivery: Delivery, delay: float) -> None:
        """The run failed; attempt ``attempt + 1`` runs in ``delay`` seconds."""
        now = time.time()
        await self._write(
            delivery, "retrying", attempt=delivery.message.attempt + 1, next_attempt_at=now + delay, at=now
        )

    def done_record(self, delivery: Delivery, value: object) -> bytes:
        """The done record of ``value`` (the action's return value, a typed model as JSON);
        `TypeError` if it is not JSON: the run then fails as if the action had raised it."""
        return encode(self._status(delivery, "done", attempt=delivery.message.attempt, result=to_json(value)))

    async def done(self, delivery: Delivery, record: bytes) -> None:
        await self.store.write_done(
            delivery.message.id, record, self.keep_result, rank=rank("done", delivery.message.attempt)
        )

    async def dead(self, delivery: Delivery, reason: str, error: str | None = None) -> None:
        await self._write(delivery, "dead", attempt=delivery.message.attempt, reason=reason, error=error)

    async def _write(self, delivery: Delivery, state: State, **fields: Any) -> None:
        status = self._status(delivery, state, **fields)
        record, seconds = encode(status), ttl(self.keep_result, state)
        await self.store.write(
            delivery.message.id, record, seconds, final=status.final, rank=rank(state, status.attempt)
        )

    @staticmethod
    def _status(
        delivery: Delivery,
        state: State,
        *,
        attempt: int,
        next_attempt_at: float | None = None,
        at: float | None = None,
        reason: str | None = None,
        error: str | None = None,
        result: object = None,
    ) -> MessageStatus:
        message = delivery.message
        return MessageStatus(
            message.id,
            state,
            topic=message.topic,
            group=delivery.subscription.group,
            attempt=attempt,
            next_attempt_at=next_attempt_at,
            at=time.time() if at is None else at,
            reason=reason,
            error=error,
            result=result,
        )

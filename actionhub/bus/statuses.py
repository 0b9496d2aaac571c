"""Where a bus keeps message status records (`actionhub.results`), and how they are waited for.

The seam: a `StatusStore` per bus (``bus.statuses()``). Groups with ``keep_result`` write
through it (`actionhub.supervision.keeper`); ``hub.status``/``hub.result`` read through it. A
final write (done, dead) also rings the message's bell, so a waiter blocks on that instead of
polling; it re-reads the record when rung, and at least every ``slice`` seconds in case a ring
was missed (the record is the truth, the bell only a hint). ``memory://`` keeps records in
process (`MemoryStatuses`); Redis in `actionhub.bus.redis.results`.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import trio

from ..errors import ConfigurationError
from ..payloads import decode_reply
from ..results import MessageDead, MessageStatus, decode, encode, pending_of, ttl


class StatusStore(abc.ABC):
    """One bus's status records, shared by every hub (and client) of the bus."""

    #: Longest a waiter blocks before it re-reads the record anyway (a ring it could miss).
    slice: float = 5.0

    @abc.abstractmethod
    async def keep(self, topic: str, group: str, seconds: float) -> None:
        """Consumer group ``group`` of ``topic`` keeps results for ``seconds``: from now on, every
        publish to the topic writes a pending record (kept as long as a hub of the group runs).
        One group of a topic may keep results (every group gets every message, and their records
        of it would overwrite each other): `ConfigurationError` if another group does."""

    @abc.abstractmethod
    async def write(self, message_id: str, record: bytes, ttl: float, *, final: bool, rank: int) -> None:
        """Store ``record`` (JSON) as the status of ``message_id`` for ``ttl`` seconds, unless the
        stored record has a higher `actionhub.results.rank` than ``rank``; ``final``: also ring
        the message's bell (waiters re-read)."""

    async def write_done(self, message_id: str, record: bytes, ttl: float, *, rank: int) -> None:
        """`write` a done record, which must be stored before the message's ack: here, written
        before returning; a store whose bus's acker sends queued writes ahead of its acks only
        queues it (the worker does not wait for Redis)."""
        await self.write(message_id, record, ttl, final=True, rank=rank)

    @abc.abstractmethod
    async def read(self, message_id: str) -> bytes | None:
        """The stored record of ``message_id``, None if there is none (never kept, expired)."""

    @abc.abstractmethod
    async def wait(self, message_id: str, seconds: float) -> None:
        """Return once the bell of ``message_id`` rang (now or since its last final write, while
        the bell lasts), or after ``seconds``: the caller then re-reads the record."""


def check_results_group(topic: str, group: str, keeping: str | bytes | None) -> None:
    """`ConfigurationError` unless ``keeping`` (the group that keeps ``topic``'s results) is
    ``group`` or none."""
    if keeping is not None and (keeping.decode() if isinstance(keeping, bytes) else keeping) != group:
        raise ConfigurationError(
            f"group {group!r} cannot keep results of topic {topic!r}: group {keeping!r} does "
            "(one group of a topic may keep results: every group gets every message)"
        )


async def status(store: StatusStore, message_id: str) -> MessageStatus:
    """Where ``message_id`` stands now (``unknown`` when no record is kept)."""
    return decode(message_id, await store.read(message_id))


def outcome(status: MessageStatus, result_type: object | None = None) -> Any:
    """The result of a final ``status`` (decoded as ``result_type`` if given); `MessageDead`
    for a dead one."""
    if status.state == "dead":
        raise MessageDead(status)
    return status.result if result_type is None else decode_reply(status.result, result_type)


async def result(
    store: StatusStore,
    message_id: str,
    *,
    timeout: float | None = None,
    result_type: object | None = None,
) -> Any:
    """Wait until ``message_id`` is done (its result) or dead (`MessageDead`); `trio.TooSlowError`
    after ``timeout`` seconds (None: no limit). A message with no record yet (``unknown``: a
    publish before any hub kept results) is waited for as well."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    deadline = math.inf if timeout is None else trio.current_time() + timeout
    while True:
        current = await status(store, message_id)
        if current.final:
            return outcome(current, result_type)
        left = deadline - trio.current_time()
        if left <= 0:
            raise trio.TooSlowError(f"message {message_id!r} is still {current.state} after {timeout}s")
        await store.wait(message_id, min(left, store.slice))


class MemoryStatuses(StatusStore):
    """``memory://``'s records, on the trio clock: id -> (record, trio time it lapses)."""

    slice = math.inf  # in one process no ring is missed: a waiter wakes on the final write only

    def __init__(self) -> None:
        self.kept: dict[str, float] = {}  # topic -> seconds its records are kept
        self._groups: dict[str, str] = {}  # topic -> the consumer group keeping its results
        self._records: dict[str, tuple[bytes, float, int]] = {}  # id -> (record, lapse, rank)
        self._bells: dict[str, trio.Event] = {}
        self._prune_at = 1024

    def published(self, topic: str, message_id: str, at: float) -> None:
        """A publish to ``topic``: a pending record if a group of it keeps results (and none
        is stored yet)."""
        seconds = self.kept.get(topic)
        if seconds is not None and self._live(message_id) is None:
            self._store(message_id, encode(pending_of(message_id, topic, at)), ttl(seconds, "pending"), 0)

    async def keep(self, topic: str, group: str, seconds: float) -> None:
        check_results_group(topic, group, self._groups.setdefault(topic, group))
        self.kept[topic] = max(seconds, self.kept.get(topic, 0.0))

    async def write(self, message_id: str, record: bytes, ttl: float, *, final: bool, rank: int) -> None:
        if self._live(message_id) is not None and self._records[message_id][2] > rank:
            return  # a later state is stored already
        self._store(message_id, record, ttl, rank)
        if final:
            bell = self._bells.pop(message_id, None)
            if bell is not None:
                bell.set()

    async def read(self, message_id: str) -> bytes | None:
        return self._live(message_id)

    async def wait(self, message_id: str, seconds: float) -> None:
        bell = self._bells.get(message_id)
        if bell is None:
            bell = self._bells[message_id] = trio.Event()
        with trio.move_on_after(seconds):
            await bell.wait()
        if not bell.is_set() and bell.statistics().tasks_waiting == 0 and self._bells.get(message_id) is bell:
            del self._bells[message_id]  # nobody waits any more: no bell kept for a message never done

    def _live(self, message_id: str) -> bytes | None:
        held = self._records.get(message_id)
        if held is None:
            return None
        if held[1] <= trio.current_time():
            del self._records[message_id]
            return None
        return held[0]

    def _store(self, message_id: str, record: bytes, ttl: float, rank: int) -> None:
        now = trio.current_time()
        if len(self._records) >= self._prune_at:  # forget lapsed records now and then, not per write
            self._records = {k: v for k, v in self._records.items() if v[1] > now}
            self._prune_at = max(1024, 2 * len(self._records))
        self._records[message_id] = (record, now + ttl, rank)

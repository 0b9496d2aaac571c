"""The bus seam: the one narrow protocol every transport implements.

The hub and its groups only ever talk to a `Bus` and the `Subscription`s it hands out; the
memory transport is both the embedded default and the test double for this same seam.

Flow: a group owns an `Inbox` (its bounded buffer). ``bus.subscribe(topic, group, inbox)``
makes the transport feed that inbox, never more than its free credit; the group's workers settle
each `Delivery` through its subscription: ``ack`` once the action finished, ``retry`` with a
delay, or ``dead_letter`` with a reason. Nothing is acked that did not finish.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ..errors import ConfigurationError
from ..message import Message
from .dedupe import Dedupe
from .ticks import ScheduleState, Tick, TicksFired

if TYPE_CHECKING:
    from .limits import Limiter, LimitSpec
    from .statuses import StatusStore


def check_durable(durable: int | None) -> int | None:
    """A publish's ``durable``: how many replicas must confirm it (None: as the bus's URL says)."""
    if durable is not None and (isinstance(durable, bool) or not isinstance(durable, int) or durable < 0):
        raise ConfigurationError(f"durable must be a whole number of replicas >= 0, not {durable!r}")
    return durable


def no_replicas(durable: int | None, why: str) -> None:
    """`ConfigurationError` if a publish asks a bus without replicas (``why``) for some."""
    if durable:
        raise ConfigurationError(f"durable={durable} cannot be confirmed: {why}")


class Inbox(Protocol):
    """What a transport feeds: a group's bounded buffer of deliveries."""

    @property
    def name(self) -> str: ...

    def free_credit(self) -> int:
        """How many more deliveries fit right now."""
        ...

    async def wait_for_credit(self, at_least: int = 1) -> int:
        """Wait until ``at_least`` deliveries fit (at most the whole buffer); return how many do.
        Raise `HubStopped` once the inbox is closed."""
        ...

    def put_nowait(self, delivery: Delivery) -> None:
        """Add a delivery; the caller has checked `free_credit`."""
        ...

    async def put(self, delivery: Delivery, *, timeout: float | None = None) -> None:
        """Add a delivery, waiting for room up to ``timeout`` (the group's ``accept_wait`` if
        None); raise `Overloaded` after that, or `HubStopped` if the inbox is closed."""
        ...

    def take_back(self, which: Callable[[Delivery], bool]) -> list[Delivery]:
        """Take back the buffered, unstarted deliveries for which ``which`` is true (another hub
        now owns their partition), and return them."""
        ...

    def note_dropped(self) -> None:
        """An at-most-once transport had to drop a message for lack of room: count it."""
        ...

    def note_malformed(self) -> None:
        """The transport dead-lettered an entry it could not decode for this inbox: count it."""
        ...


class Delivery:
    """One message handed to one consumer group, and how to settle it."""

    __slots__ = ("message", "subscription", "token")

    def __init__(self, message: Message, subscription: Subscription, token: object = None) -> None:
        self.message = message
        self.subscription = subscription
        self.token = token  # transport-specific (a stream entry id, ...)

    def __repr__(self) -> str:
        return f"<Delivery {self.message.topic}:{self.message.id} attempt={self.message.attempt}>"


@attrs.frozen
class DeadLetter:
    """A message that will not be retried, with why."""

    message: Message
    reason: str
    error: str | None = None
    traceback: str | None = None
    attempts: int = 1
    group: str | None = None
    at: float = attrs.field(factory=time.time)
    id: str = ""


@attrs.frozen
class ConsumerGroupInfo:
    """One consumer group of a topic, as the bus sees it now."""

    name: str
    consumers: int
    #: delivered to a consumer, not settled yet
    pending: int
    #: published, not yet delivered to the group (None: the bus cannot tell)
    lag: int | None
    #: seconds since the oldest pending message was published (None: nothing pending)
    oldest_pending_age: float | None


@attrs.frozen
class TopicInfo:
    """What the bus holds for one topic now: the dashboard's topic page, ``bus.topic_info``."""

    topic: str
    #: messages retained (0 on a bus that keeps no history), over every partition stream
    length: int
    partitions: int
    groups: tuple[ConsumerGroupInfo, ...]
    #: messages waiting for their time (a delayed publish, a retry's backoff)
    delayed: int
    #: of those, the ones due already (the mover takes them next)
    delayed_due: int
    #: seconds until the next delayed message is due (None: none waits)
    next_due_in: float | None
    dead_letters: int
    #: False when there were too many delayed messages (of every topic) to look at them all:
    #: the delayed counts are then a lower bound
    delayed_complete: bool = True


class Subscription(abc.ABC):
    """One consumer group's view of a topic: how its deliveries are settled."""

    topic: str
    group: str
    #: ordered groups on Redis: the partitions whose lease this subscription holds, and how many
    #: times that set changed (partitions taken over, handed over or lost)
    partitions_owned: int = 0
    rebalances: int = 0

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """The action finished: the message is done."""

    @abc.abstractmethod
    async def retry(self, delivery: Delivery, *, delay: float, error: str | None) -> None:
        """Deliver the message to this group again after ``delay`` seconds, as the next attempt."""

    @abc.abstractmethod
    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        """Move the message to the topic's dead letters; it will not be retried."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop feeding the inbox. Unsettled deliveries stay unacknowledged."""

    @abc.abstractmethod
    async def load_progress(self, message_id: str) -> bytes | None:
        """The last checkpoint (JSON) saved for ``message_id`` in this group, if any."""

    @abc.abstractmethod
    async def save_progress(self, message_id: str, state: bytes) -> None:
        """Keep ``state`` (JSON) as the checkpoint of ``message_id`` in this group."""

    @abc.abstractmethod
    async def clear_progress(self, message_id: str) -> None:
        """Forget the checkpoint of ``message_id`` in this group (it is settled)."""


class Watch(abc.ABC):
    """A lazy group's interest in its topic (see `Bus.watch`)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop watching; ``on_message`` will not be called."""


class ReplyChannel(abc.ABC):
    """A private address a requester waits on for one reply."""

    address: str

    @abc.abstractmethod
    async def receive(self) -> Message:
        """The next reply sent to `address`."""


class ControlRequest(abc.ABC):
    """An operator command (JSON) sent to every live hub; each hub answers once."""

    command: bytes

    @abc.abstractmethod
    async def answer(self, reply: bytes) -> None:
        """Send this hub's answer (JSON) back to the operator."""


class Bus(abc.ABC):
    """A transport. Chosen by URL (see `actionhub.bus.url.open_bus`)."""

    url: str
    #: True when unsettled messages survive the process (Redis streams): they are redelivered
    #: rather than handed over in an escalation's ``pending_messages``.
    durable: bool = False

    @property
    def connected(self) -> bool:
        """False while the broker is unreachable (the bus keeps reconnecting meanwhile)."""
        return True

    @abc.abstractmethod
    def open(
        self, consumer: str, *, connect_timeout: float = 10.0, serving: bool = True
    ) -> AbstractAsyncContextManager[None]:
        """Async context manager: connect (`BusError` if the broker does not answer within
        ``connect_timeout`` seconds), run background tasks, and clean up on exit.
        ``consumer`` names the opener (the hub) towards the broker. ``serving=False``: the
        opener only reads and sends (a dashboard, a CLI command), so the chores of a hub (moving
        due delayed messages, reading for groups) are left to the hubs."""

    @abc.abstractmethod
    async def publish(
        self,
        message: Message,
        *,
        delay: float | None = None,
        dedupe: Dedupe | None = None,
        durable: int | None = None,
    ) -> str:
        """Send ``message`` to every consumer group of ``message.topic``; return its id. With
        ``dedupe``, a second publish of its key to the topic within its window writes nothing and
        returns the first message's id (decided at publish time, also for a delayed one).
        ``durable``: return only once that many replicas have it (None: as the bus's URL says;
        `check_durable`); a bus without replicas refuses more than 0 (`no_replicas`)."""

    #: whether the bus retains published messages, for ``start="earliest"`` and replays
    keeps_history = False

    async def history(
        self, topic: str, *, first: str = "-", last: str = "+", count: int = 1000
    ) -> list[tuple[str, Message]]:
        """Up to ``count`` of the messages published to ``topic`` that the bus retains, with entry
        ids from ``first`` to ``last`` (inclusive; ``(id`` excludes it), oldest first, as (entry
        id, message); malformed entries and retries are left out. Buses that `keeps_history`."""
        raise ConfigurationError(f"{self.url} keeps no history of {topic!r}")

    async def publish_many(self, messages: Sequence[Message], *, durable: int | None = None) -> list[str]:
        """Send every one of ``messages``, in order; return their ids. Transports that can
        batch do it in as few round trips as they can, all or nothing per round trip."""
        return [await self.publish(message, durable=durable) for message in messages]

    @abc.abstractmethod
    async def subscribe(
        self,
        topic: str,
        group: str,
        inbox: Inbox,
        *,
        earliest: bool = False,
        ordered: bool = False,
        partitions: int | None = None,
    ) -> Subscription:
        """Start feeding ``inbox`` with messages of ``topic`` for consumer group ``group``. A
        group new to the bus starts at the end of the topic, or with ``earliest`` at the start of
        what it retains (only buses that `keeps_history`). ``ordered``: the group runs the
        messages of one key one at a time in publish order (the inbox keeps to that within a
        process; the bus makes sure no two processes hold the same key at once), over the topic's
        ``partitions`` (None: as many as it has, or the default for a topic that has none)."""

    async def watch(
        self, topic: str, group: str, on_message: Callable[[], Awaitable[None]], *, earliest: bool = False
    ) -> Watch | None:
        """Await ``on_message()`` once, as soon as ``topic`` has a message for consumer group
        ``group`` (one published from now on, or, on a bus that keeps them, one still undelivered
        or pending): how a lazy template's group starts on its first message. ``on_message``
        subscribes the group; the message is delivered to it then. A watch holds no task or
        connection of its own. None: this bus cannot watch; subscribe at once instead."""
        return None

    @abc.abstractmethod
    async def dead_letters(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``topic``."""

    @abc.abstractmethod
    async def requeue_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        """Publish dead letters again (all, or those ids) as attempt 1; return how many."""

    @abc.abstractmethod
    async def purge_dead_letters(self, topic: str, ids: list[str] | None = None) -> int:
        """Delete dead letters (all, or those ids); return how many."""

    @abc.abstractmethod
    def reply_channel(self) -> AbstractAsyncContextManager[ReplyChannel]:
        """Async context manager: a fresh reply address, removed on exit."""

    @abc.abstractmethod
    async def send_reply(self, address: str, message: Message) -> None:
        """Send a reply to a requester's address (dropped if nobody waits any more)."""

    # ------------------------------------------------------------------ operating many hubs

    @abc.abstractmethod
    async def announce(self, hub: str, snapshot: bytes, ttl: float) -> None:
        """Publish a hub's snapshot (JSON); it expires after ``ttl`` seconds unless renewed."""

    @abc.abstractmethod
    async def withdraw(self, hub: str) -> None:
        """Remove a hub's snapshot at once (it stopped)."""

    @abc.abstractmethod
    async def announcements(self) -> list[bytes]:
        """The latest snapshot of every live hub on this bus."""

    @abc.abstractmethod
    def control_requests(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[ControlRequest]]:
        """Async context manager: the operator commands sent to the hubs of this bus."""

    @abc.abstractmethod
    async def send_control(self, command: bytes, *, timeout: float, expect: int) -> list[bytes]:
        """Send an operator command to every live hub; return the answers that came within
        ``timeout`` (sooner once ``expect`` of them did)."""

    @abc.abstractmethod
    async def record(self, stream: str, fields: dict[str, str]) -> None:
        """Append an event (an escalation, say) to the bus's ``stream`` of such events."""

    @abc.abstractmethod
    async def events(self, stream: str, *, limit: int = 100, newest: bool = False) -> list[dict[str, str]]:
        """The oldest ``limit`` events of ``stream`` (``newest``: the newest, newest first)."""

    @abc.abstractmethod
    async def topic_info(self, topic: str) -> TopicInfo:
        """What the bus holds for ``topic`` now."""

    def limiter(self, topic: str, group: str, spec: LimitSpec) -> Limiter | None:
        """The rate and concurrency limiter of consumer group ``group`` on ``topic``, kept by the
        broker for every hub of the group (see `actionhub.supervision.limits`). None: the bus
        keeps none, so the hubs on this bus object share one in-process limiter."""
        return None

    def statuses(self) -> StatusStore:
        """Where this bus keeps message status records and results (`actionhub.bus.statuses`),
        for every hub and client of the bus."""
        raise ConfigurationError(f"{self.url} keeps no message status or results")

    async def fire_ticks(
        self, schedule: str, digest: str, catch_up: str, ticks: Sequence[Tick], *, topic: str | None = None
    ) -> TicksFired:
        """Publish each of ``ticks`` of ``schedule`` (definition ``digest``) that no hub published
        yet, once across every hub of the bus, deciding on the bus's clock (see
        `actionhub.bus.ticks`); no ticks: read the state (starting it afresh if it is not
        ``digest``'s). ``topic``: the schedule's (a Redis Cluster keeps the state in its slot,
        and reading it has no tick to take the topic from)."""
        raise ConfigurationError(f"{type(self).__name__} cannot run schedules")

    async def schedule_states(self, names: Sequence[str] | None = None) -> dict[str, ScheduleState]:
        """The state of each of the schedules ``names`` (None: of every schedule) that has one."""
        raise ConfigurationError(f"{type(self).__name__} keeps no schedules")

    def check_message(self, message: Message) -> None:
        """`ConfigurationError` if ``message`` could never be published on this bus (not JSON, or
        past its size limit): for what is declared once and published later (a schedule's ticks)."""
        return None  # a bus without a size limit takes any JSON payload (`Schedule` checked it is)


__all__ = [
    "Bus",
    "ConsumerGroupInfo",
    "ControlRequest",
    "DeadLetter",
    "Delivery",
    "Inbox",
    "ReplyChannel",
    "Subscription",
    "TopicInfo",
    "Watch",
]

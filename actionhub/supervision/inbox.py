"""GroupInbox: a group's bounded buffer of unstarted deliveries, its credit and its key lanes.

The bus feeds it (never past its free credit), workers take from it. For an ordered group a
worker takes the oldest delivery whose key has nothing running or held: each key is a lane.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
import trio

from ..bus.base import Delivery
from ..errors import HubStopped, Overloaded


class GroupInbox:
    """What the bus feeds for one group (the `actionhub.bus.base.Inbox` protocol), and what its
    workers take from. ``on_arrival`` is called after each delivery is added."""

    def __init__(
        self, name: str, *, capacity: int, accept_wait: float, ordered: bool, on_arrival: Callable[[], None]
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.accept_wait = accept_wait
        self.ordered = ordered
        self._on_arrival = on_arrival
        self._buffer: deque[Delivery] = deque()
        self._lanes: set[str] = set()  # ordered: keys with a message running or held for a retry
        self._room = trio.lowlevel.ParkingLot()  # feeders waiting for room
        self.closed = False
        self.received = 0
        self.overloaded = 0
        self.dropped = 0
        self.malformed = 0

    def __len__(self) -> int:
        return len(self._buffer)

    # ------------------------------------------------------------------ fed by the bus

    def free_credit(self) -> int:
        if self.closed:
            return 0
        return max(0, self.capacity - len(self._buffer))

    async def wait_for_credit(self, at_least: int = 1) -> int:
        at_least = max(1, min(at_least, self.capacity))
        while self.free_credit() < at_least:
            if self.closed:
                raise HubStopped(f"group {self.name!r} is closed")
            await self._room.park()
        return self.free_credit()

    def put_nowait(self, delivery: Delivery) -> None:
        if self.closed:
            raise HubStopped(f"group {self.name!r} is closed")
        self._buffer.append(delivery)
        self.received += 1
        self._on_arrival()

    async def put(self, delivery: Delivery, *, timeout: float | None = None) -> None:
        if self.free_credit():
            self.put_nowait(delivery)
            return
        wait = self.accept_wait if timeout is None else timeout
        with trio.move_on_after(wait):
            await self.wait_for_credit()
            self.put_nowait(delivery)
            return
        self.overloaded += 1
        raise Overloaded(self.name, wait)

    def take_back(self, which: Callable[[Delivery], bool]) -> list[Delivery]:
        taken_back = [delivery for delivery in self._buffer if which(delivery)]
        if taken_back:
            self._buffer = deque(delivery for delivery in self._buffer if not which(delivery))
            self._room.unpark_all()
        return taken_back

    def note_dropped(self) -> None:
        self.dropped += 1

    def note_malformed(self) -> None:
        self.malformed += 1

    # ------------------------------------------------------------------ drained by the workers

    def take(self) -> Delivery | None:
        """The next delivery a worker may start, or None. Ordered: the oldest whose key has no
        message running or held (the first buffered of a key is its oldest)."""
        buffer = self._buffer
        if not buffer:
            return None
        if not self.ordered:
            delivery = buffer.popleft()
        else:
            for index, candidate in enumerate(buffer):
                key = candidate.message.key
                if key is None or key not in self._lanes:
                    del buffer[index]
                    if key is not None:
                        self._lanes.add(key)
                    delivery = candidate
                    break
            else:
                return None
        if self._room:  # a feeder waits for this room (checked first: unpark is not free)
            self._room.unpark()
        return delivery

    def free_lane(self, key: str) -> None:
        """The message of ``key`` that was running or held is settled."""
        self._lanes.discard(key)

    def run_again_first(self, delivery: Delivery) -> None:
        """Ordered: put ``delivery`` back ahead of everything as its next attempt, its lane freed,
        so that no later message of its key overtakes it."""
        message = attrs.evolve(delivery.message, attempt=delivery.message.attempt + 1)
        self._buffer.appendleft(Delivery(message, delivery.subscription, delivery.token))
        assert message.key is not None
        self._lanes.discard(message.key)

    def put_back(self, delivery: Delivery) -> None:
        """Put an unstarted ``delivery`` back ahead of everything, as it was (its wait for a
        limit ended early): its key's lane, if any, is free again, and a worker is woken for it
        (its own may be gone: cancelled while waiting)."""
        self._buffer.appendleft(delivery)
        key = delivery.message.key
        if key is not None:
            self._lanes.discard(key)
        self._on_arrival()

    def drain(self) -> list[Delivery]:
        """Take every unstarted delivery, in order (a stop, an escalation, a cool-down)."""
        taken = list(self._buffer)
        self._buffer.clear()
        self._lanes.clear()
        self._room.unpark_all()
        return taken

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Accept nothing more; waiting feeders see `HubStopped`."""
        self.closed = True
        self._room.unpark_all()

    def reopen(self) -> None:
        """Accept deliveries again (a group back from its cool-down)."""
        self.closed = False

    def wake_feeders(self) -> None:
        self._room.unpark_all()

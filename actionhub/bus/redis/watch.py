"""A lazy template's group before its first message: nothing but a few streams in the reader's
one ``XREAD``. No task, no connection, no worker group: the group is created when the first
message for it arrives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..base import Watch
from .by_slot import by_slot
from .reader import Watcher
from .subscription import ensure_group

if TYPE_CHECKING:
    from .streams import RedisStreamsBus


class LazyWatch(Watch, Watcher):
    """Calls ``on_message`` once, when consumer group ``group`` of ``topic`` has something to
    deliver (or entries a dead hub left pending): at start, or when the reader sees a new entry."""

    def __init__(
        self,
        bus: RedisStreamsBus,
        topic: str,
        group: str,
        on_message: Callable[[], Awaitable[None]],
        *,
        earliest: bool,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.earliest = earliest
        self.partitions: int | None = None
        self.streams: list[str] = []  # those the reader waits on for this watch
        self._on_message = on_message
        self._fired = False

    async def start(self) -> None:
        """Create the group where it does not exist yet (so that nothing published from now on
        is missed, as for a subscription), then fire at once if it has a backlog, else wait."""
        bus = self.bus
        self.partitions = await bus.partitions_of(self.topic)
        streams = [
            bus.keys.stream(self.topic),
            *(bus.keys.partition(self.topic, p) for p in range(self.partitions or 0)),
        ]
        for stream in streams:
            await ensure_group(bus, stream, self.group, earliest=self.earliest)
        slotted = by_slot(bus.keys, streams, lambda s: s)  # a script per slot in the cluster layout
        replies = await bus.run_scripts(
            [(bus._backlog, group, [self.group] * len(group)) for group in slotted],
            what=f"look at {self.topic} for {self.group}",
        )
        states = [state for reply in replies for state in reply]
        if any(int(backlog) for backlog, _ in states):
            self._fire()
            return
        bus._watches.append(self)
        for stream, (_, last) in zip([s for group in slotted for s in group], states, strict=True):
            self.streams.append(stream)
            bus.reader.wait(stream, self, last)

    def nudge(self, stream: str) -> None:
        self._fire()

    def follows_partitions(self) -> bool:
        """Whether the watch waits for its topic's first partition streams."""
        return not self._fired and self.partitions is None

    def follow_partitions_soon(self) -> None:
        # partition streams appear with the first keyed message (or another template's ordered
        # group): start the group, which reads them from their start
        self._fire()

    def _fire(self) -> None:
        if self._fired:
            return
        self.close()
        assert self.bus._nursery is not None
        self.bus._nursery.start_soon(self._on_message)

    def close(self) -> None:
        self._fired = True
        for stream in self.streams:
            self.bus.reader.stop_waiting(stream, self)
        if self in self.bus._watches:
            self.bus._watches.remove(self)

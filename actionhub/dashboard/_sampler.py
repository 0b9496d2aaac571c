"""The dashboard's view of the live hubs: their latest snapshots, read once per interval whoever
asks (so the hubs pay for one reader, as with ``actionhub stats --watch``), and the rates of
the last window, computed from the counters the snapshots carry."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence

import attrs
import trio

from ..bus.base import Bus
from ..errors import ActionHubError
from ..inspect import HubSnapshot, hub_snapshots
from ..stats import WorkerStat

log = logging.getLogger("actionhub.dashboard")

Pair = tuple[str, str]  # (hub, group)


@attrs.frozen
class Rate:
    """Messages per second of one hub's group (or of a group over its hubs)."""

    processed: float = 0.0
    failed: float = 0.0

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.processed + other.processed, self.failed + other.failed)


@attrs.frozen
class Point:
    """One step of a group's (or every group's) history: its mean rates over the step, and
    its workers and buffered messages at the end of it."""

    at: float  # epoch seconds, the end of the step
    processed: float
    failed: float
    workers: int
    buffered: int


class Sampler:
    """Reads the hubs' snapshots at most once per ``interval`` seconds, and keeps a history of
    ``window`` seconds in ``points`` steps (at least an interval each) per group and for every
    group together."""

    def __init__(self, bus: Bus, *, interval: float = 2.0, window: float = 900.0, points: int = 180) -> None:
        self.bus = bus
        self.interval = interval
        self.window = window
        self.step = max(window / points, interval)
        self.snapshots: list[HubSnapshot] = []
        self.rates: dict[Pair, Rate] = {}
        self._seen: dict[Pair, tuple[float, int, int]] = {}  # snapshot time, processed, failed
        # per group (None: all of them): the step under way, and the points of those before
        self._step: dict[str | None, _Step] = {}
        self._step_started: float | None = None
        self._history: dict[str | None, deque[Point]] = {}
        self._last_seen: dict[str, float] = {}
        self._points = max(int(window // self.step), 2)
        self._sampled_at = -math.inf  # trio time
        self._lock = trio.Lock()
        self._running = False

    async def refresh(self, *, max_age: float | None = None) -> None:
        """Read the snapshots again, unless they were read less than ``max_age`` seconds ago
        (concurrent callers share one read). By default, what a page asks for: an interval,
        or, while `run` reads every interval anyway, three (`run` is late: the bus is slow)."""
        if max_age is None:
            max_age = self.interval * (3 if self._running else 1)
        async with self._lock:
            if trio.current_time() - self._sampled_at < max_age:
                return
            snapshots = await hub_snapshots(self.bus)
            self._sampled_at = trio.current_time()
            self.take(snapshots, time.time())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh every interval until cancelled (the history then has no gaps); a bus that
        does not answer is asked again at the next interval."""
        task_status.started()
        self._running = True
        tick = trio.current_time()
        try:
            while True:
                try:
                    await self.refresh(max_age=0)
                except ActionHubError:  # the bus is down: the pages say so themselves
                    pass
                except Exception:  # say, Redis refused a command: logged, and asked again
                    log.exception("dashboard: reading the hubs' snapshots failed")
                tick += self.interval  # on the ticks: a slow read does not stretch the steps
                await trio.sleep_until(max(tick, trio.current_time()))
        finally:
            self._running = False

    def take(self, snapshots: Sequence[HubSnapshot], now: float) -> None:
        """Take in a new read of the snapshots, made at ``now`` (epoch seconds)."""
        seen: dict[Pair, tuple[float, int, int]] = {}
        rates: dict[Pair, Rate] = {}
        read: dict[str | None, _Step] = {}
        for snapshot in snapshots:
            for stat in snapshot.groups:
                pair = (snapshot.hub, stat.addr)
                counts = (snapshot.at, stat.total_message_processed, stat.total_failed)
                seen[pair] = counts
                rates[pair] = rate = self._rate(pair, counts)
                for key in (stat.addr, None):
                    read.setdefault(key, _Step()).count(rate, stat)
                self._last_seen[stat.addr] = now
        self._seen, self.rates, self.snapshots = seen, rates, list(snapshots)
        self._remember(read, now)

    def _rate(self, pair: Pair, counts: tuple[float, int, int]) -> Rate:
        """A hub's group's rates between its last two announcements (by the hub's clock)."""
        before = self._seen.get(pair)
        if before is None:
            return Rate()
        if counts[0] <= before[0]:  # the same announcement as last time
            return self.rates.get(pair, Rate())
        # counters only fall when the hub started again (same name): count from zero then
        processed = counts[1] - before[1] if counts[1] >= before[1] else counts[1]
        failed = counts[2] - before[2] if counts[2] >= before[2] else counts[2]
        elapsed = counts[0] - before[0]
        return Rate(processed / elapsed, failed / elapsed)

    def _remember(self, read: dict[str | None, _Step], now: float) -> None:
        """Add this read to the step under way; once a step has passed, its means become a point
        of each group's history (and of all groups'). A group no hub has run for a window is
        forgotten; one that has no hub now gets points of nothing meanwhile."""
        for group in [g for g, at in self._last_seen.items() if at < now - self.window]:
            del self._last_seen[group]
            self._history.pop(group, None)
            self._step.pop(group, None)
        for key in [None, *self._last_seen]:
            self._step.setdefault(key, _Step()).add(read.get(key, _Step()))
        if self._step_started is None:
            self._step_started = now
        if now - self._step_started < self.step:
            return
        for key, step in self._step.items():
            history = self._history.setdefault(key, deque(maxlen=self._points))
            history.append(step.point(now))
            while history[0].at <= now - self.window:  # steps run late: a window, not a count
                history.popleft()
        self._step, self._step_started = {}, now

    def history(self, group: str | None = None) -> list[Point]:
        """The points of the last window, oldest first: of ``group``, or of every group."""
        return list(self._history.get(group, ()))

    def stats_of(self, group: str) -> list[tuple[HubSnapshot, WorkerStat]]:
        """The hubs that run ``group`` now, with its stat there."""
        return [(s, stat) for s in self.snapshots for stat in s.groups if stat.addr == group]


class _Step:
    """One read of a group over its hubs, or the reads of one step added up."""

    def __init__(self) -> None:
        self.rate = Rate()
        self.reads = 0
        self.workers = 0
        self.buffered = 0

    def count(self, rate: Rate, stat: WorkerStat) -> None:
        """Count one hub's group into this read."""
        self.rate += rate
        self.workers += stat.total_current_workers
        self.buffered += stat.buffered

    def add(self, read: _Step) -> None:
        """Add one read (an empty one: the group had no hub then) to this step."""
        self.rate += read.rate
        self.reads += 1
        self.workers, self.buffered = read.workers, read.buffered

    def point(self, now: float) -> Point:
        reads = max(self.reads, 1)
        return Point(now, self.rate.processed / reads, self.rate.failed / reads, self.workers, self.buffered)

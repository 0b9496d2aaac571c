"""`Schedule`: one periodic publish, validated at the boundary, and its ticks, sans I/O.

Ticks are integers: milliseconds since the epoch (UTC). ``every`` ticks are aligned to the
epoch (every multiple of the period), so every hub computes the same ticks whenever it started;
``cron`` ticks are those of a 5-field expression in the schedule's time zone, computed by
cronsim, which keeps to Debian cron's DST rules: a time skipped by a spring-forward runs at the
first time after the gap, a time repeated by a fall-back runs once (its first occurrence), and
expressions firing more often than hourly (``*/15 * * * *``) fire through both copies of a
repeated hour, as they would by the wall clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import orjson
from cronsim import CronSim, CronSimError

from ..errors import ConfigurationError
from ..message import JSON, check_topic

CatchUp = Literal["latest", "all", "none"]
CATCH_UPS: tuple[CatchUp, ...] = ("latest", "all", "none")

# counting cron ticks back: the first window (ms), doubled up to the longest
_FIRST_SPAN, _LONGEST_SPAN = 3_600_000, 400 * 86_400_000


class ScheduleOptions(TypedDict, total=False):
    """The keyword arguments of `ActionHub.schedule` besides ``topic`` (see `Schedule`)."""

    payload: JSON
    cron: str | None
    every: float | timedelta | None
    tz: str
    catch_up: CatchUp
    jitter: float


def _topic(_: object, __: attrs.Attribute[str], value: str) -> None:
    check_topic(value)


def _name(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ConfigurationError(f"a schedule's name must be 1 to 200 characters, not {value!r}")


def _payload(_: object, __: attrs.Attribute[JSON], value: JSON) -> None:
    try:
        orjson.dumps(value)
    except TypeError as error:
        raise ConfigurationError(f"a schedule's payload must be JSON: {error}") from None


def _every(value: float | timedelta | None) -> int | None:
    """``every`` in whole milliseconds (seconds or a timedelta)."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ConfigurationError(f"every must be seconds (a number) or a timedelta, not {value!r}")
    ms = round(seconds * 1000)
    if ms < 1:
        raise ConfigurationError(f"every must be > 0 (at least a millisecond), not {value!r}")
    return ms


def _zone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"unknown time zone {value!r} (an IANA name such as 'Europe/London')"
        ) from None


def _cron(value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value.split()) != 5:
        raise ConfigurationError(f"cron must be a 5-field expression ('m h dom mon dow'), not {value!r}")
    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        raise ConfigurationError(f"invalid cron expression {value!r}: {error}") from None


@attrs.frozen
class Schedule:
    """Publish ``payload`` to ``topic`` at every tick of ``cron`` (5 fields, in zone ``tz``) or
    ``every`` (seconds or a timedelta, aligned to the epoch): exactly once per tick, cluster-wide.

    ``catch_up``: the ticks missed while no hub ran are published ``"latest"`` (one, for the
    most recent), ``"all"`` (up to `MAX_CATCH_UP`, the most recent) or ``"none"``.
    ``jitter``: each tick is published up to that many seconds late (never past the next tick),
    by a delay drawn from the name and the tick, the same on every hub."""

    name: str = attrs.field(validator=_name)
    topic: str = attrs.field(validator=_topic)
    payload: JSON = attrs.field(default=None, validator=_payload)
    cron: str | None = attrs.field(default=None)
    every: float | timedelta | None = None
    tz: str = "UTC"
    catch_up: CatchUp = "latest"
    jitter: float = 0.0
    every_ms: int | None = attrs.field(init=False, repr=False, eq=False)
    zone: ZoneInfo = attrs.field(init=False, repr=False, eq=False)
    digest: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"schedule {self.name!r}: give exactly one of cron= and every=")
        _cron(self.cron)
        if self.catch_up not in CATCH_UPS:
            raise ConfigurationError(f"catch_up must be one of {', '.join(CATCH_UPS)}, not {self.catch_up!r}")
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not (math.isfinite(self.jitter) and self.jitter >= 0)
        ):
            raise ConfigurationError(f"jitter must be seconds >= 0, not {self.jitter!r}")
        object.__setattr__(self, "every_ms", _every(self.every))
        object.__setattr__(self, "zone", _zone(self.tz))
        # what is owed: a change here starts the schedule afresh (no catch-up of ticks another
        # definition owed). catch_up and jitter only say how, so hubs of a rolling deploy that
        # differ in those alone still share the schedule's state.
        definition = [self.topic, self.payload, self.cron, self.every_ms, self.tz]
        object.__setattr__(self, "digest", hashlib.sha256(orjson.dumps(definition)).hexdigest()[:16])

    @property
    def period(self) -> str:
        """The cron expression, or ``every Ns``."""
        if self.cron is not None:
            return self.cron
        assert self.every_ms is not None
        return f"every {self.every_ms / 1000:g}s"

    # ------------------------------------------------------------------ ticks

    def next_tick(self, after: int) -> int:
        """The first tick strictly after ``after`` (ms)."""
        if self.every_ms is not None:
            return (after // self.every_ms + 1) * self.every_ms
        return next(self._cron_after(after))

    def ticks_back(self, until: int) -> Iterator[int]:
        """Ticks at or before ``until`` (ms), newest first."""
        if self.every_ms is not None:
            tick = until // self.every_ms * self.every_ms
            while True:
                yield tick
                tick -= self.every_ms
        else:
            yield from self._cron_back(until)

    def ticks_between(self, after: int, until: int, *, cap: int) -> tuple[list[int], int]:
        """The ticks in (``after``, ``until``], oldest first, at most the ``cap`` most recent,
        and how many older ones were left out (-1: more than can be counted quickly)."""
        newest: list[int] = []
        for tick in self.ticks_back(until):
            if tick <= after:
                break
            if len(newest) == cap:
                return newest[::-1], self._count_older(after, tick)
            newest.append(tick)
        return newest[::-1], 0

    def _count_older(self, after: int, upto: int) -> int:
        """How many ticks lie in (``after``, ``upto``] (-1 past ten thousand)."""
        if self.every_ms is not None:
            return upto // self.every_ms - after // self.every_ms
        for count, tick in enumerate(self.ticks_back(upto)):
            if tick <= after:
                return count
            if count > 10_000:
                break
        return -1

    def _cron_after(self, after: int) -> Iterator[int]:
        """The cron ticks strictly after ``after``, in order. cronsim works on naive wall time:
        started in the second copy of a repeated hour, it can first return times of the first
        copy (Debian's fix-up for a fixed minute and hour), which are in the past: skipped."""
        assert self.cron is not None
        newest = after
        for moment in CronSim(self.cron, datetime.fromtimestamp(after / 1000, tz=self.zone)):
            at = round(moment.timestamp() * 1000)
            if at > newest:
                newest = at
                yield at

    def _cron_back(self, until: int) -> Iterator[int]:
        """The cron ticks at or before ``until``, newest first: counted forward (as `next_tick`
        does, so both agree) through ever longer windows going back. cronsim's reverse
        iteration is not used: it misses ticks across a repeated hour."""
        end, span = until, _FIRST_SPAN
        while True:
            start = end - span
            window = []
            for at in self._cron_after(start):
                if at > end:
                    break
                window.append(at)
            yield from reversed(window)
            end, span = start, min(span * 2, _LONGEST_SPAN)

    def delay(self, tick: int) -> int:
        """How late (ms) tick ``tick`` is published: ``jitter`` scaled by a fraction drawn from the
        name and the tick (the same on every hub), kept short of the next tick so ticks stay in
        order."""
        if not self.jitter:
            return 0
        room = min(self.jitter * 1000, self.next_tick(tick) - tick - 1)
        draw = hashlib.blake2b(f"{self.name}\0{tick}".encode(), digest_size=8).digest()
        return max(0, int(int.from_bytes(draw, "big") / 2**64 * room))


def tick_time(tick: int) -> str:
    """``tick`` (ms) as ISO 8601 in UTC: the ``scheduled_at`` header."""
    return datetime.fromtimestamp(tick / 1000, tz=UTC).isoformat(timespec="milliseconds")

"""Rate and concurrency limits of a group, shared by every hub of the group on one bus.

A message held back by a limit waits before its run: it keeps its delivery, burns no attempt and
is no failure. ``rate_limit="N/s"`` (or ``/m``, ``/h``) is a token bucket of ``rate_burst``
tokens refilled at N per unit; ``concurrency_limit=N`` is a semaphore of N slots, released
however the run ends. A transport may keep both for every hub of the group (`Bus.limiter`);
otherwise they live here, one per bus object, on the trio clock: the ``memory://`` semantics.
"""

from __future__ import annotations

import math
import re
import weakref
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..bus.base import Bus

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*([smh])\s*$")


def parse_rate(text: str) -> float:
    """Tokens per second of a rate limit written ``"N/s"``, ``"N/m"`` or ``"N/h"`` (N > 0, a
    decimal allowed); a `ConfigurationError` naming the reason otherwise."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(f"rate_limit must look like '100/s', '30/m' or '0.5/h', not {text!r}")
    per_second = float(match.group(1)) / _UNITS[match.group(2)]
    if not (per_second > 0 and math.isfinite(per_second)):
        raise ConfigurationError(f"rate_limit must be above 0, not {text!r}")
    return per_second


def default_burst(per_second: float) -> int:
    """The bucket's size unless given: a tenth of a second's worth, at least 1, so a measured
    rate over a few seconds stays within a few percent of the limit."""
    return max(1, int(per_second * 0.1))


@attrs.frozen
class LimitSpec:
    """A group's limits, as the bus is asked for them."""

    rate: float | None  # tokens per second
    burst: int
    concurrency: int | None


class Limiter(Protocol):
    """The limits of one (topic, consumer group), shared by the group's runs."""

    async def acquire(self) -> bool:
        """Wait until a run may start (a token and a slot); True if it had to wait."""
        ...

    def release(self) -> None:
        """A run that acquired ended (however it ended): give its slot back."""
        ...


class LocalLimiter:
    """Both limits in one process, on the trio clock."""

    def __init__(self, spec: LimitSpec) -> None:
        self.spec = spec
        self._tokens = float(spec.burst)
        self._stamp: float | None = None
        self._slots = None if spec.concurrency is None else trio.Semaphore(spec.concurrency)

    def _take_token(self) -> float:
        """Take a token if there is one (0.0), else say how long until the next one."""
        rate = self.spec.rate
        assert rate is not None
        now = trio.current_time()
        if self._stamp is not None:
            self._tokens = min(float(self.spec.burst), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    async def acquire(self) -> bool:
        waited = False
        if self._slots is not None:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                waited = True
                await self._slots.acquire()
        try:
            if self.spec.rate is not None:
                while (wait := self._take_token()) > 0.0:
                    waited = True
                    await trio.sleep(wait)
        except BaseException:  # cancelled while waiting for a token: the slot goes back
            self.release()
            raise
        return waited

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


_LOCAL: weakref.WeakKeyDictionary[Bus, dict[tuple[str, str], LocalLimiter]] = weakref.WeakKeyDictionary()


def limiter_for(
    bus: Bus, topic: str, group: str, rate_limit: str | None, rate_burst: int | None, concurrency: int | None
) -> Limiter | None:
    """The limiter of consumer group ``group`` on ``topic`` (None: the group has no limits):
    the bus's own if it keeps one for every hub, else one shared by the hubs on this bus object."""
    if rate_limit is None and concurrency is None:
        return None
    rate = None if rate_limit is None else parse_rate(rate_limit)
    burst = rate_burst if rate_burst is not None else (1 if rate is None else default_burst(rate))
    spec = LimitSpec(rate, burst, concurrency)
    shared = bus.limiter(topic, group, spec)
    if shared is not None:
        return shared
    local = _LOCAL.setdefault(bus, {})
    limiter = local.get((topic, group))
    if limiter is None or limiter.spec != spec:
        limiter = local[(topic, group)] = LocalLimiter(spec)
    return limiter

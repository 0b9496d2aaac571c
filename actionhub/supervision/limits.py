"""Rate and concurrency limits of a group, shared by every hub of the group on one bus.

A message held back by a limit waits before its run: it keeps its delivery, burns no attempt and
is no failure. ``rate_limit="N/s"`` (or ``/m``, ``/h``) is GCRA (a token bucket of ``rate_burst``
tokens refilled at N per unit); ``concurrency_limit=N`` is a semaphore of N slots, released
however the run ends. A transport may keep both for every hub of the group (`Bus.limiter`);
otherwise they live here, one per bus object, on the trio clock: the ``memory://`` semantics.

The runner sees a group's limiter through its `Gate`: a run takes a slot and a token, in that
order, at once if both are at hand (no coroutine, no I/O), else it waits in its worker; a stop of
the workers ends every wait, and the waiting delivery goes back to the front of the buffer.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from ..bus.limits import Limiter as Limiter
from ..bus.limits import LimitSpec as LimitSpec
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


class LocalLimiter:
    """Both limits in one process, on the trio clock. Waiters are served in arrival order."""

    def __init__(self, spec: LimitSpec) -> None:
        self.spec = spec
        self.gates: set[Gate] = set()  # of the groups attached to it now
        self._tat = -math.inf  # GCRA's theoretical arrival time of the next token
        self._queue = trio.Lock()  # FIFO: the oldest waiter takes the next token
        self._slots = None if spec.concurrency is None else trio.Semaphore(spec.concurrency)

    def _token_wait(self) -> float:
        """Take a token if one is due (0.0); else how long until one is."""
        now = trio.current_time()
        tat = max(self._tat, now)
        wait = tat - self.spec.tolerance - now
        if wait <= 0.0:
            self._tat = tat + self.spec.interval
            return 0.0
        return wait

    def try_acquire(self) -> bool:
        slots = self._slots
        if slots is not None:
            if slots.value == 0:  # also when someone waits: a release hands its slot over
                return False
            slots.acquire_nowait()
        if self.spec.rate is not None and (self._queue.locked() or self._token_wait() > 0.0):
            if slots is not None:
                slots.release()
            return False
        return True

    async def acquire(self, held: Callable[[], None]) -> None:
        told = False
        slots = self._slots
        if slots is not None:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                told = True
                held()
                await slots.acquire()
        try:
            if self.spec.rate is not None and (self._queue.locked() or self._token_wait() > 0.0):
                if not told:
                    held()
                async with self._queue:
                    while (wait := self._token_wait()) > 0.0:  # noqa: ASYNC110 - a time, not an event
                        await trio.sleep(wait)
        except BaseException:  # cancelled while waiting for a token: the slot goes back
            self.release()
            raise

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()


_LOCAL: weakref.WeakKeyDictionary[Bus, dict[tuple[str, str], LocalLimiter]] = weakref.WeakKeyDictionary()


def limit_spec(rate_limit: str | None, rate_burst: int | None, concurrency: int | None) -> LimitSpec | None:
    """A group's limits from its configuration (None: it has none)."""
    if rate_limit is None and concurrency is None:
        return None
    rate = None if rate_limit is None else parse_rate(rate_limit)
    burst = rate_burst if rate_burst is not None else (1 if rate is None else default_burst(rate))
    return LimitSpec(rate, burst, concurrency)


def limiter_for(bus: Bus, topic: str, group: str, spec: LimitSpec, gate: Gate | None = None) -> Limiter:
    """The limiter of consumer group ``group`` on ``topic``: the bus's own if it keeps one for
    every hub, else one shared by the hubs on this bus object (a `ConfigurationError` if one of
    them, attached now, not ``gate``, has other limits)."""
    shared = bus.limiter(topic, group, spec)
    if shared is not None:
        return shared
    local = _LOCAL.setdefault(bus, {})
    limiter = local.get((topic, group))
    if limiter is not None and limiter.spec != spec:
        if limiter.gates - {gate}:  # two specs would split the limit silently
            raise ConfigurationError(
                f"consumer group {group!r} of {topic!r} is attached on this bus with other limits "
                f"({limiter.spec.describe()}) than these ({spec.describe()}): its hubs must agree"
            )
        limiter = None  # nobody uses the old one now
    if limiter is None:
        limiter = local[(topic, group)] = LocalLimiter(spec)
    return limiter


class Gate:
    """A group's limiter as its runs pass it; counts the runs held back (``throttled``, each
    once). `stop_waiting` ends every wait under way (the workers are stopping)."""

    def __init__(self, limiter: Limiter) -> None:
        self.throttled = 0
        self._waits: set[trio.CancelScope] = set()
        self._local: LocalLimiter | None = None  # the in-process limiter it is counted in
        self.use(limiter)

    def use(self, limiter: Limiter) -> None:
        """Pass through ``limiter`` from now on (the group attached to a bus again)."""
        self.detach()
        self.limiter = limiter
        if isinstance(limiter, LocalLimiter):
            self._local = limiter
            limiter.gates.add(self)
        # the limiter's own methods: one call per run on the way in and out, nothing more
        self.try_enter: Callable[[], bool] = limiter.try_acquire  # pass at once if both are at hand
        self.leave: Callable[[], None] = limiter.release  # the run that passed ended

    async def enter(self) -> bool:
        """Wait to pass; False if `stop_waiting` ended the wait (nothing is held then)."""
        scope = trio.CancelScope()
        self._waits.add(scope)
        try:
            with scope:
                await self.limiter.acquire(self._held)
                return True
            return False
        finally:
            self._waits.discard(scope)

    def _held(self) -> None:
        self.throttled += 1

    def stop_waiting(self) -> None:
        for scope in self._waits:
            scope.cancel()

    def detach(self) -> None:
        """The group no longer reads from the bus: another spec may take the limiter's place."""
        if self._local is not None:
            self._local.gates.discard(self)
            self._local = None


def gate_for(bus: Bus, topic: str, group: str, config: LimitedConfig, gate: Gate | None) -> Gate | None:
    """The gate of a group configured with ``config`` reading ``topic`` as ``group`` on ``bus``:
    ``gate`` (its current one, kept with its counters) on the limiter of this bus; None
    without limits."""
    spec = limit_spec(config.rate_limit, config.rate_burst, config.concurrency_limit)
    if spec is None:
        return None
    limiter = limiter_for(bus, topic, group, spec, gate)
    if gate is None:
        return Gate(limiter)
    gate.use(limiter)
    return gate


class LimitedConfig(Protocol):
    """The fields of a group's configuration that say its limits (`GroupConfig` has them)."""

    @property
    def rate_limit(self) -> str | None: ...
    @property
    def rate_burst(self) -> int | None: ...
    @property
    def concurrency_limit(self) -> int | None: ...

"""A consumer group's rate and concurrency limits in Redis, shared by every hub of the group.

The rate is GCRA on the Redis clock (`scripts.LIMIT`: one key holds when the next token is due);
the concurrency limit is a distributed semaphore: a sorted set of slots scored by when they
lapse (Redis time + ``visibility_timeout``), renewed with the hub's message leases, so the slots
of a hub that dies lapse within its visibility timeout.

A round trip per run would cost more than the runs of a no-op action, so a hub's limiter talks to
Redis for all its runs at once, from one task: every run waiting then is asked for in one script
call, which also gives back the slots released since the last one. While nobody else waits for
the group's slots, a hub keeps the slots its runs release for its next runs, and takes tokens a
little ahead of need (a lease that grows while the hub keeps using it all, kept at most
`TOKEN_TTL`): a run then passes without a round trip. Once other hubs wait for a slot, a hub
gives each slot back as its run ends and gets at most its share (the limit over the hubs
waiting). Slots kept but not needed for `SYNC` seconds go back to Redis.
"""

from __future__ import annotations

import logging
import math
import secrets
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..limits import LimitSpec
from . import scripts
from .scripts_slots import register

if TYPE_CHECKING:
    from .streams import RedisStreamsBus

log = logging.getLogger("actionhub.redis")

#: Seconds a hub keeps tokens it took ahead of need; unused, they are dropped.
TOKEN_TTL = 0.25
#: Seconds between a hub's calls while it keeps slots or tokens without need for a call (it
#: learns that other hubs wait, and gives back what it has not used meanwhile).
SYNC = 0.1
#: Seconds between the calls of a hub whose runs wait for a slot.
POLL = 0.05
#: Milliseconds a hub stays counted as waiting for a slot after it last asked in vain.
WAITING_WINDOW = 1000
#: The most tokens, and slots, a hub takes ahead of need in one call.
MAX_TOKEN_LEASE = 1024
MAX_SLOT_LEASE = 32


class _Waiter:
    """A run waiting for a slot and a token."""

    __slots__ = ("done", "held", "slot", "token")

    def __init__(self, held: Callable[[], None] | None) -> None:
        self.done = trio.Event()
        self.held = held  # called (then None) once a call to Redis leaves the run waiting
        self.slot: str | None = None
        self.token = False


class RedisLimiter:
    """The limits of one (topic, consumer group) on one hub's bus (`actionhub.bus.limits.Limiter`)."""

    def __init__(self, bus: RedisStreamsBus, topic: str, group: str, spec: LimitSpec) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.spec = spec
        self.hub = f"{bus.consumer}/{secrets.token_hex(4)}"  # unique even for two hubs in a process
        self.keys = [*bus.keys.limits(topic, group), bus.keys.limit_reply(topic, group, self.hub)]
        self._calls = 0  # numbers this hub's calls: a call resent after a lost reply is known
        self._warned = False  # that another hub of the group has other limits
        self._script = register(bus.client, bus.keys, scripts.LIMIT)
        self._next_slot = 0  # slots are named <hub>:<number>
        self._held: set[str] = set()  # every slot this hub holds in Redis (renewed)
        self._free: list[str] = []  # held, no run uses it
        self._busy: list[str] = []  # held by runs under way
        self._releases: list[str] = []  # to give back with the next call
        self._low_free = 0  # fewest free slots for SYNC seconds: never needed, they go back
        self._idle_since = -math.inf
        self._tokens = 0
        self._tokens_until = -math.inf
        self._returns = 0  # tokens to give back with the next call
        self._token_lease = 1
        self._slot_lease = 1
        self._waiters: deque[_Waiter] = deque()
        self._contended = False  # other hubs wait for a slot
        self._scarce = False  # the last call left runs waiting
        self._due = math.inf  # trio time of the next call
        self._kicked = trio.Event()
        self._topping_up = False
        assert bus._nursery is not None, "the bus is open while groups attach"
        bus._nursery.start_soon(bus.keep_running, f"limits of {topic}/{group}", self._step)

    # ------------------------------------------------------------------ the runs' side

    @property
    def spec(self) -> LimitSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: LimitSpec) -> None:
        self._spec = spec
        self._described = spec.describe()  # sent with each call: another hub's differing warns
        self._rated = spec.rate is not None  # (read per run: plain attributes)
        self._slotted = spec.concurrency is not None

    def try_acquire(self) -> bool:
        if self._waiters:
            return False
        slotted = self._slotted
        if slotted and not self._free:
            return False
        if self._rated:
            tokens = self._tokens
            if tokens <= 0:  # (tokens kept past TOKEN_TTL are dropped by the next call)
                return False
            self._tokens = tokens = tokens - 1
            if tokens * 2 < self._token_lease and not (self._topping_up or self._scarce):
                self._topping_up = True  # take the next tokens before these run out
                self._kick()
        if slotted:
            free = self._free
            self._busy.append(free.pop())
            if len(free) < self._low_free:
                self._low_free = len(free)
        return True

    async def acquire(self, held: Callable[[], None]) -> None:
        waiter = _Waiter(held)
        self._waiters.append(waiter)
        self._assign()
        if not waiter.done.is_set():
            if not self._scarce:
                self._grow_leases()
                self._kick()
            try:
                await waiter.done.wait()
            except BaseException:
                self._forsake(waiter)
                raise

    def release(self) -> None:
        if not self._slotted:
            return
        slot = self._busy.pop()
        if self._contended:  # back to Redis now: other hubs wait for it
            self._held.discard(slot)
            self._releases.append(slot)
            self._kick()
            return
        self._free.append(slot)
        if self._waiters:
            self._assign()

    def _forsake(self, waiter: _Waiter) -> None:
        """A waiting run was cancelled: what it got goes back."""
        if waiter.done.is_set():  # served as it was cancelled
            if waiter.token:
                self._tokens += 1
            if waiter.slot is not None:
                self.release()
            return
        self._waiters.remove(waiter)
        if waiter.token:
            self._tokens += 1
        if waiter.slot is not None:
            self._free.append(waiter.slot)
            self._assign()

    def _assign(self) -> None:
        """Hand what this hub has (free slots, tokens) to the waiting runs, oldest first."""
        spec = self.spec
        if self._tokens and trio.current_time() > self._tokens_until:  # taken ahead, never needed
            self._returns += self._tokens
            self._tokens = 0
            self._token_lease = max(1, self._token_lease // 2)
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.slot is None and spec.concurrency is not None:
                if not self._free:
                    return
                waiter.slot = self._free.pop()
                self._low_free = min(self._low_free, len(self._free))
            if not waiter.token and spec.rate is not None:
                if self._tokens <= 0:
                    return
                self._tokens -= 1
                waiter.token = True
            self._waiters.popleft()
            if waiter.slot is not None:
                self._busy.append(waiter.slot)
            waiter.done.set()

    def _grow_leases(self) -> None:
        """Runs wait though Redis gave all it was asked for: ask for more at a time."""
        if self.spec.rate is not None:
            self._token_lease = min(self._token_lease * 2, MAX_TOKEN_LEASE, self.spec.burst)
        if self.spec.concurrency is not None:
            self._slot_lease = min(self._slot_lease * 2, MAX_SLOT_LEASE, self.spec.concurrency)

    # ------------------------------------------------------------------ the calls to Redis

    def _kick(self) -> None:
        """Call Redis now."""
        self._due = trio.current_time()
        self._kicked.set()

    async def _step(self) -> None:
        if trio.current_time() < self._due:
            with trio.move_on_at(self._due):
                await self._kicked.wait()
        self._kicked = trio.Event()
        self._due = math.inf
        try:
            await self._call()
        finally:
            self._topping_up = False

    async def _call(self) -> None:
        spec = self.spec
        self._assign()
        now = trio.current_time()
        both = spec.rate is not None and spec.concurrency is not None
        asked = list(self._waiters)
        want_slots = sum(1 for w in asked if w.slot is None) if spec.concurrency is not None else 0
        want_tokens = 0
        if spec.rate is not None:  # runs with a slot (or needing none) lacking a token
            want_tokens = sum(1 for w in asked if not w.token and (w.slot is not None or not both))
        firm_slots = want_slots
        if (asked or self._topping_up) and not (self._contended or self._scarce):  # ahead of need
            if spec.concurrency is not None:
                want_slots = max(want_slots, self._slot_lease - len(self._free))
            if spec.rate is not None:
                stock = self._tokens + (len(self._free) if both else 0)
                want_tokens = max(want_tokens, self._token_lease - stock)
        releases, self._releases = self._releases, []
        if now - self._idle_since >= SYNC and self._low_free > 0:  # kept a while, never needed
            idle = self._free[: self._low_free]
            del self._free[: self._low_free]
            self._held.difference_update(idle)
            releases += idle
        if now - self._idle_since >= SYNC:
            self._low_free, self._idle_since = len(self._free), now
        first = self._next_slot
        self._next_slot += want_slots
        returns, self._returns = self._returns, 0
        self._calls += 1
        args = self._args(want_tokens, want_slots, firm_slots, first, returns, releases)
        try:
            # resent as is after a lost reply (`common.call_async`): the script knows the call
            # by its number and answers it again, granting nothing twice
            (reply,) = await self.bus.run_scripts(
                [(self._script, self.keys, args)], what=f"limits of {self.topic}/{self.group}"
            )
        except BaseException:
            # owed still: with the next call (or they lapse); so are the slots this call may
            # have been granted unknown to us (removing a slot that is not there does nothing).
            # Its returns are not sent again: if it ran, they counted; lost, the rate only dips.
            self._releases[:0] = [*releases, *(f"{self.hub}:{first + i}" for i in range(want_slots))]
            self._due = trio.current_time()
            raise
        got_slots, got_tokens, wait_us, contended = (int(x) for x in reply[:4])
        if reply[4] and not self._warned:
            self._warned = True
            other = reply[4].decode() if isinstance(reply[4], bytes) else str(reply[4])
            log.warning(
                "%s/%s: another hub of the group has other limits (%s) than this one (%s): they "
                "share one rate and one set of slots unevenly; give every hub the same limits",
                self.topic,
                self.group,
                other,
                self._described,
            )
        now = trio.current_time()
        new = [f"{self.hub}:{first + i}" for i in range(got_slots)]
        self._held.update(new)
        self._free.extend(new)
        if got_tokens:
            self._tokens = (self._tokens if now <= self._tokens_until else 0) + got_tokens
            self._tokens_until = now + TOKEN_TTL
        self._contended = bool(contended)
        self._assign()
        if self._contended and self._free:  # others wait for a slot: keep none idle
            self._held.difference_update(self._free)
            self._releases.extend(self._free)
            self._free.clear()
        self._low_free = min(self._low_free, len(self._free))
        left = [w for w in asked if not w.done.is_set()]
        self._scarce = bool(left)
        for waiter in left:  # the limits hold these back
            if waiter.held is not None:
                waiter.held()
                waiter.held = None
        if self._releases or self._returns:
            self._due = now
        elif self._waiters:
            retry = math.inf
            if spec.concurrency is not None and any(w.slot is None for w in self._waiters):
                retry = POLL
            if spec.rate is not None and any(not w.token for w in self._waiters):
                retry = min(retry, max(wait_us / 1e6, 0.0005))
            self._due = min(self._due, now + retry)
        elif self._held or self._tokens:
            self._due = min(self._due, now + SYNC)

    def _args(
        self, tokens: int, slots: int, firm_slots: int, first: int, returns: int, releases: list[str]
    ) -> list[object]:
        spec = self.spec
        both = spec.rate is not None and spec.concurrency is not None
        return [
            f"{spec.interval * 1e6:.3f}",
            f"{spec.tolerance * 1e6:.3f}",
            spec.concurrency or 0,
            int(self.bus.options.visibility_timeout * 1000),
            WAITING_WINDOW,
            self.hub,
            len(self._held),
            tokens,
            slots,
            firm_slots,
            int(both),
            first,
            returns,
            self._calls,
            self._described,
            *releases,
        ]

    # ------------------------------------------------------------------ leases and closing

    def renew_call(self) -> tuple[list[str], list[object]] | None:
        """The keys and arguments of `scripts.LIMIT_RENEW` for the slots this hub holds."""
        if not self._held:
            return None
        return [self.keys[1]], [int(self.bus.options.visibility_timeout * 1000), *self._held]

    def held_slots(self) -> list[str]:
        """Every slot this hub holds or still owes Redis (given back at close)."""
        return [*self._held, *self._releases]


_LIMITERS: weakref.WeakKeyDictionary[RedisStreamsBus, dict[tuple[str, str], RedisLimiter]] = (
    weakref.WeakKeyDictionary()
)


def limiter_of(bus: RedisStreamsBus, topic: str, group: str, spec: LimitSpec) -> RedisLimiter:
    """The limiter of consumer group ``group`` on ``topic`` for the hub of ``bus`` (one per
    group and bus: a group back from a cool-down finds its slots and tokens)."""
    limiters = _LIMITERS.setdefault(bus, {})
    limiter = limiters.get((topic, group))
    if limiter is None:
        limiter = limiters[(topic, group)] = RedisLimiter(bus, topic, group, spec)
    limiter.spec = spec
    return limiter


async def renew_slots(bus: RedisStreamsBus) -> None:
    """Renew the concurrency slots of every limiter of ``bus`` for another visibility timeout,
    in one round trip (with the leases of its messages)."""
    limiters = list(_LIMITERS.get(bus, {}).values())
    calls = [(limiter, limiter.renew_call()) for limiter in limiters]
    held = [(limiter, call) for limiter, call in calls if call is not None]
    if not held:
        return
    script = register(bus.client, bus.keys, scripts.LIMIT_RENEW)
    replies = await bus.run_scripts(
        [(script, keys, args) for _, (keys, args) in held], what="renew concurrency slots"
    )
    for (limiter, _), lapsed in zip(held, replies, strict=True):
        if int(lapsed):
            log.warning(
                "%s/%s: %d concurrency slot(s) lapsed (this hub stalled longer than visibility_timeout); "
                "the group may run more than its concurrency_limit at once for a while",
                limiter.topic,
                limiter.group,
                int(lapsed),
            )


async def give_back_slots(bus: RedisStreamsBus) -> None:
    """The hub is closing: give back every slot it holds, at once (not at their lapse)."""
    limiters = _LIMITERS.pop(bus, {})
    commands = [
        ("ZREM", limiter.keys[1], *slots) for limiter in limiters.values() if (slots := limiter.held_slots())
    ]
    if commands:
        await bus.execute(commands, what="give back concurrency slots")

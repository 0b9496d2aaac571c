"""Firing a schedule's ticks exactly once across hubs: the seam's types and the decision itself,
sans I/O. `TickLedger` is what ``memory://`` keeps; `scripts.FIRE_TICKS` does the same in Redis,
atomically, on the Redis clock (keep the two in step).

A schedule's state is its definition's digest and ``last``, the newest tick fired or passed over.
A call offers ticks (ms since the epoch, oldest first):

* with none, it reads the state; no state, or another definition's, starts afresh at the bus's
  now (nothing before it is owed);
* ticks after the bus's now are refused (the caller's clock is ahead: it corrects it from `now`);
* of the others, those after ``last`` are new. An *overdue* tick (no hub fired it in time: all
  were down) follows ``catch_up``: ``latest`` publishes only the newest overdue one, ``all``
  every one, ``none`` none. A tick that is not overdue is published. ``last`` becomes the newest
  new tick;
* offered by a hub whose definition is not the stored one (two definitions live at once, during
  a rolling deploy), the stored ``last`` stays the floor: of the ticks after it, those not
  overdue and the newest are published (the older overdue ones were owed to the other definition:
  no catch-up), and the state becomes this definition's. So hubs of both definitions, taking
  turns, still publish each tick once. A mere read by such a hub leaves the state alone (it
  starts afresh at now): the other definition's hubs may still be firing a tick due before now.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..message import Message


@attrs.frozen
class Tick:
    """One tick offered to `Bus.fire_ticks`: its time, the message it publishes, and whether it is
    overdue (no hub fired it in time, so the schedule's ``catch_up`` decides)."""

    at: int
    message: Message
    overdue: bool = False


@attrs.frozen
class TicksFired:
    """What `Bus.fire_ticks` did."""

    #: the ticks this call published
    published: tuple[int, ...]
    #: the newest tick fired or passed over, by any hub (ms since the epoch)
    last: int
    #: the bus's clock (Redis's), seconds since the epoch
    now: float
    #: the state was started afresh (new schedule, or another definition's state)
    fresh: bool
    #: ticks refused because they are after the bus's now
    early: int


@attrs.frozen
class ScheduleState:
    """What the bus keeps of a schedule."""

    #: the digest of the definition the state belongs to
    digest: str
    #: the newest tick fired or passed over (or, started afresh, the time it started), ms
    last: int
    #: the newest tick published, ms (None: none since the state started)
    fired: int | None


def decide(
    stored: tuple[str, int] | None, digest: str, catch_up: str, ticks: Sequence[tuple[int, bool]], now: int
) -> tuple[list[int], int, bool, int]:
    """(indexes of ``ticks`` to publish, the new ``last``, fresh, early) for a schedule whose state
    is ``stored`` (digest, last); ``ticks`` are (ms, overdue), oldest first; ``now`` in ms."""
    due = [i for i, (at, _) in enumerate(ticks) if at <= now]
    early = len(ticks) - len(due)
    fresh = stored is None or stored[0] != digest
    if fresh and not ticks:
        return [], now, True, 0
    new = [i for i in due if stored is None or ticks[i][0] > stored[1]]
    if stored is None and not new:
        return [], now, True, early
    last = max([*([] if stored is None else [stored[1]]), *(ticks[i][0] for i in new)])
    if fresh:  # the other definition's missed ticks are not owed: no catch-up
        return [i for i in new if not ticks[i][1] or i == new[-1]], last, True, early
    overdue = [i for i in new if ticks[i][1]]
    keep = {"all": overdue, "latest": overdue[-1:]}.get(catch_up, [])
    return [i for i in new if i in keep or not ticks[i][1]], last, False, early


class TickLedger:
    """The schedules' states of one in-process bus."""

    def __init__(self) -> None:
        self._states: dict[str, ScheduleState] = {}

    def fire(
        self, name: str, digest: str, catch_up: str, ticks: Sequence[Tick], now: float
    ) -> tuple[list[Tick], TicksFired]:
        """The ticks to publish now, and the answer; the state is updated."""
        before = self._states.get(name)
        publish, last, fresh, early = decide(
            None if before is None else (before.digest, before.last),
            digest,
            catch_up,
            [(t.at, t.overdue) for t in ticks],
            int(now * 1000),
        )
        chosen = [ticks[i] for i in publish]
        fired = chosen[-1].at if chosen else (None if before is None else before.fired)
        if ticks or before is None:  # a read leaves another definition's state alone
            self._states[name] = ScheduleState(digest, last, fired)
        return chosen, TicksFired(tuple(t.at for t in chosen), last, now, fresh, early)

    def undo(
        self,
        name: str,
        before: ScheduleState | None,
        after: ScheduleState,
        failed: int,
        delivered: int | None,
    ) -> None:
        """A call of `fire` that changed the state from ``before`` to ``after`` could not publish
        tick ``failed`` (nor the later ones it chose): they are owed again. ``delivered``: the
        newest tick it did publish (those stay fired). Nothing changes if the state moved on since."""
        if self._states.get(name) != after:  # another call moved it on (a mere read leaves it equal)
            return
        if delivered is not None:
            self._states[name] = ScheduleState(after.digest, failed - 1, delivered)
        elif before is not None:
            self._states[name] = before
        else:
            del self._states[name]

    def states(self, names: Sequence[str] | None) -> dict[str, ScheduleState]:
        """The state of each of ``names`` (None: every schedule) that has one."""
        if names is None:
            return dict(self._states)
        return {name: self._states[name] for name in names if name in self._states}

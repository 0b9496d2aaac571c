"""What a group's supervisor handles, one at a time, and how a group's run ends."""

from __future__ import annotations

import attrs
import trio

from .escalation import Escalation
from .runner import Panic


@attrs.frozen
class Respawn:
    """A worker that panicked is due to be replaced (after its backoff)."""


@attrs.frozen
class Stop:
    """A graceful stop was asked for."""


@attrs.frozen
class Restart:
    """An operator asked for a restart of every worker (or for the end of a cool-down)."""


@attrs.frozen
class Escalate:
    """Asked from outside the supervisor (a master whose slaves exhausted its restart limit)."""

    escalation: Escalation


@attrs.frozen
class Suspend:
    """A slave's master cools down: stand down until `Resume`; ``stood_down`` is set once done."""

    stood_down: trio.Event


@attrs.frozen
class Resume:
    """A slave's master is back from its cool-down."""


Event = Panic | Respawn | Stop | Escalate | Restart | Suspend | Resume


@attrs.frozen
class GroupOutcome:
    """How a group's run ended: stopped on request, or escalated (then the owner removes it,
    and stops the whole hub if ``stops_hub``)."""

    escalation: Escalation | None = None
    stops_hub: bool = False

    @property
    def escalated(self) -> bool:
        return self.escalation is not None

"""What a bus is asked for when it keeps a group's rate and concurrency limits for every hub of
the group (`Bus.limiter`): the limits (`LimitSpec`) and the limiter its runs pass (`Limiter`).
How a group's configuration becomes a spec, and the in-process limiter, are
`actionhub.supervision.limits`'s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs


@attrs.frozen
class LimitSpec:
    """A group's limits, as the bus is asked for them."""

    rate: float | None  # tokens per second
    burst: int
    concurrency: int | None

    @property
    def interval(self) -> float:
        """Seconds between two tokens (GCRA's emission interval); 0 without a rate."""
        return 0.0 if self.rate is None else 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        """How far ahead of the schedule a token may be taken (GCRA's tau): burst - 1 intervals."""
        return (self.burst - 1) * self.interval

    def describe(self) -> str:
        """The limits as a group's configuration says them, for messages."""
        parts = [] if self.rate is None else [f"rate_limit={self.rate:g}/s", f"rate_burst={self.burst}"]
        if self.concurrency is not None:
            parts.append(f"concurrency_limit={self.concurrency}")
        return ", ".join(parts)


class Limiter(Protocol):
    """The limits of one (topic, consumer group), shared by the group's runs."""

    def try_acquire(self) -> bool:
        """Take a slot and a token if both are at hand now and nobody waits (no I/O, no wait)."""
        ...

    async def acquire(self, held: Callable[[], None]) -> None:
        """Wait for a slot and a token; call ``held`` once if a limit holds the run back (not
        for a wait on the broker's answer alone). Cancelled, it keeps nothing."""
        ...

    def release(self) -> None:
        """A run that acquired ended (however it ended): give its slot back."""
        ...

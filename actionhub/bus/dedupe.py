"""Deduplicated publishes: what a publish asks to be deduplicated by, checked at the boundary."""

from __future__ import annotations

import math

import attrs

from ..errors import ConfigurationError
from ..message import check_key

#: Seconds a dedupe key holds when the publisher names a key but no window.
DEFAULT_DEDUPE_FOR = 3600.0


@attrs.frozen
class Dedupe:
    """A second publish of ``key`` to the same topic within ``seconds`` writes nothing and
    returns the first message's id."""

    key: str
    seconds: float = DEFAULT_DEDUPE_FOR


def check_dedupe(key: str | None, seconds: float | None) -> Dedupe | None:
    """The `Dedupe` of a publish's ``dedupe_key`` and ``dedupe_for`` (None: not deduplicated);
    a `ConfigurationError` with the reason for bad input."""
    if key is None:
        if seconds is not None:
            raise ConfigurationError("dedupe_for needs a dedupe_key")
        return None
    try:
        check_key(key)
    except ConfigurationError as error:
        raise ConfigurationError(f"dedupe_{error}") from None
    if seconds is None:
        return Dedupe(key)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ConfigurationError(f"dedupe_for must be a number of seconds, not {seconds!r}")
    if seconds <= 0:
        raise ConfigurationError("dedupe_for must be > 0 seconds")
    return Dedupe(key, float(seconds))


class DedupeWindows:
    """memory://'s dedupe keys: (topic, key) -> (first id, trio time it lapses)."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], tuple[str, float]] = {}
        self._prune_at = 1024

    def first(self, topic: str, dedupe: Dedupe, message_id: str, now: float) -> str | None:
        """The first id published under ``dedupe`` within its window, or None (then
        ``message_id`` is the first, from ``now``)."""
        held = self._first.get((topic, dedupe.key))
        if held is not None and held[1] > now:
            return held[0]
        if len(self._first) >= self._prune_at:  # forget lapsed windows now and then, not per publish
            self._first = {k: v for k, v in self._first.items() if v[1] > now}
            self._prune_at = max(1024, 2 * len(self._first))
        self._first[(topic, dedupe.key)] = (message_id, now + dedupe.seconds)
        return None

"""Deduplicated publishes (what a publish asks to be deduplicated by, checked at the boundary) and
the unique message ids a resend on Redis looks for (see `actionhub.bus.redis.once`)."""

from __future__ import annotations

import itertools
import math
import os
import secrets

import attrs

from ..errors import ConfigurationError
from ..message import MAX_KEY_LENGTH

#: Seconds a dedupe key holds when the publisher names a key but no window.
DEFAULT_DEDUPE_FOR = 3600.0

#: The longest window (30 days): past that a typo (ms for s) is likelier than an intent.
MAX_DEDUPE_FOR = 30 * 86400.0


@attrs.frozen
class Dedupe:
    """A second publish of ``key`` to the same topic within ``seconds`` of the first writes
    nothing and returns the first message's id."""

    key: str
    seconds: float = DEFAULT_DEDUPE_FOR


def check_dedupe(key: str | None, seconds: float | None) -> Dedupe | None:
    """The `Dedupe` of a publish's ``dedupe_key`` and ``dedupe_for`` (None: not deduplicated);
    a `ConfigurationError` with the reason for bad input."""
    if key is None:
        if seconds is not None:
            raise ConfigurationError("dedupe_for needs a dedupe_key")
        return None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"dedupe_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters, not {key!r:.60}"
        )
    if seconds is None:
        return Dedupe(key)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ConfigurationError(f"dedupe_for must be a number of seconds, not {seconds!r}")
    if not 0 < seconds <= MAX_DEDUPE_FOR:
        raise ConfigurationError(f"dedupe_for must be > 0 and at most {MAX_DEDUPE_FOR:.0f} s, not {seconds}")
    return Dedupe(key, float(seconds))


class DedupeWindows:
    """memory://'s dedupe keys: (topic, key) -> (first id, trio time it lapses)."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], tuple[str, float]] = {}
        self._prune_at = 1024

    def claim(self, topic: str, dedupe: Dedupe, message_id: str, now: float) -> str | None:
        """The first id published under ``dedupe`` within its window, or None: then
        ``message_id`` is the first, from ``now`` (`release` it if its publish fails)."""
        held = self._first.get((topic, dedupe.key))
        if held is not None and held[1] > now:
            return held[0]
        if len(self._first) >= self._prune_at:  # forget lapsed windows now and then, not per publish
            self._first = {k: v for k, v in self._first.items() if v[1] > now}
            self._prune_at = max(1024, 2 * len(self._first))
        self._first[(topic, dedupe.key)] = (message_id, now + dedupe.seconds)
        return None

    def release(self, topic: str, dedupe: Dedupe, message_id: str) -> None:
        """Forget ``message_id``'s claim: its publish failed, so the next one is the first."""
        if self._first.get((topic, dedupe.key), ("",))[0] == message_id:
            del self._first[(topic, dedupe.key)]


# Bumped in a forked child: every `MessageIds` then draws a new producer before its next id.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class MessageIds:
    """Message ids ``<producer>-<counter>``: a random producer (48 bits) per object and a counter,
    without a syscall per id; thread-safe. A forked child draws a new producer before its first
    id: it must never repeat its parent's ids, which a resend's look for its first attempt
    (`actionhub.bus.redis.once`) would take for its own and write nothing."""

    def __init__(self) -> None:
        self._forks = -1
        self._state = ("", itertools.count(1))

    def __call__(self) -> str:
        forks = _forks
        if self._forks != forks:
            self._state = (secrets.token_hex(6), itertools.count(1))
            self._forks = forks  # after the new state: a thread that sees it uses that state
        producer, counter = self._state  # one tuple: a producer never pairs with another's counter
        return f"{producer}-{next(counter)}"

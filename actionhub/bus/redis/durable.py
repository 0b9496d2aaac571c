"""Writes confirmed by replicas (``durable=N``): the commands and checks, sans I/O.

Redis replicates asynchronously: a write the primary acknowledged is lost if the primary dies
before a replica has it. ``WAIT N timeout`` returns once N replicas have acknowledged the last
write *of its own connection*, or at the timeout with how many did. So a confirmed write is the
write and its ``WAIT`` on one connection, in one round trip: on the hub's trio-driven connection
for confirmed writes (a ``WAIT`` holds up every later command of its connection, so not the
shared one that reads and acks), or on a pooled redis-py connection (the thread path), or in
one pipeline (not a transaction: ``WAIT`` inside ``MULTI`` does not wait) in the clients. While
the hub's ``WAIT`` is under way, its writes share the next one instead (`replication.Replication`).

A ``WAIT`` covers every write that Redis made before its connection's last one (Redis replicates
in order), but a script may write nothing (a resend that finds its first attempt's entry, a
deduplicated publish), and a write's reply may come on another connection than the ``WAIT``'s (a
round). So such a ``WAIT`` follows a `mark`: one ``SET`` that always writes, made after the write
it confirms. (Redis 7.0 counts any command as the connection's last write, but documents ``WAIT``
as waiting for the last write; the mark holds either way.)

Fewer replicas than asked, within ``durable_timeout``: `NotReplicated`. A publish treats it as a
lost reply (the write is on the primary, and perhaps on no replica): it resends, which writes
nothing if its entry is there and writes it again if a failover lost it, then waits again.

The clients send these commands themselves; the hub's bus: `actionhub.bus.redis.replication`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
import redis
from redis._parsers.base import BaseParser

from ...errors import ConfigurationError
from ..base import check_durable
from .keys import Keys

if TYPE_CHECKING:
    from .wire import Command

#: Milliseconds a mark lives: only its write matters, never its value.
MARK_TTL_MS = 60_000

#: Why ``mode=pubsub`` takes no ``durable``.
NO_PUBSUB = "mode=pubsub stores nothing a replica could confirm (use mode=stream)"


@attrs.frozen
class Confirm:
    """A write that counts only once ``replicas`` replicas confirm it; ``mark`` (`mark_command`)
    follows it if it may write nothing (a script)."""

    replicas: int
    mark: Command | None = None


class NotReplicated(redis.RedisError):
    """``WAIT`` confirmed fewer replicas than asked within ``durable_timeout``: the write is on
    the primary, maybe on no replica (a failover now could lose it)."""

    def __init__(self, confirmed: int, wanted: int, timeout: float) -> None:
        super().__init__(
            f"{confirmed} of {wanted} replica(s) confirmed it within durable_timeout={timeout:g} s"
        )
        self.confirmed = confirmed
        self.wanted = wanted


def wait_command(replicas: int, timeout: float) -> Command:
    """``WAIT replicas timeout`` (its reply: how many replicas have the connection's writes)."""
    return ("WAIT", replicas, max(1, round(timeout * 1000)))


def publish_confirm(keys: Keys, topic: str, replicas: int, target: str | None = None) -> Confirm | None:
    """How a publish to ``topic`` is confirmed: by ``replicas`` replicas (its mark in case it is a
    script); None if by none. ``target``: the stream written (the cluster layout puts the mark
    in its slot, so on the node the write and its ``WAIT`` go to)."""
    return Confirm(replicas, mark_command(keys, topic, target)) if replicas else None


def mark_command(keys: Keys, topic: str | None = None, target: str | None = None) -> Command:
    """One write that always replicates (see the module's docstring), next to ``topic``'s keys
    (None: the one of the rounds of confirmations, `Replication`); ``target``: the stream written
    (`Keys.durable_mark`)."""
    return ("SET", keys.durable_mark(topic, target), "1", "PX", MARK_TTL_MS)


def confirm_tail(replicas: int, timeout: float, mark: Command | None) -> list[Command]:
    """What follows a write to confirm it: the mark if given, then ``WAIT``."""
    return [*((mark,) if mark is not None else ()), wait_command(replicas, timeout)]


def confirmed_count(replies: Sequence[Any], tail: Sequence[Command]) -> tuple[list[Any], int]:
    """The replies of the write (those of ``tail`` cut off) and the replicas ``WAIT`` counted."""
    return list(replies[: len(replies) - len(tail)]), int(replies[-1])


def check_replicated(confirmed: int, wanted: int, timeout: float) -> None:
    """`NotReplicated` unless ``confirmed`` replicas are ``wanted`` or more."""
    if confirmed < wanted:
        raise NotReplicated(confirmed, wanted, timeout)


def raise_nested(reply: Any) -> Any:
    """An ``EXEC`` reply sent outside redis-py's transactions: raise the first error in it, as
    redis-py would."""
    for item in reply if isinstance(reply, list) else ():
        if isinstance(item, redis.RedisError):
            raise item
        if isinstance(item, Exception):  # hiredis's, on the trio-driven connection
            raise cast(Exception, BaseParser.parse_error(str(item)))  # type: ignore[no-untyped-call]
    return reply


def check_options(
    mode: str, durable: int, durable_timeout: float, *, socket_timeout: float, timeout_is: str = "block + 10"
) -> None:
    """`ConfigurationError` for ``durable`` options that cannot work with the rest of the URL;
    ``socket_timeout``: the connections', which is ``timeout_is``."""
    check_durable(durable)
    if durable and mode == "pubsub":
        raise ConfigurationError(f"durable needs mode=stream: {NO_PUBSUB}")
    if not (durable_timeout > 0 and math.isfinite(durable_timeout)):
        raise ConfigurationError(f"durable_timeout must be a finite number > 0, not {durable_timeout!r}")
    if durable_timeout >= socket_timeout:
        raise ConfigurationError(
            f"durable_timeout must be under the socket timeout ({timeout_is}: {socket_timeout:g} s), "
            f"not {durable_timeout!r}: every WAIT it let run longer would fail as a lost connection"
        )

"""The Redis calls an operation (`actionhub.client._ops`) yields, and what every driver does with
them alike: EVALSHA of a script, a confirmed write's pipeline, the resends of a `Once`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import attrs

from ..bus.redis import once
from ..bus.redis.durable import (
    Confirm,
    NotReplicated,
    check_replicated,
    confirm_tail,
    confirmed_count,
    raise_nested,
)
from ..bus.redis.options import is_transient

T = TypeVar("T")


@attrs.frozen
class Command:
    """One Redis command."""

    args: tuple[Any, ...]


@attrs.frozen
class Transaction:
    """Commands run in one MULTI/EXEC: all or none; with ``confirm``, `NotReplicated` unless that
    many replicas confirm it (the transaction and its WAIT go in one pipeline: `confirmed_call`)."""

    commands: tuple[tuple[Any, ...], ...]
    confirm: Confirm | None = None


@attrs.frozen
class Script:
    """A Lua script of `actionhub.bus.redis.scripts` (EVALSHA, loaded on first use)."""

    source: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@attrs.frozen
class Pipeline:
    """Commands sent together, not atomically: on a cluster each to the node of its keys (so
    they may touch any slots); their replies, in order. Sent again whole after loading ``load``
    (Lua sources) if one is an EVALSHA of a script not loaded: each must be idempotent."""

    commands: tuple[tuple[Any, ...], ...]
    load: tuple[str, ...] = ()


@attrs.frozen
class Scan:
    """Every key matching ``pattern`` (SCAN; on a cluster, of every primary)."""

    pattern: str


@attrs.frozen
class Once:
    """A publish that must not be written twice: ``first`` is sent; should its connection break or
    time out (Redis may have run it, the reply lost), a driver sends ``again(seconds since first
    was sent)`` instead after each of `RETRY_DELAYS`, within ``publish_timeout``: a script that
    writes only if the first attempt did not (see `actionhub.bus.redis.once`)."""

    first: Command | Script
    again: Callable[[float], Script]
    #: replicas that must confirm it (a driver sends each attempt with `confirmed_call`); one
    #: confirmed by fewer is resent like one whose reply was lost
    confirm: Confirm | None = None


Call = Command | Transaction | Script | Pipeline | Scan | Once
Op = Generator[Call, Any, T]


@functools.cache
def sha_of(source: str) -> str:
    """The SHA1 that EVALSHA names ``source`` by."""
    return hashlib.sha1(source.encode()).hexdigest()


def evalsha(call: Script) -> tuple[Any, ...]:
    """The EVALSHA command of ``call`` (the drivers send it themselves: redis-py's `Script`
    objects cost a publish about a fifth of its time)."""
    return ("EVALSHA", sha_of(call.source), len(call.keys), *call.keys, *call.args)


#: Seconds before each resend of a `Once` whose connection broke or timed out (redis-py's
#: clients are made without retries of their own: it would resend anything as it was).
RETRY_DELAYS = (0.05, 0.25, 1.0)


def resendable(error: BaseException) -> bool:
    """Whether a `Once` that failed with ``error`` may be resent (the connection broke or timed
    out, too few replicas confirmed it, or too few are attached to write at all)."""
    return isinstance(error, NotReplicated) or is_transient(error)


def confirmed_call(
    call: Command | Script | Transaction, confirm: Confirm, timeout: float, *, load: bool = False
) -> tuple[list[tuple[Any, ...]], Callable[[list[Any]], Any]]:
    """The commands of one confirmed write, for one pipeline (not a transaction: WAIT inside
    MULTI does not wait): the write, the mark after a script (it may write nothing:
    `actionhub.bus.redis.durable`), WAIT; and what makes the write's reply of their replies
    (`NotReplicated` if too few replicas confirmed it). ``load``: the script's ``SCRIPT LOAD``
    first (the write failed with NoScriptError: not loaded yet, or Redis restarted)."""
    mark = None
    if isinstance(call, Transaction):
        writes = [("MULTI",), *call.commands, ("EXEC",)]
    elif isinstance(call, Script):
        writes, mark = [evalsha(call)], confirm.mark
        if load:
            writes.insert(0, ("SCRIPT", "LOAD", call.source))
    else:
        writes = [call.args]
    tail = confirm_tail(confirm.replicas, timeout, mark)

    def reply(replies: list[Any]) -> Any:
        written, count = confirmed_count(replies, tail)
        check_replicated(count, confirm.replicas, timeout)
        return raise_nested(written[-1]) if isinstance(call, Transaction) else written[-1]

    return [*writes, *(tuple(command) for command in tail)], reply


def script_call(source: str, build: Callable[[int], tuple[list[str], once.Args]], back: int) -> Script:
    """The `Script` of ``source`` with the keys and arguments ``build(back)`` (once.py's builders)."""
    keys, args = build(back)
    return Script(source, tuple(keys), tuple(args))


def resend_of(source: str, build: Callable[[int], tuple[list[str], once.Args]]) -> Callable[[float], Script]:
    """`Once.again` for the script ``source``: it looks back the seconds since the first attempt."""
    return lambda elapsed: script_call(source, build, once.look_back(elapsed))


def abandon(op: Op[Any], error: BaseException) -> None:
    """Tell ``op`` that its call failed with ``error`` and that it ends there, so that what it
    holds (a span) ends failed; what it makes of the error is the driver's business."""
    with contextlib.suppress(BaseException):
        op.throw(error)
    op.close()

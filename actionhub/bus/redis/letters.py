"""Dead-lettering a consumer group's stream entries: the letters its subscription hands the
acker, and the commands that file them in ``<prefix>dead:<topic>`` and ack their entries, in one
transaction (a letter is filed and acked, or neither).

In the cluster layout a transaction touches one slot: a letter of the topic's main stream (in
the slot of its dead letters) keeps its transaction; a letter of a partition stream (another
slot) is filed first and its entry acked only once it is: a failure between leaves the entry
pending, delivered again, and maybe dead-lettered twice, never lost (docs/design/cluster.md §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from .by_slot import same_slot
from .durable import raise_nested
from .entries import dead_letter_fields
from .layout import ClusterKeys
from .options import pipelined
from .replication import confirmed_move
from .wire import Command

if TYPE_CHECKING:
    from .connection import RedisConnection


@attrs.frozen
class Letter:
    """A stream entry on its way to the dead letters."""

    stream: str
    entry_id: bytes
    raw: bytes
    reason: str
    attempts: int = 1
    error: str | None = None
    traceback: str | None = None


def malformed_letter(stream: str, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> Letter:
    """The letter of an entry that holds no valid message: its message, else its fields as JSON."""
    raw = fields.get(b"message")
    if raw is None:
        raw = orjson.dumps(
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        )
    return Letter(stream, entry_id, raw, f"malformed: {reason}")


def settle_commands(
    bus: RedisConnection, topic: str, group: str, acks: dict[str, list[bytes]], letters: list[Letter]
) -> list[Command]:
    """The letters into the dead letters of ``topic``, then ``group``'s acks of the acked entries
    and of the letters' entries."""
    owed = {stream: list(ids) for stream, ids in acks.items()}
    commands: list[Command] = [_file(bus, topic, group, letter) for letter in letters]
    for letter in letters:
        owed.setdefault(letter.stream, []).append(letter.entry_id)
    commands += [("XACK", stream, group, *ids) for stream, ids in owed.items()]
    return commands


def _file(bus: RedisConnection, topic: str, group: str, letter: Letter) -> Command:
    """The XADD that files ``letter`` in ``topic``'s dead letters."""
    fields = dead_letter_fields(
        letter.raw,
        topic=topic,
        group=group,
        reason=letter.reason,
        attempts=letter.attempts,
        error=letter.error,
        traceback=letter.traceback,
    )
    flat: list[str | bytes] = [part for pair in fields.items() for part in pair]
    return ("XADD", bus.keys.dead(topic), "MAXLEN", "~", bus.options.max_dead_letters, "*", *flat)


@attrs.frozen
class Settlement:
    """What one group owes Redis, in the cluster layout's order: each of ``moves`` a transaction
    of one slot (letters filed with the acks of their entries), then ``files`` (letters of
    entries in another slot than the dead letters), then ``acks`` (theirs included)."""

    moves: list[list[Command]]
    files: list[Command]
    acks: list[Command]


def settlement(
    bus: RedisConnection, topic: str, group: str, acks: dict[str, list[bytes]], letters: list[Letter]
) -> Settlement:
    """`settle_commands` split by slot (the cluster layout)."""
    dead = bus.keys.dead(topic)
    together: list[Letter] = []
    apart: list[Letter] = []
    for letter in letters:
        (together if same_slot(bus.keys, letter.stream, dead) else apart).append(letter)
    moves = [settle_commands(bus, topic, group, {}, together)] if together else []
    owed = {stream: list(ids) for stream, ids in acks.items()}
    for letter in apart:
        owed.setdefault(letter.stream, []).append(letter.entry_id)
    return Settlement(
        moves,
        [_file(bus, topic, group, letter) for letter in apart],
        [("XACK", stream, group, *ids) for stream, ids in owed.items()],
    )


def settle(client: Any, settlements: Sequence[Settlement]) -> None:
    """Send ``settlements`` in their order (blocking: run it in a thread). A failure part way
    leaves the rest to a resend of all: what was sent is sent again (an XACK twice is harmless;
    a letter may be filed twice), nothing is acked before its letter is filed."""
    for move in (move for s in settlements for move in s.moves):
        _transaction(client, move)
    for step in ([c for s in settlements for c in s.files], [c for s in settlements for c in s.acks]):
        if step:
            pipelined(client, step)


async def settle_on(bus: RedisConnection, settlements: Sequence[Settlement], *, what: str) -> None:
    """`settle` on the bus's trio-driven connection (a cluster's): one round trip per step, the
    moves' transactions, then the files, then the acks, each step retried through an outage."""
    blocks = [[("MULTI",), *move, ("EXEC",)] for s in settlements for move in s.moves]
    if blocks:
        replies = await bus.execute([c for block in blocks for c in block], what=what)
        at = 0
        for block in blocks:
            at += len(block)
            raise_nested(replies[at - 1])
    for step in ([c for s in settlements for c in s.files], [c for s in settlements for c in s.acks]):
        await bus.execute(step, what=what)


def _transaction(client: Any, commands: Sequence[Command]) -> None:
    with client.pipeline(transaction=True) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()


async def move_to_dead(bus: RedisConnection, topic: str, group: str, letter: Letter) -> None:
    """File ``letter`` and ack its entry: in one transaction (confirmed by the URL's ``durable``
    replicas: `confirmed_move`), or, for a partition's entry in the cluster layout, one after the
    other (`Settlement`)."""
    if isinstance(bus.keys, ClusterKeys) and not same_slot(bus.keys, letter.stream, bus.keys.dead(topic)):
        plan = settlement(bus, topic, group, {}, [letter])
        if bus.wire is not None:
            await settle_on(bus, [plan], what="dead-letter")
        else:
            await bus.call(lambda: settle(bus.client, [plan]), what="dead-letter")
        return
    commands = settle_commands(bus, topic, group, {}, [letter])
    if bus.options.durable:
        *_, done = await confirmed_move(bus, [("MULTI",), *commands, ("EXEC",)], what="dead-letter")
        raise_nested(done)
        return
    await bus.call(lambda: _transaction(bus.client, commands), what="dead-letter")

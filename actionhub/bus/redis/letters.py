"""Dead-lettering a consumer group's stream entries: the letters its subscription hands the
acker, and the commands that file them in ``<prefix>dead:<topic>`` and ack their entries, in one
transaction (a letter is filed and acked, or neither)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import orjson

from .durable import raise_nested
from .entries import dead_letter_fields
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
    commands: list[Command] = []
    for letter in letters:
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
        dead = bus.keys.dead(topic)
        commands.append(("XADD", dead, "MAXLEN", "~", bus.options.max_dead_letters, "*", *flat))
        owed.setdefault(letter.stream, []).append(letter.entry_id)
    commands += [("XACK", stream, group, *ids) for stream, ids in owed.items()]
    return commands


async def move_to_dead(bus: RedisConnection, commands: list[Command]) -> None:
    """`settle_commands` in one transaction (confirmed by the URL's ``durable`` replicas:
    `confirmed_move`)."""
    if bus.options.durable:
        *_, done = await confirmed_move(bus, [("MULTI",), *commands, ("EXEC",)], what="dead-letter")
        raise_nested(done)
        return

    def move() -> None:
        with bus.client.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()

    await bus.call(move, what="dead-letter")

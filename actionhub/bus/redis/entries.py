"""The fields of stream entries, delayed members and dead letters, sans I/O (the envelope
itself is `actionhub.message`): shared by the hub's transports and every client."""

from __future__ import annotations

import contextlib
import time

import attrs
import orjson

from ...errors import MalformedMessage
from ...message import Message, decode
from ..base import DeadLetter

#: Entries per round trip (one MULTI/EXEC) of a publish of many messages.
PUBLISH_BATCH = 1000


def encode_entry(message: Message, max_bytes: int) -> bytes:
    """The wire-format envelope of ``message`` (`TypeError` if its payload is not JSON,
    `ValueError` past ``max_bytes``): what goes in the ``message`` field of a stream entry."""
    try:
        raw = message.encode()
    except TypeError as exc:
        raise TypeError(f"payload is not JSON-serialisable: {exc}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"message is {len(raw)} bytes, over the limit of {max_bytes}")
    return raw


def delayed_member(kind: str, target: str, group: str, entry: bytes) -> bytes:
    """A member of the delayed set: ``[kind, target, group, entry]``; kind ``x`` adds ``entry`` to
    stream ``target`` (for consumer ``group`` only, if not ""), kind ``p`` publishes it on channel
    ``target`` (see `MOVE_DUE`)."""
    return orjson.dumps([kind, target, group, entry.decode()])


def dead_letter_fields(
    raw: bytes,
    *,
    topic: str,
    group: str,
    reason: str,
    attempts: int,
    error: str | None,
    traceback: str | None,
) -> dict[str, bytes | str]:
    """The fields of an entry of ``<prefix>dead:<topic>``."""
    return {
        "message": raw,
        "topic": topic,
        "group": group,
        "reason": reason,
        "error": error or "",
        "traceback": traceback or "",
        "attempts": str(attempts),
        "failed_at": repr(time.time()),
    }


def dead_letter_of(topic: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    """A `DeadLetter` from an entry of ``<prefix>dead:<topic>``; a malformed message is kept as
    received, its payload the raw text."""
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    raw = fields.get(b"message", b"")
    try:
        message = decode(topic, raw, max_bytes=len(raw) + 1)
    except MalformedMessage:
        message = Message(topic, raw.decode(errors="replace"), id=entry)
    error = fields.get(b"error", b"").decode(errors="replace")
    traceback = fields.get(b"traceback", b"").decode(errors="replace")
    return DeadLetter(
        message,
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        error=error or None,
        traceback=traceback or None,
        attempts=int(fields.get(b"attempts", b"1")),
        group=fields.get(b"group", b"").decode(errors="replace") or None,
        at=float(fields.get(b"failed_at", b"0")),
        id=entry,
    )


@attrs.frozen
class Requeued:
    """A dead letter going back: its entry fields (a first attempt again, for the group that
    dead-lettered it) and its ordering key (its partition, if the topic has some)."""

    fields: dict[str, bytes | str]
    key: str | None


def requeued(topic: str, fields: dict[bytes, bytes]) -> Requeued:
    raw = fields.get(b"message", b"")
    key = None
    with contextlib.suppress(MalformedMessage):  # if malformed, requeued as it came
        message = decode(topic, raw, max_bytes=len(raw) + 1)
        raw, key = attrs.evolve(message, attempt=1).encode(), message.key
    entry: dict[str, bytes | str] = {"message": raw}
    group = fields.get(b"group", b"").decode()
    if group:
        entry["group"] = group
    return Requeued(entry, key)


def control_document(command: bytes, reply_to: str) -> bytes:
    """An operator command as published on `Keys.control`: the command and where to answer."""
    return orjson.dumps({**orjson.loads(command), "reply_to": reply_to})

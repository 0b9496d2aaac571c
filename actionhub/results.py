"""Results and status of messages: the public record and its JSON format (sans-I/O).

One place for the record format shared by the hub's buses and the clients. Records are JSON
only: a stored record that is not a JSON object of the known shape is an error, never
unpickled or evaluated.
"""

from __future__ import annotations

from typing import Any, Literal, cast, get_args

import attrs
import orjson

from .errors import ActionHubError

State = Literal["pending", "running", "retrying", "done", "dead", "unknown"]
STATES: tuple[str, ...] = get_args(State)
FINAL: frozenset[str] = frozenset({"done", "dead"})

#: How much longer than ``keep_result`` an unfinished record lives (a message may wait long).
UNFINISHED_GRACE = 86_400.0


class MessageDead(ActionHubError):
    """``result(id)`` of a message that was dead-lettered: it has no result, and never will."""

    def __init__(self, status: MessageStatus) -> None:
        super().__init__(f"message {status.id!r} is dead: {status.reason} ({status.error})")
        self.status = status


class InvalidStatusRecord(ActionHubError, ValueError):
    """A stored status record is not the JSON this module writes (it is never evaluated)."""


@attrs.frozen
class MessageStatus:
    """Where one message stands, for a topic with a ``keep_result`` group: ``state`` (``unknown``:
    no record, never kept or expired), ``attempt`` (the run's number; while retrying, the next
    one's) and ``next_attempt_at`` (epoch seconds) while retrying, ``at`` when the state was
    recorded (epoch seconds), ``reason``/``error`` when dead, ``result`` when done (decoded JSON)."""

    id: str
    state: State
    topic: str | None = None
    group: str | None = None
    attempt: int | None = None
    next_attempt_at: float | None = None
    at: float | None = None
    reason: str | None = None
    error: str | None = None
    result: Any = None

    @property
    def final(self) -> bool:
        """Done or dead: the state will not change (until the record expires)."""
        return self.state in FINAL


def unknown(message_id: str) -> MessageStatus:
    """The status of a message no record is kept for."""
    return MessageStatus(message_id, "unknown")


def pending_of(message_id: str, topic: str, at: float) -> MessageStatus:
    """The record a publish writes: published at ``at`` (epoch seconds), not started yet."""
    return MessageStatus(message_id, "pending", topic=topic, at=at)


def encode(status: MessageStatus) -> bytes:
    """The JSON record of ``status`` (``id`` is the key's, not stored); a ``result`` that is not
    JSON raises `TypeError` saying so."""
    record: dict[str, Any] = {"state": status.state}
    for name in ("topic", "group", "attempt", "next_attempt_at", "at", "reason", "error"):
        value = getattr(status, name)
        if value is not None:
            record[name] = value
    if status.state == "done":
        record["result"] = status.result
    try:
        return orjson.dumps(record)
    except TypeError as exc:
        raise TypeError(f"the action's return value is not JSON-serialisable: {exc}") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "topic": (str,),
    "group": (str,),
    "attempt": (int,),
    "next_attempt_at": (int, float),
    "at": (int, float),
    "reason": (str,),
    "error": (str,),
}


def decode(message_id: str, raw: bytes | str | None) -> MessageStatus:
    """The `MessageStatus` a stored record says (``unknown`` for none); raises
    `InvalidStatusRecord` for anything but a JSON object of the known shape."""
    if raw is None:
        return unknown(message_id)
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidStatusRecord(f"status record of {message_id!r} is not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("state") not in STATES:
        raise InvalidStatusRecord(f"status record of {message_id!r} has no valid state")
    fields: dict[str, Any] = {}
    for name, types in _TYPES.items():
        value = record.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, types):
                raise InvalidStatusRecord(f"status record of {message_id!r}: bad {name} {value!r}")
            fields[name] = value
    return MessageStatus(message_id, cast(State, record["state"]), result=record.get("result"), **fields)


#: A record's place in its message's fate within one attempt (see `rank`).
_ORDER = {"pending": 0, "retrying": 1, "running": 2, "done": 3, "dead": 3}


def rank(state: str, attempt: int | None) -> int:
    """Where a record of ``state`` at ``attempt`` stands in its message's fate: a write of a lower
    rank than the stored record's is refused (a late write from a slow or partitioned hub never
    undoes a later state, say a stale ``retrying`` landing after the next attempt's ``done``).
    ``scripts.WRITE_STATUS`` computes the same for the stored record; keep the two in step."""
    return (attempt or 0) * 4 + _ORDER[state]


def ttl(keep_result: float, state: str) -> float:
    """How long a record in ``state`` lives: final ones ``keep_result``, others a day longer."""
    return keep_result if state in FINAL else keep_result + UNFINISHED_GRACE

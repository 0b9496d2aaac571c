"""The message envelope (wire format v1) and its validation."""

from __future__ import annotations

import re
import time
from functools import cache
from importlib import resources
from typing import Any

import attrs
import orjson

from .errors import ConfigurationError, MalformedMessage

#: JSON values as they come off the wire.
JSON = Any

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

#: A topic names a stream key and appears in SCAN patterns: visible characters, no glob characters.
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+=-]{0,199}")

_ENVELOPE_KEYS = frozenset({"id", "payload", "headers", "reply_to", "created_at", "attempt", "key"})

#: The longest ordering key (in characters) an envelope may carry.
MAX_KEY_LENGTH = 1024


def _check_headers(_: object, __: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError("headers must map str to str")


@attrs.frozen(slots=True)
class Message:
    """One message on a topic: the decoded envelope plus where it was read from."""

    topic: str
    payload: JSON
    id: str = ""
    headers: dict[str, str] = attrs.field(factory=dict, validator=_check_headers)
    reply_to: str | None = None
    created_at: float = attrs.field(factory=time.time)
    attempt: int = 1
    #: the ordering key: messages of one key run one at a time, in publish order, in an
    #: ordered group (see docs/ordering.md); None: no order
    key: str | None = None

    def envelope(self) -> dict[str, JSON]:
        """The wire-format v1 envelope of this message (the topic is where it is sent)."""
        doc: dict[str, JSON] = {"id": self.id, "payload": self.payload, "created_at": self.created_at}
        if self.headers:
            doc["headers"] = self.headers
        if self.reply_to is not None:
            doc["reply_to"] = self.reply_to
        if self.attempt != 1:
            doc["attempt"] = self.attempt
        if self.key is not None:
            doc["key"] = self.key
        return doc

    def encode(self) -> bytes:
        """Serialise to the JSON envelope of wire format v1."""
        return orjson.dumps(self.envelope())


def check_topic(topic: str) -> str:
    """``topic`` if it is a valid topic name, else a `ConfigurationError` saying what is allowed."""
    if not TOPIC_PATTERN.fullmatch(topic):
        raise ConfigurationError(
            f"invalid topic {topic!r}: use 1 to 200 letters, digits and _ . : / @ + = - "
            "(starting with a letter, digit or _)"
        )
    return topic


def decode(
    topic: str, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, default_id: str = ""
) -> Message:
    """Parse a wire-format v1 envelope; raise `MalformedMessage` saying what is wrong.
    ``default_id`` (the transport's own id, say) is used when the envelope has none."""
    if len(raw) > max_bytes:
        raise MalformedMessage(f"message is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedMessage(f"envelope must be a JSON object, not {type(doc).__name__}")
    if "payload" not in doc:
        raise MalformedMessage("envelope has no 'payload'")
    if not doc.keys() <= _ENVELOPE_KEYS:
        raise MalformedMessage(f"envelope has unknown keys: {sorted(doc.keys() - _ENVELOPE_KEYS)}")
    msg_id = doc.get("id", default_id)
    headers = doc.get("headers", {})
    reply_to = doc.get("reply_to")
    created_at = doc.get("created_at")
    if created_at is None:
        created_at = time.time()
    attempt = doc.get("attempt", 1)
    key = doc.get("key")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH):
        raise MalformedMessage(f"'key' must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    if not isinstance(msg_id, str):
        raise MalformedMessage("'id' must be a string")
    msg_id = msg_id or default_id
    if not isinstance(headers, dict) or (
        headers and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise MalformedMessage("'headers' must be an object of string to string")
    if reply_to is not None and not isinstance(reply_to, str):
        raise MalformedMessage("'reply_to' must be a string")
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)):
        raise MalformedMessage("'created_at' must be a number (epoch seconds)")
    if isinstance(attempt, float) and attempt.is_integer():
        attempt = int(attempt)  # JSON has one number type: 2.0 is the integer 2
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise MalformedMessage("'attempt' must be an integer >= 1")
    return Message(
        topic=topic,
        payload=doc["payload"],
        id=msg_id,
        headers=headers,
        reply_to=reply_to,
        created_at=float(created_at),
        attempt=attempt,
        key=key,
    )


def check_key(key: str | None) -> str | None:
    """``key`` if it can be an ordering key, else a `ConfigurationError` (what `decode` would
    refuse on the way in is refused on the way out)."""
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH):
        raise ConfigurationError(f"key must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key


@cache
def json_schema() -> dict[str, JSON]:
    """The JSON Schema (draft 2020-12) of the wire-format v1 envelope, as shipped in the package."""
    schema: dict[str, JSON] = orjson.loads(
        resources.files(__package__).joinpath("schemas/message-v1.json").read_bytes()
    )
    return schema

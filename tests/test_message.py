"""Wire format v1: encode/decode round trips, and every malformed input is a clear MalformedMessage."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actionhub import ConfigurationError, MalformedMessage, Message
from actionhub.message import check_topic, decode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(
    payload=json_values,
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
    reply_to=st.none() | st.text(min_size=1),
    attempt=st.integers(1, 100),
)
def test_encode_decode_round_trip(
    payload: object, headers: dict[str, str], reply_to: str | None, attempt: int
) -> None:
    message = Message("t", payload, id="1-0", headers=headers, reply_to=reply_to, attempt=attempt)
    assert decode("t", message.encode()) == message


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_garbage_is_malformed_never_a_crash(raw: bytes | str) -> None:
    try:
        message = decode("t", raw)
    except MalformedMessage as error:
        assert str(error)
    else:
        assert isinstance(message, Message)


@given(json_values)
def test_any_json_document_is_a_message_or_malformed(doc: object) -> None:
    try:
        decode("t", orjson.dumps(doc))
    except MalformedMessage:
        assert not (isinstance(doc, dict) and "payload" in doc and doc.keys() <= {"payload"})


def test_minimal_envelope_from_another_language() -> None:
    message = decode("orders", b'{"payload": {"id": 7}}')
    assert (message.topic, message.payload, message.attempt, message.headers) == ("orders", {"id": 7}, 1, {})
    assert message.reply_to is None and message.created_at > 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"payload"', "must be a JSON object, not str"),
        (b'{"id": "1"}', "no 'payload'"),
        (b'{"payload": 1, "paylaod": 2}', "unknown keys: ['paylaod']"),
        (b'{"payload": 1, "id": 5}', "'id' must be a string"),
        (b'{"payload": 1, "headers": {"a": 1}}', "'headers' must be an object of string to string"),
        (b'{"payload": 1, "headers": []}', "'headers' must be an object"),
        (b'{"payload": 1, "reply_to": 3}', "'reply_to' must be a string"),
        (b'{"payload": 1, "created_at": "yesterday"}', "'created_at' must be a number"),
        (b'{"payload": 1, "created_at": true}', "'created_at' must be a number"),
        (b'{"payload": 1, "attempt": 0}', "'attempt' must be an integer >= 1"),
        (b'{"payload": 1, "attempt": 1.5}', "'attempt' must be an integer >= 1"),
    ],
)
def test_malformed_envelopes_say_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode("t", raw)


def test_size_limit() -> None:
    raw = orjson.dumps({"payload": "x" * 100})
    assert decode("t", raw, max_bytes=len(raw)).payload == "x" * 100
    with pytest.raises(MalformedMessage, match=f"{len(raw)} bytes, over the limit of {len(raw) - 1}"):
        decode("t", raw, max_bytes=len(raw) - 1)


@pytest.mark.parametrize("topic", ["orders", "orders.charge", "a/slaves/b", "t:1", "user@host", "x_y-z+w=v"])
def test_valid_topics(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", " orders", "a b", "work*", "a?", "[x]", "-leading", "é", "x" * 201, "a\nb"]
)
def test_invalid_topics_are_refused_with_what_is_allowed(topic: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid topic"):
        check_topic(topic)

"""The JSON Schema shipped for wire format v1 accepts exactly what `decode` accepts."""

from __future__ import annotations

import jsonschema
import orjson
from hypothesis import given
from hypothesis import strategies as st

from actionhub import MalformedMessage
from actionhub.message import decode, json_schema

VALIDATOR = jsonschema.Draft202012Validator(json_schema())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    scalars | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
envelope_keys = st.sampled_from(
    ["payload", "id", "headers", "reply_to", "created_at", "attempt", "key", "extra"]
)
# right types and wrong ones for every key, so both sides get exercised
field_values = json_values | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2)
envelopes = st.dictionaries(envelope_keys, field_values, max_size=6) | json_values


def test_the_schema_itself_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert json_schema()["required"] == ["payload"]


@given(envelopes)
def test_schema_and_decode_agree(document: object) -> None:
    schema_accepts = VALIDATOR.is_valid(document)
    try:
        decode("t", orjson.dumps(document))
    except MalformedMessage:
        decode_accepts = False
    else:
        decode_accepts = True
    assert schema_accepts == decode_accepts, document


def test_examples() -> None:
    valid = {
        "payload": {"id": 7},
        "headers": {"source": "billing"},
        "reply_to": "actionhub:reply:x",
        "attempt": 2,
    }
    assert VALIDATOR.is_valid(valid)
    assert VALIDATOR.is_valid({"payload": None, "created_at": 1795000000.5})
    assert VALIDATOR.is_valid({"payload": None, "created_at": None, "key": "order-42"})
    assert VALIDATOR.is_valid({"payload": None, "key": None})
    for invalid in [
        {},
        {"payload": 1, "attempt": 0},
        {"payload": 1, "headers": {"a": 1}},
        {"payload": 1, "x": 2},
        {"payload": 1, "key": ""},
        {"payload": 1, "key": 42},
        [1],
    ]:
        assert not VALIDATOR.is_valid(invalid)

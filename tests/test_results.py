"""Results and status: the sans-I/O record format (actionhub.results)."""

from __future__ import annotations

import pytest

from actionhub.errors import ConfigurationError
from actionhub.results import InvalidStatusRecord, MessageStatus, decode, encode, ttl
from actionhub.supervision.policy import GroupConfig


def test_record_round_trip_each_state() -> None:
    for status in (
        MessageStatus("m1", "pending", topic="t", at=1.0),
        MessageStatus("m1", "running", topic="t", group="g", attempt=1, at=2.0),
        MessageStatus("m1", "retrying", topic="t", group="g", attempt=1, next_attempt_at=5.5, at=3.0),
        MessageStatus("m1", "done", topic="t", group="g", attempt=2, at=4.0, result={"ok": [1, 2]}),
        MessageStatus(
            "m1", "dead", topic="t", group="g", attempt=3, at=5.0, reason="max_attempts", error="E"
        ),
    ):
        assert decode("m1", encode(status)) == status
    assert decode("m1", None).state == "unknown"


def test_records_are_never_unpickled() -> None:
    import pickle

    with pytest.raises(InvalidStatusRecord):
        decode("m1", pickle.dumps({"state": "done"}))
    with pytest.raises(InvalidStatusRecord):
        decode("m1", b'{"state": "eval"}')
    with pytest.raises(InvalidStatusRecord):
        decode("m1", b'{"state": "done", "attempt": "1"}')


def test_non_json_result_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        encode(MessageStatus("m1", "done", result=object()))


def test_ttl_and_keep_result_validation() -> None:
    assert ttl(10, "done") == 10 and ttl(10, "pending") == 10 + 86_400
    assert GroupConfig(keep_result=5).keep_result == 5
    for bad in (0, -1, float("inf")):
        with pytest.raises(ConfigurationError, match="keep_result"):
            GroupConfig(keep_result=bad)

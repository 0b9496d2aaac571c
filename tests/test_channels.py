"""`Channel`, the bus's thread-read pub/sub subscription, against a fake redis-py client."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from actionhub.bus.redis.channels import Channel


class _PubSub:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.closed = False

    def subscribe(self, channel: str) -> None:
        if self.fail:
            raise redis.ConnectionError("refused")

    def close(self) -> None:
        self.closed = True


class _Client:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.made: list[_PubSub] = []

    def pubsub(self, **options: Any) -> _PubSub:
        made = _PubSub(fail=len(self.made) < self.failures)
        self.made.append(made)
        return made


def test_a_subscribe_retried_after_a_failure_closes_the_failed_subscription() -> None:
    client = _Client(failures=2)
    channel = Channel(client, "control")
    for _ in range(2):  # as the bus's retries do
        with pytest.raises(redis.ConnectionError):
            channel.subscribe()
    channel.subscribe()
    assert [made.closed for made in client.made] == [True, True, False]
    channel.close()
    assert client.made[-1].closed

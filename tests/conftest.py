from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from actionhub.testing import EscalationLog, RedisServer


@pytest.fixture
def escalations() -> EscalationLog:
    return EscalationLog()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session. Without the binary the Redis tests skip,
    unless ACTIONHUB_REQUIRE_REDIS=1 (CI sets it): then they fail."""
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        if os.environ.get("ACTIONHUB_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis tests cannot run: {exc}", pytrace=False)
        pytest.skip(f"Redis tests skipped: {exc}")
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL with a key prefix of this test's own: no test sees another's keys."""
    return f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:8]}:"

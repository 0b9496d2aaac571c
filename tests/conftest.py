from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from actionhub.testing import EscalationLog, RedisServer
from tests.servers import private_redis


@pytest.fixture
def escalations() -> EscalationLog:
    return EscalationLog()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session."""
    with private_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL with a key prefix of this test's own: no test sees another's keys."""
    return f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:8]}:"

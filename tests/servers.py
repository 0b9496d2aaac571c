"""A private redis-server for tests: skipped without the binary, failed instead under CI."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from actionhub.testing import RedisServer


@contextmanager
def private_redis(**options: Any) -> Iterator[RedisServer]:
    """A running `RedisServer`, stopped and removed afterwards. Without the binary the test
    skips, unless ACTIONHUB_REQUIRE_REDIS=1 (CI sets it): then it fails."""
    try:
        server = RedisServer(**options)
    except FileNotFoundError as exc:
        if os.environ.get("ACTIONHUB_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis tests cannot run: {exc}", pytrace=False)
        pytest.skip(f"Redis tests skipped: {exc}")
    with server:
        yield server


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

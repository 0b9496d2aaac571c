"""Private redis-servers and clusters for tests: skipped without the binary, failed instead under CI."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actionhub.testing import RedisCluster, RedisSentinels, RedisServer

T = TypeVar("T")


@contextmanager
def private_redis(**options: Any) -> Iterator[RedisServer]:
    """A running `RedisServer`, stopped and removed afterwards. Without the binary the test
    skips, unless ACTIONHUB_REQUIRE_REDIS=1 (CI sets it): then it fails."""
    with _or_skip(RedisServer, **options) as server:
        yield server


@contextmanager
def private_sentinels(**options: Any) -> Iterator[RedisSentinels]:
    """A running `RedisSentinels` (a primary, a replica, three sentinels), stopped and removed
    afterwards; skipped or failed without the binary as `private_redis` is."""
    with _or_skip(RedisSentinels, **options) as deployment:
        yield deployment


@contextmanager
def private_cluster(**options: Any) -> Iterator[RedisCluster]:
    """A running `RedisCluster` (3 primaries and 3 replicas unless ``options`` say otherwise),
    stopped and removed afterwards; skipped or failed without the binaries, as `private_redis`."""
    with _or_skip(RedisCluster, **options) as cluster:
        yield cluster


def _or_skip(make: Callable[..., T], **options: Any) -> T:
    try:
        return make(**options)
    except FileNotFoundError as exc:
        if os.environ.get("ACTIONHUB_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis tests cannot run: {exc}", pytrace=False)
        pytest.skip(f"Redis tests skipped: {exc}")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tls_redis(directory: Path) -> tuple[RedisServer, Path]:
    """A (not yet started) redis-server that also listens with TLS, and its CA file, with a
    certificate for 127.0.0.1 made in ``directory``. TLS 1.2: over TLS 1.3, redis-py's pool can
    take the session tickets a server sends after the handshake for unread data on a fresh
    connection and fail it ("Connection not ready"; README, Buses)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = [directory / name for name in ("cert.pem", "key.pem", "ca.pem")]
    cert.cert_chain_pems[0].write_to_path(str(files[0]))
    cert.private_key_pem.write_to_path(str(files[1]))
    ca.cert_pem.write_to_path(str(files[2]))
    tls = (str(files[0]), str(files[1]), str(files[2]))
    return RedisServer(appendonly=False, tls=tls, tls_protocols="TLSv1.2"), files[2]

"""Benchmarks (see bench/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from actionhub.testing import RedisServer


@contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    """``url`` if given, else the URL of a private redis-server (no persistence) for the block."""
    if url is not None:
        yield url
        return
    with RedisServer(appendonly=False) as server:
        yield server.url

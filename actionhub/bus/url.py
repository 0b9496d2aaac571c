"""Choosing a transport by URL: ``memory://``, ``redis://``, ``rediss://``, ``unix://``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigurationError
from .base import Bus


def parse_query(url: str, *, allowed: set[str]) -> dict[str, str]:
    """The URL's query parameters; an unknown one is a `ConfigurationError`, not a silent no-op."""
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = params.keys() - allowed
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)} in bus URL; known: {sorted(allowed)}")
    return params


def open_bus(url: str) -> Bus:
    """Build the transport a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import memory_bus_from_url

        return memory_bus_from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        from ._redis import split_url

        redis_url, options = split_url(url)
        if options.mode == "pubsub":
            from .redis_pubsub import RedisPubSubBus

            return RedisPubSubBus(url, redis_url, options)
        from .redis_streams import RedisStreamsBus

        return RedisStreamsBus(url, redis_url, options)
    raise ConfigurationError(f"unknown bus URL scheme {scheme!r} in {url!r}; use memory:// or redis://")

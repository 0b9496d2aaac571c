"""Choosing a transport by URL: ``memory://``, ``redis://``, ``rediss://``, ``unix://``,
``redis+sentinel://``, ``redis+cluster://``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import ConfigurationError
from .base import Bus

if TYPE_CHECKING:
    from .redis.options import RedisOptions


def redact(url: str) -> str:
    """``url`` without its password (and without any query value that might be a secret)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in credentials else f"***@{host}"
    query = "&".join(
        f"{key}=***"
        if any(word in key.lower() for word in ("pass", "token", "secret", "key"))
        else f"{key}={value}"
        for key, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def host_port(host: str, shown: str, default_port: int, what: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) of one of the hosts of a multi-host URL (``shown``,
    redacted), the port defaulting to ``default_port``; ``what``: what the host is, for errors."""
    name, port = host, ""
    if host.startswith("["):
        name, _, port = host[1:].partition("]")
        if port and not port.startswith(":"):
            name = ""
        port = port[1:]
    elif ":" in host:
        name, _, port = host.rpartition(":")
    if not name or not (port == "" or (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigurationError(f"{shown!r}: bad {what} address {host!r} (host:port, the port 1-65535)")
    return name, int(port or default_port)


def parse_query(url: str, *, allowed: set[str]) -> dict[str, str]:
    """The URL's query parameters; an unknown one is a `ConfigurationError`, not a silent no-op."""
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = params.keys() - allowed
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)} in bus URL; known: {sorted(allowed)}")
    return params


#: rediss+sentinel: a clear refusal (sentinel.py)
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def redis_url_options(url: str) -> tuple[str, RedisOptions]:
    """A Redis bus URL, checked: (the URL for redis-py, actionhub's options). What the clients
    take; `ConfigurationError` for anything else, memory:// included (it lives in one process)."""
    from .redis.options import split_url

    scheme = urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"unknown bus URL scheme {scheme!r} in {redact(url)!r}; the clients take redis://, rediss://, "
            "unix://, redis+sentinel:// or redis+cluster:// (memory:// exists inside one process only)"
        )
    return split_url(url)


def open_bus(url: str) -> Bus:
    """Build the transport a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import memory_bus_from_url

        return memory_bus_from_url(url)
    if scheme in REDIS_SCHEMES:
        redis_url, options = redis_url_options(url)
        if options.mode == "pubsub":
            from .redis.pubsub import RedisPubSubBus

            return RedisPubSubBus(url, redis_url, options)
        from .redis.streams import RedisStreamsBus

        return RedisStreamsBus(url, redis_url, options)
    raise ConfigurationError(
        f"unknown bus URL scheme {scheme!r} in {redact(url)!r}; use memory://, redis://, redis+sentinel:// or redis+cluster://"
    )

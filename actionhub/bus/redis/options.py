"""A ``redis://`` URL: actionhub's options in its query, and the redis-py client made from the rest."""

from __future__ import annotations

import functools
import inspect
import math
import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import redis
from redis.exceptions import BusyLoadingError, ReadOnlyError

from ...errors import ConfigurationError
from ...message import DEFAULT_MAX_MESSAGE_BYTES
from .durable import check_options

#: Errors that mean "Redis is not reachable right now": retried, never surfaced per message.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, BusyLoadingError, ReadOnlyError)


@attrs.frozen
class RedisOptions:
    """The transport options of a ``redis://`` URL's query (the rest goes to redis-py)."""

    mode: str = attrs.field(default="stream", validator=attrs.validators.in_(("stream", "pubsub")))
    prefix: str = "actionhub:"
    visibility_timeout: float = 30.0  # seconds before another hub may reclaim an unacked message
    block: float = 1.0  # seconds one XREADGROUP / pub/sub read waits for messages
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_dead_letters: int = 100_000  # per topic, approximate (XADD MAXLEN ~)
    trim_interval: float = 60.0  # seconds between two trims of each consumed stream
    publish_timeout: float = 30.0  # how long publish keeps retrying while Redis is unreachable
    progress_ttl: float = 7 * 86400.0  # seconds a checkpoint outlives its last save, at most
    durable: int = 0  # replicas that must confirm a publish (WAIT) before it returns (durable.py)
    durable_timeout: float = 1.0  # seconds one WAIT waits for them

    def __attrs_post_init__(self) -> None:
        for name in ("visibility_timeout", "block", "trim_interval", "publish_timeout", "progress_ttl"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(f"{name} must be a finite number > 0, not {value!r}")
        if self.block * 2 >= self.visibility_timeout:
            raise ConfigurationError("block must be under half of visibility_timeout")
        if self.max_message_bytes < 1 or self.max_dead_letters < 1:
            raise ConfigurationError("max_message_bytes and max_dead_letters must be >= 1")
        check_options(self.mode, self.durable, self.durable_timeout, socket_timeout=self.block + 10)


_OPTION_TYPES: dict[str, Callable[[str], object]] = {
    "mode": str,
    "prefix": str,
    "visibility_timeout": float,
    "block": float,
    "max_message_bytes": int,
    "max_dead_letters": int,
    "trim_interval": float,
    "publish_timeout": float,
    "progress_ttl": float,
    "durable": int,
    "durable_timeout": float,
}


def split_url(url: str) -> tuple[str, RedisOptions]:
    """Separate actionhub's options from a Redis URL: (URL for redis-py, options)."""
    parts = urlsplit(url)
    ours: dict[str, object] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTION_TYPES:
            try:
                ours[key] = _OPTION_TYPES[key](value)
            except ValueError:
                raise ConfigurationError(f"bad value {value!r} for {key} in {url!r}") from None
        else:
            theirs.append((key, value))
    unknown = {key for key, _ in theirs} - _redis_py_url_options()
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} in bus URL; actionhub's: {sorted(_OPTION_TYPES)}, "
            "and redis-py's connection options"
        )
    try:
        options = RedisOptions(**ours)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(f"{url!r}: {exc}") from None
    query = f"?{urlencode(theirs)}" if theirs else ""
    # urlunsplit would turn unix:///path into unix:/path, which redis-py rejects
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}", options


@functools.cache
def _redis_py_url_options() -> frozenset[str]:
    """What redis-py accepts in a URL's query: its parsed arguments and connection parameters
    (anything else would fail later, at connect time, with a TypeError)."""
    names = set(redis.connection.URL_QUERY_ARGUMENT_PARSERS)
    for connection in (redis.connection.Connection, redis.connection.SSLConnection):
        for cls in connection.__mro__:
            if "__init__" in vars(cls):
                names.update(inspect.signature(vars(cls)["__init__"]).parameters)
    return frozenset(names - {"self", "args", "kwargs"})


def connect(redis_url: str, options: RedisOptions) -> Any:
    """A redis-py client whose socket timeout outlasts a blocking read.

    RESP2 unless the URL asks otherwise: redis-py 8 defaults to RESP3, whose handshake adds
    round trips (HELLO, CLIENT MAINT_NOTIFICATIONS) on every connect and needs Redis 6+. No
    CLIENT SETINFO either: two more round trips per connect, refused by Redis < 7.2.
    """
    try:
        return redis.Redis.from_url(redis_url, **client_options(options))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"bad Redis URL: {exc}") from None


def client_options(options: RedisOptions) -> dict[str, Any]:
    """What every redis-py client of actionhub's is made with (its blocking and asyncio ones)."""
    return {
        "protocol": 2,
        "socket_timeout": options.block + 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        **_NO_CLIENT_SETINFO,
    }


#: redis-py 8 takes ``driver_info=None``; 5 to 7 take ``lib_name=None, lib_version=None``
#: (deprecated in 8).
_NO_CLIENT_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info"
    in inspect.signature(
        getattr(redis.connection, "AbstractConnection", redis.connection.Connection).__init__
    ).parameters
    else {"lib_name": None, "lib_version": None}
)


def consumer_name(hub: str) -> str:
    """``<hub>@<host>:<pid>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{hub}@{socket.gethostname()}:{os.getpid()}"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""A ``redis://`` (or ``redis+sentinel://``, ``redis+cluster://``) URL: actionhub's options in
its query, and the redis-py client made from the rest."""

from __future__ import annotations

import functools
import inspect
import math
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import redis
import redis.cluster
import redis.sentinel
from redis.exceptions import BusyLoadingError, ReadOnlyError

from ...errors import BusError, ConfigurationError
from ...message import DEFAULT_MAX_MESSAGE_BYTES
from ..url import redact
from .cluster import CLUSTER_TRANSIENT, is_cluster_url, parse_cluster_url, pipelined_on_cluster
from .durable import NotReplicated, check_options
from .layout import check_shards
from .sentinel import SENTINEL_OPTIONS, LockedSentinel, is_sentinel_url, parse_sentinel_url

#: Errors that mean "Redis is not reachable right now" (`is_transient`; a failover's too: a
#: demoted primary's READONLY; no primary known to the sentinels yet,
#: `redis.sentinel.MasterNotFoundError`, is a ConnectionError; a cluster in transition's).
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, BusyLoadingError, ReadOnlyError, *CLUSTER_TRANSIENT)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means Redis cannot take calls right now, so they are retried with
    backoff and never surfaced per message: unreachable, loading, a demoted primary, or a primary
    with fewer replicas than its ``min-replicas-to-write`` (``NOREPLICAS``: it refuses every
    write, XREADGROUP and XACK included, until one is back). A wrong password is not."""
    if isinstance(error, redis.AuthenticationError):
        return False
    return refuses_writes(error) or isinstance(error, TRANSIENT)


def refuses_writes(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing writes for want of replicas (``NOREPLICAS``; redis-py
    has no class of its own for it): reads still go through."""
    return isinstance(error, redis.ResponseError) and str(error).startswith("NOREPLICAS")


def bus_error(error: Exception, what: str, url: str) -> BusError:
    """``error`` met doing ``what`` on the bus at ``url`` (redacted), as the library's own: one
    clear `BusError` (the clients' errors, and what a hub's publish meets that no retry mends)."""
    if isinstance(error, NotReplicated):
        return BusError(
            f"{what} may not be durable: {error}; a failover now could undo it (bus {redact(url)})"
        )
    if is_transient(error):
        return BusError(f"redis unreachable for {what}: {describe(error)} (bus {redact(url)})")
    return BusError(f"redis refused {what}: {error} (bus {redact(url)})")


def describe(error: BaseException) -> str:
    """``error``'s class and message, for logs and errors: redis-py 8's repr names only the class
    (the message says which sentinels failed, or which address refused)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


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
    # The key layout (layout.keys_for): "cluster" for redis+cluster:// URLs, which may not say
    # otherwise; a single node may take it too (tests, a copy before a move to a cluster)
    layout: str = attrs.field(default="single", validator=attrs.validators.in_(("single", "cluster")))
    shards: int | None = attrs.field(default=None, validator=lambda self, _, shards: _shards(self, shards))
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


def _shards(options: RedisOptions, shards: int | None) -> None:
    if shards is not None:
        if options.layout != "cluster":
            raise ConfigurationError("shards applies to the cluster layout only")
        check_shards(shards)


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
    "layout": str,
    "shards": int,
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
                raise ConfigurationError(f"bad value {value!r} for {key} in {redact(url)!r}") from None
        else:
            theirs.append((key, value))
    allowed = _redis_py_url_options() | (SENTINEL_OPTIONS if is_sentinel_url(url) else frozenset())
    unknown = {key for key, _ in theirs} - allowed
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} in bus URL; actionhub's: {sorted(_OPTION_TYPES)}, "
            "and redis-py's connection options"
        )
    if is_cluster_url(url) and ours.setdefault("layout", "cluster") != "cluster":
        raise ConfigurationError(f"{redact(url)!r}: a Redis Cluster takes layout=cluster only")
    try:
        options = RedisOptions(**ours)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(f"{redact(url)!r}: {exc}") from None
    _check_socket_timeout(
        dict(theirs).get("socket_timeout"), options, durable_given=bool(_DURABLE & ours.keys())
    )
    query = f"?{urlencode(theirs)}" if theirs else ""
    # urlunsplit would turn unix:///path into unix:/path, which redis-py rejects
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}", options


_DURABLE = frozenset({"durable", "durable_timeout"})


def _check_socket_timeout(given: str | None, options: RedisOptions, *, durable_given: bool) -> None:
    """The URL's ``socket_timeout`` replaces block + 10 s (`client_options`): a ``durable_timeout``
    the URL sets must be under it too."""
    if not (given and durable_given):
        return
    try:
        timeout = float(given)
    except ValueError:
        return  # redis-py says so
    check_options(
        options.mode,
        options.durable,
        options.durable_timeout,
        socket_timeout=timeout,
        timeout_is="socket_timeout",
    )


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
    """A redis-py client whose socket timeout outlasts a blocking read (of the primary, found
    through the sentinels, for a ``redis+sentinel://`` URL; of a cluster's nodes for a
    ``redis+cluster://`` one).

    RESP2 unless the URL asks otherwise: redis-py 8 defaults to RESP3, whose handshake adds
    round trips (HELLO, CLIENT MAINT_NOTIFICATIONS) on every connect and needs Redis 6+. No
    CLIENT SETINFO either: two more round trips per connect, refused by Redis < 7.2.
    """
    try:
        if is_sentinel_url(redis_url):
            return parse_sentinel_url(redis_url).master_for(LockedSentinel, client_options(options))
        if is_cluster_url(redis_url):
            return parse_cluster_url(redis_url).client(client_options(options))
        return redis.Redis.from_url(redis_url, **client_options(options))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"bad Redis URL: {exc}") from None


def pipelined(client: Any, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """``commands`` in one round trip on one of ``client``'s connections (pipelined, not a
    transaction): their replies. On a cluster, a round trip per node and per ``MULTI`` block."""
    if isinstance(client, redis.cluster.RedisCluster):
        return pipelined_on_cluster(client, commands)
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())


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

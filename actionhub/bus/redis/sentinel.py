"""``redis+sentinel://``: a primary found through its sentinels, and followed across failovers.

    redis+sentinel://[user:password@]host1:26379,host2:26379/<service>[/<db>][?option=...]

The hosts are the sentinels (port 26379 unless given); ``user:password`` and redis-py's query
options are for the data nodes, ``sentinel_username`` and ``sentinel_password`` for the
sentinels themselves; actionhub's own options (``prefix``, ...) are as with ``redis://``.

redis-py's `redis.sentinel` does the following: a connection asks the sentinels for the primary
each time it connects, and a READONLY reply (a primary demoted to a replica) or a blocking
command it unblocks drops the connection, so that the next one asks again. The trio-driven
connections of the hot path do the same (`WireParams.primary`, wire.py).

That leaves connections to a primary that the sentinels replaced while it stayed up (``SENTINEL
FAILOVER``, or a partition): it takes writes, lost when Sentinel demotes it some 10 s later. So
an open bus also asks the sentinels every `CHECK_INTERVAL` (`follow_primary`) and drops its
connections to any other server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast, overload
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import attrs
import redis.connection
import redis.sentinel
import trio

from ...errors import ConfigurationError
from ..url import host_port, redact

if TYPE_CHECKING:
    import redis.asyncio.sentinel

SCHEME = "redis+sentinel"
#: Query options for the sentinels' own connections (the rest are the data nodes').
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
DEFAULT_PORT = 26379
#: Seconds between two questions of an open bus to the sentinels: where is the primary now?
CHECK_INTERVAL = 1.0

log = logging.getLogger("actionhub.redis")


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names its primary through sentinels (``rediss+sentinel://`` too, refused
    by `parse_sentinel_url`)."""
    return urlsplit(url).scheme.endswith("+sentinel")


@attrs.frozen
class SentinelUrl:
    """A ``redis+sentinel://`` URL, parsed (actionhub's own options already taken out)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    # repr=False: both hold passwords, which must not reach a log or a traceback
    #: redis-py keyword arguments of the data nodes' connections: db, credentials, query options
    connection: Mapping[str, Any] = attrs.field(repr=False)
    #: ``username`` and ``password`` of the sentinels, if they ask for them
    sentinel_auth: Mapping[str, str] = attrs.field(repr=False)

    # Any in `options`, `more`, `connection`: redis-py keyword arguments, one type per option
    @overload
    def master_for(
        self, sentinel_class: type[redis.sentinel.Sentinel], options: Mapping[str, Any], **more: Any
    ) -> redis.Redis: ...

    @overload
    def master_for(
        self, sentinel_class: type[redis.asyncio.sentinel.Sentinel], options: Mapping[str, Any], **more: Any
    ) -> redis.asyncio.Redis: ...

    def master_for(
        self,
        sentinel_class: type[redis.sentinel.Sentinel | redis.asyncio.sentinel.Sentinel],
        options: Mapping[str, Any],
        **more: Any,
    ) -> redis.Redis | redis.asyncio.Redis:
        """A client of the primary made by ``sentinel_class`` (`LockedSentinel` or its asyncio
        twin) with ``options`` (`client_options`), overridden by the URL's, and ``more``."""
        # a sentinel answers at once or is skipped for the next: no long read timeout there
        timeout = options.get("socket_connect_timeout", 5)
        handshake = ("protocol", "driver_info", "lib_name", "lib_version")
        sentinel_kwargs = {key: options[key] for key in handshake if key in options}
        sentinel_kwargs |= {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **self.sentinel_auth,
        }
        manager = sentinel_class(list(self.sentinels), sentinel_kwargs=sentinel_kwargs)
        client = manager.master_for(self.service, **{**options, **more, **self.connection})
        return cast("redis.Redis | redis.asyncio.Redis", client)  # redis-py leaves it unannotated


class LockedSentinel(redis.sentinel.Sentinel):
    """redis-py's `Sentinel`, its `discover_master` one call at a time: that moves the sentinel
    which answered to the front of a list shared by every call, without a lock, and a bus calls
    it from several threads at once (`follow_primary`, each connect of redis-py's and of the
    wire's). Two calls interleaved can put one sentinel in the list twice and drop another."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._discovering = threading.Lock()

    def discover_master(self, service_name: str) -> tuple[str, int]:
        with self._discovering:
            return super().discover_master(service_name)  # type: ignore[no-any-return]


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse ``url``; `ConfigurationError` naming what is wrong (the password redacted)."""
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ConfigurationError(
            f"{shown!r}: only {SCHEME}:// is supported (TLS to the sentinels and nodes, "
            "rediss+sentinel://, is not)"
        )
    credentials, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError(f"{shown!r} names no sentinel: {SCHEME}://host1:26379,host2:26379/service/0")
    sentinels = tuple(host_port(host.strip(), shown, DEFAULT_PORT, "sentinel") for host in hosts.split(","))
    service, *rest = parts.path.lstrip("/").split("/")
    if not service:
        raise ConfigurationError(f"{shown!r} names no service: {SCHEME}://host1:26379,host2:26379/service/0")
    db = rest[0] if rest else ""
    if len(rest) > 1 or not (db == "" or db.isdigit()):
        raise ConfigurationError(
            f"{shown!r}: after the service comes the database number (/service/0), nothing else"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = sorted({key for key, _ in query if key.startswith("ssl")})
    if tls:  # else accepted here, and a TypeError at the first connection
        raise ConfigurationError(
            f"{shown!r}: TLS options ({', '.join(tls)}) are not supported with {SCHEME}://, "
            "to the sentinels or the nodes"
        )
    auth = {key.removeprefix("sentinel_"): value for key, value in query if key in SENTINEL_OPTIONS}
    theirs = urlencode([(key, value) for key, value in query if key not in SENTINEL_OPTIONS])
    as_redis_url = f"redis://{credentials}{'@' if credentials else ''}localhost/{db or 0}?{theirs}"
    try:  # redis-py's own URL grammar for the data nodes: credentials, db and query options
        url_kwargs = redis.connection.parse_url(as_redis_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigurationError(f"{shown!r}: {exc}") from None
    connection: dict[str, Any] = {key: value for key, value in url_kwargs.items() if key != "host"}
    return SentinelUrl(sentinels, unquote(service), connection, auth)


def close_client(client: redis.Redis) -> None:
    """Close a redis-py client, and its sentinels' connections if it has any."""
    client.close()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


async def follow_primary(client: redis.Redis, leave: Callable[[tuple[str, int]], None], bus: str) -> None:
    """Ask the sentinels of ``client`` (a sentinel-managed redis-py client; else return at once)
    where the primary is, every `CHECK_INTERVAL`, and drop the client's connections to anything
    else (also those made while the sentinels disagreed, during a failover); ``leave(primary)``
    does the same for the caller's own connections."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return
    known: tuple[str, int] | None = None
    while True:
        try:
            address = await trio.to_thread.run_sync(pool.get_master_address, abandon_on_cancel=True)
        except redis.RedisError:  # none known (a failover under way), or no sentinel answers:
            address = None  # the connections themselves say whether Redis is reachable
        if address is not None:
            if known is not None and address != known:
                log.warning(
                    "the sentinels name a new primary, %s:%s (was %s:%s): reconnecting",
                    *address,
                    *known,
                    extra={"bus": bus},
                )
            _leave(pool, address)
            leave(address)
            known = address
        await trio.sleep(CHECK_INTERVAL)


def _leave(pool: redis.sentinel.SentinelConnectionPool, primary: tuple[str, int]) -> None:
    """Disconnect the connections of ``pool`` to anything but ``primary``, in use (a pub/sub
    subscription, a blocking read) or not: a user of one sees a ConnectionError and retries.
    (redis-py's ``disconnect`` would also drop those already on the new primary.)"""
    with pool._lock:
        connections = [*pool._available_connections, *pool._in_use_connections]
    for connection in connections:
        if (connection.host, connection.port) != primary:
            connection.disconnect()

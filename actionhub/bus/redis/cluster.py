"""``redis+cluster://``: a Redis Cluster, through redis-py's `RedisCluster`.

    redis+cluster://[user:password@]host1:7000,host2:7001[/0][?option=...]

The hosts are seed nodes: any reachable one tells where every slot lives. ``rediss+cluster://``
speaks TLS to every node. ``user:password`` and redis-py's query options are for every node;
actionhub's own options (``prefix``, ``shards``, ...) are as with ``redis://``, and such a URL
lays its keys out for a cluster (layout.py, docs/design/cluster.md).

A hub's hot path (publish, read, ack, scripts, confirmed writes) runs on trio-driven connections
(`cluster_wire.ClusterWire`) where the URL's options allow (not TLS, nor an option they do not
reproduce); the rest, and every call of another URL, goes through redis-py's `RedisCluster` in
threads. Both follow ``MOVED`` and ``ASK``. redis-py's own retries are off (``Retry(NoBackoff(), 0)``):
what a cluster in transition answers (``CLUSTERDOWN``, ``TRYAGAIN``, a slot no node serves yet,
a node gone) is an outage to the bus, retried with backoff and logged once, as a single node's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from ...errors import BusError, ConfigurationError
from ..url import host_port, redact
from .wire import WireParams, params_of

SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379

#: redis-py 8's error when no node answers a refresh of the slots (every node unreachable, or
#: the seeds down while the cluster fails over); older versions raise a ConnectionError.
_UNREACHABLE: tuple[type[Exception], ...] = tuple(
    cls for cls in (getattr(redis.exceptions, "RedisClusterUnreachableError", None),) if cls is not None
)

#: What a cluster answers while it changes (a failover, a slot migrating), besides the
#: connection errors of any node: retried as an outage (options.is_transient). ``ClusterError``
#: covers CLUSTERDOWN and MASTERDOWN (`ClusterDownError`, also what the trio-driven
#: `cluster_wire.ClusterWire` raises for a slot no node serves) and redis-py's "TTL exhausted"
#: (redirected too often); a `RedisClusterException` (a slot no node serves yet, every node
#: unreachable) is redis-py's own, not a `RedisError`.
CLUSTER_TRANSIENT = (ClusterError, TryAgainError, SlotNotCoveredError, *_UNREACHABLE)

#: Every error a call to a cluster client may raise that is about Redis (redis-py raises a few of
#: its own that are not `RedisError`s: a slot not covered, keys of two slots in one call).
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(url).scheme in SCHEMES


@attrs.frozen
class ClusterUrl:
    """A ``redis+cluster://`` URL, parsed (actionhub's own options already taken out)."""

    nodes: tuple[tuple[str, int], ...]
    #: redis-py keyword arguments of every node's connections: credentials, TLS, query options
    connection: Mapping[str, Any] = attrs.field(repr=False)  # holds the password

    def wire_params(self, options: Mapping[str, Any]) -> WireParams | None:
        """The nodes' connection parameters for the trio-driven `cluster_wire.ClusterWire`, as
        `client` would connect with ``options``; None if the wire path cannot reproduce them (TLS,
        an option it does not know): the thread path then."""
        return params_of({**options, **self.connection})

    def client(self, options: Mapping[str, Any]) -> redis.cluster.RedisCluster:
        """A redis-py cluster client with ``options`` (`client_options`), overridden by the URL's."""
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in self.nodes
            ],
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=True,
            **{**options, **self.connection},
        )


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse ``url``; `ConfigurationError` naming what is wrong (the password redacted)."""
    shown = redact(url)
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError(f"{shown!r} names no node: redis+cluster://host1:7000,host2:7001")
    nodes = tuple(host_port(host.strip(), shown, DEFAULT_PORT, "cluster node") for host in hosts.split(","))
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigurationError(f"{shown!r}: a Redis Cluster has database 0 only, not {db!r}")
    scheme = "rediss" if parts.scheme == "rediss+cluster" else "redis"
    as_redis_url = f"{scheme}://{credentials}{'@' if credentials else ''}localhost/0?{parts.query}"
    try:  # redis-py's own URL grammar: credentials, TLS and query options
        kwargs = redis.connection.parse_url(as_redis_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigurationError(f"{shown!r}: {exc}") from None
    connection = {key: value for key, value in kwargs.items() if key not in ("host", "port", "db")}
    if connection.pop("connection_class", None) is redis.connection.SSLConnection:
        connection["ssl"] = True
    return ClusterUrl(nodes, connection)


def pipelined_on_cluster(client: redis.cluster.RedisCluster, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """`options.pipelined` on a cluster: redis-py routes each command of a cluster pipeline by
    its own key, and ``MULTI``/``EXEC`` have none, so each ``MULTI ... EXEC`` block runs as a
    transaction of its own (one slot), between the plain commands around it, in order. The
    replies are those of one connection: ``OK``, ``QUEUED`` per command, then ``EXEC``'s list."""
    replies: list[Any] = []
    plain: list[Sequence[Any]] = []

    def run(queued: Sequence[Sequence[Any]], *, transaction: bool) -> list[Any]:
        with client.pipeline(transaction=transaction) as pipe:  # type: ignore[no-untyped-call]
            for command in queued:
                pipe.execute_command(*command)
            return list(pipe.execute())

    at = 0
    while at < len(commands):
        if not _is(commands[at], b"MULTI"):
            plain.append(commands[at])
            at += 1
            continue
        end = next((i for i in range(at, len(commands)) if _is(commands[i], b"EXEC")), None)
        if end is None:
            raise BusError(f"a MULTI without its EXEC in a pipeline (command {at} of {len(commands)})")
        if plain:
            replies += run(plain, transaction=False)
            plain = []
        inner = commands[at + 1 : end]
        replies += [b"OK", *[b"QUEUED"] * len(inner), run(inner, transaction=True)]
        at = end + 1
    if plain:
        replies += run(plain, transaction=False)
    return replies


def _is(command: Sequence[Any], name: bytes) -> bool:
    """Whether ``command`` is ``name`` (its name given as text or bytes, in any case)."""
    first = command[0]
    return (first if isinstance(first, bytes) else str(first).encode()).upper() == name

"""A Redis connection driven by trio itself, for the hot path: publish, read, ack.

Through redis-py's synchronous client every call costs two thread hops, which at low rates is
most of a message's latency. A `WireConnection` speaks RESP2 over a trio socket (TCP or unix),
parses replies with hiredis and pipelines: concurrent callers share it, their commands go out
whole and in order, and one reader task hands each reply to its caller. Errors are redis-py's
own exceptions, so the retry logic in ``connection`` treats both paths alike.

It is used only where it can stand in for redis-py exactly: a `redis.Redis` on a plain TCP or
unix connection, or on a primary found through sentinels, RESP2, and no URL option it does not
know (TLS, a credential provider or ``decode_responses`` keep the thread path, as does fakeredis
in tests).

Under Sentinel, as redis-py's `SentinelManagedConnection`: each (re)connect asks the sentinels
where the primary is and checks with ``ROLE`` that it is one; a READONLY reply (the primary was
demoted) or a blocking read it unblocked drops the connection, so the next call asks again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs
import hiredis
import redis
import redis.sentinel
import trio
from redis._parsers.base import BaseParser
from redis.exceptions import NoPermissionError, ReadOnlyError

#: redis-py connection options the wire path reproduces; any other keeps the thread path.
_UNDERSTOOD = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "client_name",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",  # a broken connection is seen by its reader at once
        "himport_registry",
        "driver_info",  # None: no CLIENT SETINFO, which the wire path never sends either
        "lib_name",
        "lib_version",
    }
)

Command = Sequence[bytes | str | int | float]

#: Which connection of a `WireConnection`: (its generation, its address).
Connection = tuple[int, tuple[str, int] | None]

#: What a primary turning into a replica answers the clients blocked in it (BLPOP, XREADGROUP).
_UNBLOCKED = "UNBLOCKED force unblock from blocking operation, instance state changed"


@attrs.frozen
class WireParams:
    """Where and how to connect, taken from a redis-py client."""

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    timeout: float
    connect_timeout: float
    #: Sentinel: a blocking call (run in a thread) giving the primary's (host, port), which
    #: then stand in for `host` and `port`
    primary: Callable[[], tuple[str, int]] | None = None


def wire_params(client: Any) -> WireParams | None:
    """The parameters for `WireConnection` equivalent to ``client``'s, or None if it cannot be."""
    pool = getattr(client, "connection_pool", None)
    if type(client) is not redis.Redis or pool is None:
        return None
    kwargs = dict(pool.connection_kwargs)
    primary = None
    if pool.connection_class is redis.sentinel.SentinelManagedConnection and pool.is_master:
        del kwargs["connection_pool"]  # the sentinel pool's proxy
        primary = pool.get_master_address  # also drops the pool's idle connections once it moved
    elif pool.connection_class not in (
        redis.connection.Connection,
        redis.connection.UnixDomainSocketConnection,
    ):
        return None
    tcp = pool.connection_class is redis.connection.Connection
    return params_of(kwargs, tcp=tcp, primary=primary)


def params_of(
    kwargs: dict[str, Any], *, tcp: bool = True, primary: Callable[[], tuple[str, int]] | None = None
) -> WireParams | None:
    """The parameters for `WireConnection` equivalent to redis-py connection keyword arguments
    ``kwargs`` (a cluster's nodes': host and port then come from the cluster), or None if they
    cannot be (an option the wire path does not reproduce: TLS, say)."""
    if not kwargs.keys() <= _UNDERSTOOD or int(kwargs.get("protocol") or 2) != 2:
        return None
    return WireParams(
        host=kwargs.get("host") if tcp else None,
        port=int(kwargs.get("port", 6379)),
        path=kwargs.get("path"),
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        client_name=kwargs.get("client_name"),
        timeout=float(kwargs.get("socket_timeout") or 30.0),
        connect_timeout=float(kwargs.get("socket_connect_timeout") or 5.0),
        primary=primary,
    )


class _Waiter:
    """One command's reply to come. Replies come in order, so only the last command of a round
    trip has an event: once it is set, every reply of the round trip is in."""

    __slots__ = ("done", "reply")

    def __init__(self, done: trio.Event | None = None) -> None:
        self.done = done
        self.reply: Any = None


class WireConnection:
    """One pipelined Redis connection, (re)connected on demand, read by a task in ``nursery``."""

    def __init__(self, params: WireParams, nursery: trio.Nursery) -> None:
        self._params = params
        self._nursery = nursery
        self._send_lock = trio.Lock()  # commands go out whole, in the order their replies come
        self._socket: trio.SocketStream | None = None
        self.address: tuple[str, int] | None = None  # (host, port) of the latest TCP connection
        self.generation = 0  # counts (re)connects
        self._waiting: deque[_Waiter] = deque()

    @property
    def connection(self) -> Connection | None:
        """The connection now open, None if there is none (the next call connects): the same
        before and after a call if the call went out on it."""
        return None if self._socket is None else (self.generation, self.address)

    async def execute(
        self, *commands: Command, timeout: float | None = None, errors_in_place: bool = False
    ) -> list[Any]:
        """Send ``commands`` in one write; their replies, in order. A reply that is an error is
        raised (the first one) as redis-py would, or with ``errors_in_place`` left in its place
        as redis-py's exception (not raised: so a cluster client can redirect one command of a
        batch); a connection lost or silent for ``timeout`` (default: the client's socket
        timeout) raises redis-py's ConnectionError/TimeoutError either way."""
        if not commands:
            return []
        async with self._send_lock:
            sock = self._socket or await self._connect()
            waiters = await self._send(sock, commands)
        timeout = self._params.timeout if timeout is None else timeout
        return await self._replies(sock, waiters, timeout, errors_in_place=errors_in_place)

    def close(self, *, unless: tuple[str, int] | None = None) -> None:
        """Drop the connection (``unless`` it is to that address); callers waiting for replies
        get a ConnectionError."""
        if self._socket is not None and (unless is None or self.address != unless):
            self._break(self._socket, ConnectionError("closed"))

    async def _connect(self) -> trio.SocketStream:
        params = self._params
        try:
            with trio.fail_after(params.connect_timeout):
                if params.path is not None:
                    sock = await trio.open_unix_socket(params.path)
                else:
                    host, port = params.host or "localhost", params.port
                    if params.primary is not None:
                        host, port = await trio.to_thread.run_sync(params.primary, abandon_on_cancel=True)
                    sock = await trio.open_tcp_stream(host, port)
                    self.address = (host, port)
        except trio.TooSlowError:
            raise redis.TimeoutError(f"connecting to Redis timed out ({params.connect_timeout} s)") from None
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._socket = sock
        self.generation += 1
        self._nursery.start_soon(self._read_replies, sock)
        handshake: list[Command] = []
        if params.password is not None:
            handshake.append(("AUTH", *([params.username] if params.username else []), params.password))
        if params.db:
            handshake.append(("SELECT", params.db))
        if params.client_name:
            handshake.append(("CLIENT", "SETNAME", params.client_name))
        try:
            if handshake:
                await self._replies(sock, await self._send(sock, handshake), params.connect_timeout)
            if params.primary is not None:
                await self._check_primary(sock)
        except BaseException as exc:
            self._break(sock, exc)  # say, a wrong password: this connection is of no use
            raise
        return sock

    async def _check_primary(self, sock: trio.SocketStream) -> None:
        """Raise ConnectionError unless the server is a primary: the sentinels may name one that
        was demoted (or not yet promoted) while they learn of a failover."""
        try:
            ((role, *_),) = await self._replies(
                sock, await self._send(sock, [("ROLE",)]), self._params.connect_timeout
            )
        except NoPermissionError:
            return  # a user without +role: a demoted primary shows itself by READONLY instead
        if role != b"master":
            raise redis.ConnectionError(
                f"the server the sentinels named is a {role.decode()}, not the primary"
            )

    async def _send(self, sock: trio.SocketStream, commands: Sequence[Command]) -> list[_Waiter]:
        waiters = [_Waiter() for _ in commands[1:]]
        waiters.append(_Waiter(trio.Event()))
        self._waiting.extend(waiters)
        try:
            await sock.send_all(b"".join(hiredis.pack_command(cast(Any, tuple(c))) for c in commands))
        except BaseException as exc:  # cancelled or broken mid-write: the stream is unusable
            self._break(sock, exc)
            if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                raise redis.ConnectionError(f"lost the connection to Redis: {exc!r}") from exc
            raise
        return waiters

    async def _replies(
        self,
        sock: trio.SocketStream,
        waiters: list[_Waiter],
        timeout: float,
        *,
        errors_in_place: bool = False,
    ) -> list[Any]:
        with trio.move_on_after(timeout) as scope:
            done = waiters[-1].done
            assert done is not None
            await done.wait()
        if scope.cancelled_caught:
            self._break(sock, TimeoutError("no reply"))
            raise redis.TimeoutError(f"Redis did not answer within {timeout} s")
        replies = [waiter.reply for waiter in waiters]
        for at, reply in enumerate(replies):
            if isinstance(reply, redis.ConnectionError):
                raise reply
            if isinstance(reply, hiredis.ReplyError):
                error = cast(Exception, BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
                if isinstance(error, ReadOnlyError) or str(reply).startswith(_UNBLOCKED):
                    # a primary demoted to a replica: reconnect (under Sentinel, to the new one)
                    self._break(sock, error)
                    raise redis.ConnectionError(f"the primary is now a replica: {reply}") from error
                if not errors_in_place:
                    raise error
                replies[at] = error
        return replies

    async def _read_replies(self, sock: trio.SocketStream) -> None:
        reader = hiredis.Reader()
        try:
            while True:
                data = await sock.receive_some(1 << 16)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    waiter = self._waiting.popleft()
                    waiter.reply = reply
                    if waiter.done is not None:
                        waiter.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, hiredis.ProtocolError) as exc:
            self._break(sock, exc)
        except IndexError:  # a reply nobody asked for: the stream cannot be trusted any more
            self._break(sock, redis.ConnectionError("Redis sent a reply nobody asked for"))

    def _break(self, sock: trio.SocketStream, cause: BaseException) -> None:
        """Close ``sock``; if it is the current connection, fail every caller still waiting."""
        sock.socket.close()  # wakes its reader with ClosedResourceError
        if self._socket is not sock:
            return
        self._socket = None
        error = redis.ConnectionError(f"lost the connection to Redis: {cause!r}")
        while self._waiting:
            waiter = self._waiting.popleft()
            waiter.reply = error
            if waiter.done is not None:
                waiter.done.set()

"""`AsyncClient`: the asyncio flavour (redis-py's asyncio client), for FastAPI, aiohttp, Starlette."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from ..bus.redis.cluster import REDIS_ERRORS, is_cluster_url, parse_cluster_url
from ..bus.redis.durable import Confirm
from ..bus.redis.options import RedisOptions, bus_error, client_options
from ..bus.redis.sentinel import is_sentinel_url, parse_sentinel_url
from ..bus.url import redis_url_options
from ..errors import ConfigurationError
from ._awaited import AwaitedMethods
from ._ops import (
    RETRY_DELAYS,
    Call,
    Command,
    Once,
    Op,
    Operations,
    Pipeline,
    Scan,
    Script,
    Transaction,
    abandon,
    confirmed_call,
    evalsha,
    resendable,
)
from ._sync import DEFAULT_URL

T = TypeVar("T")


class _LockedSentinel(redis.asyncio.sentinel.Sentinel):
    """`LockedSentinel` on asyncio: concurrent connects' `discover_master` interleave at each
    sentinel it awaits, and reorder the shared list of sentinels as the threaded ones would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._discovering = asyncio.Lock()

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        async with self._discovering:
            return await super().discover_master(service_name)  # type: ignore[no-any-return]


class AsyncClient(AwaitedMethods):
    """`Client`'s methods, awaited, on asyncio: ``async with AsyncClient(url) as client:``. One
    client serves any number of concurrent tasks of its event loop."""

    def __init__(self, url: str = DEFAULT_URL, *, max_connections: int = 64) -> None:
        """``max_connections``: at most this many at once; more concurrent calls wait for one."""
        self.url = url
        redis_url, options = redis_url_options(url)
        self._ops = Operations(options)
        self._sentinels: list[Any] = []  # a primary found through sentinels: their clients
        self._client: Any
        try:
            if is_cluster_url(redis_url):
                self._ops.no_cluster_durable = True
                self._ops.check_replicas()
                self._client = _cluster_client(redis_url, options, max_connections)
            elif is_sentinel_url(redis_url):
                client = parse_sentinel_url(redis_url).master_for(
                    _LockedSentinel, client_options(options), max_connections=max_connections
                )
                assert isinstance(client.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
                self._sentinels = client.connection_pool.sentinel_manager.sentinels
                self._client = client
            else:
                pool = redis.asyncio.ConnectionPool.from_url(
                    redis_url, max_connections=max_connections, **client_options(options)
                )
                self._client = redis.asyncio.Redis(connection_pool=pool)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad Redis URL: {exc}") from None
        # at most one connection per running operation: more wait here, not fail in the pool
        self._slots = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if isinstance(self._client, redis.asyncio.cluster.RedisCluster):
            await self._client.aclose()
        else:
            await self._client.aclose(close_connection_pool=True)
        for sentinel in self._sentinels:
            await sentinel.aclose()

    # ------------------------------------------------------------------ the driver

    async def _run(self, op: Op[T], what: str) -> T:
        reply: Any = None
        try:
            async with self._slots:
                while True:
                    call = op.send(reply)
                    if not self._ops.layout_checked:  # after the op's checks of its input
                        await self._run_plain(self._ops.check_layout())
                    if isinstance(call, Once):
                        reply = await self._send_once(call)
                    else:
                        reply = await self._execute(call)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except REDIS_ERRORS as error:
            abandon(op, error)
            raise bus_error(error, what, self.url) from error
        except BaseException as error:  # cancelled (say, the request's client went away)
            abandon(op, error)
            raise

    async def _run_plain(self, op: Op[None]) -> None:
        """``op``, whose calls are neither `Once` nor to be abandoned."""
        reply: Any = None
        try:
            while True:
                reply = await self._execute(op.send(reply))
        except StopIteration:
            return

    async def _send_once(self, call: Once) -> Any:
        """``call.first``; after a broken connection or a timeout, its resends (see `Once`)."""
        started = time.monotonic()
        try:
            return await self._attempt(call, call.first)
        except REDIS_ERRORS as error:
            if not resendable(error):
                raise
            failure = error
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            elapsed = time.monotonic() - started
            if elapsed > self._ops.options.publish_timeout:
                break
            try:
                return await self._attempt(call, call.again(elapsed))
            except REDIS_ERRORS as error:
                if not resendable(error):
                    raise
                failure = error
        raise failure

    async def _attempt(self, call: Once, attempt: Command | Script) -> Any:
        """One attempt of ``call``: ``attempt`` (its first, or a resend), confirmed if it must be."""
        if call.confirm is None:
            return await self._execute(attempt)
        return await self._confirmed(attempt, call.confirm)

    async def _confirmed(self, call: Command | Script | Transaction, confirm: Confirm) -> Any:
        """``call`` and its WAIT in one pipeline (`confirmed_call`): its reply."""
        timeout = self._ops.options.durable_timeout
        try:
            commands, reply = confirmed_call(call, confirm, timeout)
            return reply(await self._pipelined(commands))
        except NoScriptError:  # a script not loaded yet, or Redis restarted: load it, once more
            commands, reply = confirmed_call(call, confirm, timeout, load=True)
            return reply(await self._pipelined(commands))

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            return list(await pipe.execute())

    async def _execute(self, call: Call) -> Any:
        client = self._client
        if isinstance(call, Command):
            return await client.execute_command(*call.args)
        if isinstance(call, Transaction):
            if call.confirm is not None:
                return await self._confirmed(call, call.confirm)
            async with client.pipeline(transaction=True) as pipe:
                for args in call.commands:
                    pipe.execute_command(*args)
                return await pipe.execute()
        if isinstance(call, Script):
            try:
                return await client.execute_command(*evalsha(call))
            except NoScriptError:  # not loaded yet, or Redis restarted: load it, once more
                await client.execute_command("SCRIPT", "LOAD", call.source)
                return await client.execute_command(*evalsha(call))
        if isinstance(call, Pipeline):
            try:
                return await self._pipelined(list(call.commands))
            except NoScriptError:  # a script not loaded yet (on some node), or Redis restarted
                if not call.load:
                    raise
                for source in call.load:
                    await client.execute_command("SCRIPT", "LOAD", source)  # on a cluster: every primary
                return await self._pipelined(list(call.commands))
        assert isinstance(call, Scan)
        return [name async for name in client.scan_iter(match=call.pattern, count=1000)]


def _cluster_client(redis_url: str, options: RedisOptions, max_connections: int) -> Any:
    """redis-py's asyncio `RedisCluster` for a ``redis+cluster://`` URL, made as the blocking
    client's (`ClusterUrl.client`): the URL's seed nodes, no retries of redis-py's own (a cluster
    in transition is an outage: `Once` resends what may not be lost), RESP2."""
    parsed = parse_cluster_url(redis_url)
    nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in parsed.nodes]
    return redis.asyncio.cluster.RedisCluster(
        startup_nodes=nodes,
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=True,
        max_connections=max_connections,
        **{**client_options(options), **parsed.connection},
    )

"""`Client`: the blocking flavour (redis-py), for Django, Flask, scripts and Celery tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, overload

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from ..bus.base import DeadLetter
from ..bus.redis.cluster import REDIS_ERRORS, is_cluster_url, parse_cluster_url
from ..bus.redis.durable import Confirm
from ..bus.redis.options import bus_error, connect, pipelined
from ..bus.redis.replication import on_node
from ..bus.redis.sentinel import close_client
from ..bus.url import redis_url_options
from ..inspect import CommandAnswer, HubSnapshot
from ..message import Message
from ..payloads import decode_reply
from ..results import MessageStatus
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

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_URL = "redis://localhost:6379/0"


class Client:
    """Publish to actionhub, ask for replies and operate hubs, from blocking code. Thread-safe
    (one connection pool); ``with Client(url) as client:`` closes it. The URL is the hubs' own
    grammar (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ACL users,
    ``?prefix=``, ...). Errors are `BusError` (Redis unreachable or refusing),
    `ConfigurationError` (a bad topic, key or URL), `TypeError`/`ValueError` (a payload that is
    not JSON or too big), `TimeoutError` (no reply)."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        redis_url, options = redis_url_options(url)
        self._ops = Operations(options)
        self._connect = partial(connect, redis_url, options)
        self._made = threading.Lock()
        self._redis: Any = None
        if is_cluster_url(redis_url):
            parse_cluster_url(redis_url)  # a bad URL fails here; the client is made on first use
        else:
            self._redis = self._connect()  # connects on first use

    @property
    def _client(self) -> Any:
        """The redis-py client: redis-py's `RedisCluster` connects as it is made, so it is made on
        first use (an unreachable cluster is then a `BusError` of the call, as a single node's)."""
        if self._redis is None:
            with self._made:
                if self._redis is None:
                    self._redis = self._connect()
        return self._redis

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._redis is not None:
            close_client(self._redis)

    def publish(
        self,
        topic: str,
        payload: object,
        *,
        headers: dict[str, str] | None = None,
        delay: float | None = None,
        key: str | None = None,
        dedupe_key: str | None = None,
        dedupe_for: float | None = None,
        durable: int | None = None,
    ) -> str:
        """Publish ``payload`` (JSON) to ``topic``, after ``delay`` seconds if given; ``key``:
        ordered groups run one key's messages one at a time, in order. Returns the message id.
        ``dedupe_key``: a publish of the same key to ``topic`` within ``dedupe_for`` seconds
        (default 3600) of the first writes nothing and returns the first message's id.
        ``durable``: return only once that many Redis replicas have it (default: the URL's
        ``durable``); `BusError` if they do not confirm it (docs/reliability.md)."""
        op = self._ops.publish(
            topic,
            payload,
            headers=headers,
            delay=delay,
            key=key,
            dedupe_key=dedupe_key,
            dedupe_for=dedupe_for,
            durable=durable,
        )
        return self._run(op, "publish")

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[object],
        *,
        headers: dict[str, str] | None = None,
        keys: Iterable[str | None] | None = None,
        durable: int | None = None,
    ) -> list[str]:
        """Publish each payload in order, 1,000 to a script; their ids. ``durable``: as for `publish`."""
        return self._run(
            self._ops.publish_many(topic, payloads, headers=headers, keys=keys, durable=durable), "publish"
        )

    @overload
    def request(
        self, topic: str, payload: object, *, timeout: float, headers: dict[str, str] | None = None
    ) -> Message: ...

    @overload
    def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: type[R],
    ) -> R: ...

    def request(
        self,
        topic: str,
        payload: object,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        reply_type: object | None = None,
    ) -> Any:
        """Publish and wait for the first ``job.reply``; `TimeoutError` after ``timeout``. With
        ``reply_type``, the reply's payload decoded as that type (`InvalidPayload` if it does
        not validate), else the reply `Message`."""
        op = self._ops.request(topic, payload, timeout=timeout, headers=headers)
        reply = self._run(op, "request")
        return reply if reply_type is None else decode_reply(reply.payload, reply_type)

    def status(self, message_id: str) -> MessageStatus:
        """Where message ``message_id`` stands: pending, running, retrying, done, dead, or unknown
        (a topic whose group has ``keep_result``; see `ActionHub.status`)."""
        return self._run(self._ops.status(message_id), "read a message status")

    def result(
        self, message_id: str, timeout: float | None = None, *, result_type: object | None = None
    ) -> Any:
        """Wait for the result kept for ``message_id``, decoded as ``result_type`` if given;
        `MessageDead` if it was dead-lettered, `TimeoutError` after ``timeout`` (None: no limit)."""
        value = self._run(self._ops.result(message_id, timeout=timeout), "wait for a result")
        return value if result_type is None else decode_reply(value, result_type)

    def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``topic``."""
        return self._run(self._ops.dead_letters(topic, limit), "read dead letters")

    def requeue_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        """Publish dead letters of ``topic`` again (all, or those ids) as first attempts."""
        return self._run(self._ops.requeue_dead_letters(topic, ids), "requeue dead letters")

    def purge_dead_letters(self, topic: str, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters of ``topic`` (all, or those ids)."""
        return self._run(self._ops.purge_dead_letters(topic, ids), "purge dead letters")

    def key_names(
        self, topic: str, key: str | None = None, *, partitions: int | None = None
    ) -> list[tuple[str, str]]:
        """The Redis keys of ``topic`` in this client's layout, as (what, name), for debugging and
        publishers in other languages (``actionhub keys``): its stream, dead letters, partition
        count, delayed set and partition streams (of ``partitions``, else of the topic's count,
        read); with ``key``, the partition stream a message with that ordering key goes to."""
        return self._run(self._ops.key_names(topic, key, partitions), "read key names")

    def hubs(self) -> list[HubSnapshot]:
        """The latest snapshot of every live hub, as ``actionhub stats`` shows them."""
        return self._run(self._ops.hubs(), "read hubs")

    def command(
        self, verb: str, group: str, *, timeout: float = 5.0, **arguments: int
    ) -> list[CommandAnswer]:
        """``scale`` (``min_workers=``, ``max_workers=``), ``pause``, ``resume`` or ``restart``
        ``group`` on every live hub; one answer per hub (``silent`` past ``timeout``)."""
        return self._run(self._ops.command(verb, group, timeout=timeout, **arguments), "send a command")

    # ------------------------------------------------------------------ the driver

    def _run(self, op: Op[T], what: str) -> T:
        reply: Any = None
        try:
            while True:
                call = op.send(reply)
                if not self._ops.layout_checked:  # after the op's checks of its input
                    self._run_plain(self._ops.check_layout())
                reply = self._send_once(call) if isinstance(call, Once) else self._execute(call)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except REDIS_ERRORS as error:
            abandon(op, error)
            raise bus_error(error, what, self.url) from error
        except BaseException as error:  # KeyboardInterrupt, or a bug: the operation ends here
            abandon(op, error)
            raise

    def _run_plain(self, op: Op[None]) -> None:
        """``op``, whose calls are neither `Once` nor to be abandoned."""
        reply: Any = None
        try:
            while True:
                reply = self._execute(op.send(reply))
        except StopIteration:
            return

    def _send_once(self, call: Once) -> Any:
        """``call.first``; after a broken connection or a timeout, its resends (see `Once`)."""
        started = time.monotonic()
        try:
            return self._attempt(call, call.first)
        except REDIS_ERRORS as error:
            if not resendable(error):
                raise
            failure = error
        for delay in RETRY_DELAYS:
            time.sleep(delay)
            elapsed = time.monotonic() - started
            if elapsed > self._ops.options.publish_timeout:
                break
            try:
                return self._attempt(call, call.again(elapsed))
            except REDIS_ERRORS as error:
                if not resendable(error):
                    raise
                failure = error
        raise failure

    def _attempt(self, call: Once, attempt: Command | Script) -> Any:
        """One attempt of ``call``: ``attempt`` (its first, or a resend), confirmed if it must be."""
        if call.confirm is None:
            return self._execute(attempt)
        return self._confirmed(attempt, call.confirm)

    def _confirmed(self, call: Command | Script | Transaction, confirm: Confirm) -> Any:
        """``call`` and its WAIT in one pipeline (`confirmed_call`): its reply."""
        timeout = self._ops.options.durable_timeout
        try:
            commands, reply = confirmed_call(call, confirm, timeout)
            return reply(self._pipelined(commands))
        except NoScriptError:  # a script not loaded yet, or Redis restarted: load it, once more
            commands, reply = confirmed_call(call, confirm, timeout, load=True)
            return reply(self._pipelined(commands))

    def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """A write and its WAIT on one connection: on a cluster, of the node of the write's slot
        (redis-py's cluster pipeline cannot route a WAIT), as the hub's thread path does."""
        client = self._client
        if isinstance(client, RedisCluster):
            return on_node(client, commands)
        return pipelined(client, commands)

    def _execute(self, call: Call) -> Any:
        client = self._client
        if isinstance(call, Command):
            return client.execute_command(*call.args)
        if isinstance(call, Transaction):
            if call.confirm is not None:
                return self._confirmed(call, call.confirm)
            with client.pipeline(transaction=True) as pipe:
                for args in call.commands:
                    pipe.execute_command(*args)
                return pipe.execute()
        if isinstance(call, Script):
            try:
                return client.execute_command(*evalsha(call))
            except NoScriptError:  # not loaded yet, or Redis restarted: load it, once more
                client.execute_command("SCRIPT", "LOAD", call.source)
                return client.execute_command(*evalsha(call))
        if isinstance(call, Pipeline):
            try:
                return pipelined(client, call.commands)
            except NoScriptError:  # a script not loaded yet (on some node), or Redis restarted
                if not call.load:
                    raise
                for source in call.load:
                    client.execute_command("SCRIPT", "LOAD", source)  # on a cluster: every primary
                return pipelined(client, call.commands)
        assert isinstance(call, Scan)
        return list(client.scan_iter(match=call.pattern, count=1000))

"""Publishing once through lost replies: a publish script's first attempt, its resends (which
write nothing the first attempt wrote: see once.py) and confirmation by replicas, for both
transports' publishes and the schedules' ticks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio
from redis.exceptions import NoScriptError

from ...errors import BusError
from . import scripts_cluster
from .cluster import REDIS_ERRORS
from .cluster_wire import ClusterWire
from .connection import RedisConnection
from .durable import Confirm, publish_confirm
from .once import KeptTopics, look_back, pending, publish_script, writes_status
from .options import RedisOptions
from .replication import durably
from .wire import Command

log = logging.getLogger("actionhub.redis")


class Publishing(RedisConnection):
    """The publish-once calls of a Redis bus (its transports build each publish's script call)."""

    def __init__(self, url: str, redis_url: str, options: RedisOptions, *, client: Any = None) -> None:
        super().__init__(url, redis_url, options, client=client)
        # both transports' publish; in the cluster layout PUBLISH_ONCE_C, then PENDING if kept
        self._publish_once = self.client.register_script(publish_script(self.keys))
        self.writes_status = writes_status(self.keys)  # False: `write_pending` after a kept publish
        self._pending = None if self.writes_status else self.client.register_script(scripts_cluster.PENDING)
        self.kept_topics = KeptTopics()  # which topics keep results: their publishes run the script

    def confirm(
        self, topic: str, replicas: int | None = None, *, target: str | None = None
    ) -> Confirm | None:
        """How a publish to ``topic`` is confirmed: by ``replicas`` (None: the URL's ``durable``)
        replicas; None if by none. ``target``: the stream written (the cluster layout's mark
        goes in its slot)."""
        wanted = self.options.durable if replicas is None else replicas
        return publish_confirm(self.keys, topic, wanted, None if self.writes_status else target)

    async def write_pending(self, topic: str, message_ids: Sequence[str]) -> None:
        """The cluster layout: the pending status records of ``message_ids``, just published to
        ``topic``, which keeps results (`scripts_cluster.PENDING`, NX; one round trip, each in its
        own slot). Not written in time (or refused) is said, not raised: the messages are
        published, and their status reads ``unknown`` until their run starts."""
        if self._pending is None or not message_ids:
            return
        keep = self.kept_topics.seconds(topic)
        calls = [(self._pending, *pending(self.keys, topic, message_id, keep)) for message_id in message_ids]
        try:
            await self.run_scripts(
                calls, what="publish", deadline=trio.current_time() + self.options.publish_timeout
            )
        except (BusError, *REDIS_ERRORS) as error:
            log.warning(
                "%d message(s) of %s published, but not their pending status: %s (it reads unknown "
                "until their run starts)",
                len(message_ids),
                topic,
                error,
            )

    async def run_script_once(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        back: int,
        *,
        confirm: Confirm | None = None,
        what: str = "publish",
    ) -> list[Any]:
        """One attempt of a publish script: ``build(back)`` gives its keys and arguments (``back``:
        0 for a first attempt, else a resend's `look_back`); its reply, in a list. ``confirm``:
        `NotReplicated` unless enough replicas confirm it."""
        keys, args = build(back)
        if confirm is not None:
            command: Command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            return await durably(self, [command], confirm, what=what, scripts=[script])
        wire = self.wire
        if wire is None:
            run = partial(script, keys=keys, args=args)  # redis-py's Script loads it if need be
            return [await trio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=self._threads)]
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await wire.execute(command)
        except NoScriptError:  # Redis restarted, or SCRIPT FLUSH
            if isinstance(wire, ClusterWire):  # it loads it on the node that lacks it
                await self.load_scripts([script], what=what)
            else:
                await wire.execute(("SCRIPT", "LOAD", script.script))
            return await wire.execute(command)

    async def resend(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        elapsed: float,
        *,
        confirm: Confirm | None = None,
        what: str = "publish",
    ) -> list[Any]:
        """The resend of a publish first sent ``elapsed`` seconds ago (see once.py)."""
        return await self.run_script_once(script, build, look_back(elapsed), confirm=confirm, what=what)

    async def send_once(
        self,
        script: Any,
        build: Callable[[int], tuple[list[str], list[Any]]],
        *,
        what: str,
        confirm: Confirm | None = None,
    ) -> Any:
        """A publish script, retried for ``publish_timeout`` as a resend that writes nothing
        its first attempt wrote; its reply. ``confirm``: it returns once enough replicas
        confirm it; one not confirmed in time is resent like one whose reply was lost."""
        (reply,) = await self.call_async(
            partial(self.run_script_once, script, build, 0, confirm=confirm, what=what),
            what=what,
            deadline=trio.current_time() + self.options.publish_timeout,
            again=partial(self.resend, script, build, confirm=confirm, what=what),
        )
        return reply

    async def keeps_results(self, topic: str) -> bool:
        """Whether ``topic`` keeps results, as `kept_topics` knows it, read again when stale."""
        kept = self.kept_topics.kept(topic)
        if kept is None:
            key = self.keys.keeps_results(topic)
            ((raw,),) = await self.execute(
                [("MGET", key)],
                what="publish",  # read as part of one, for as long as one retries
                deadline=trio.current_time() + self.options.publish_timeout,
            )
            kept = self.kept_topics.learn(topic, raw is not None, None if raw is None else float(raw))
        return kept

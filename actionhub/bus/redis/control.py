"""Request/reply and operator control over Redis: a reply address and a command's answers are
lists (a reply pushed before its requester waits is not lost); commands reach every hub on the
pub/sub channel ``<prefix>control``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import trio

from ...errors import MalformedMessage
from ...message import Message, decode
from ..base import ControlRequest, ReplyChannel
from .channels import Channel
from .entries import control_document

if TYPE_CHECKING:
    from .common import RedisBusBase

log = logging.getLogger("actionhub.redis")


@asynccontextmanager
async def control_requests(bus: RedisBusBase) -> AsyncIterator[trio.MemoryReceiveChannel[ControlRequest]]:
    """Commands arrive on the pub/sub channel ``<prefix>control``; answers go to the list
    key the sender named, so none is lost to a late BLPOP."""
    send, receive = trio.open_memory_channel[ControlRequest](100)
    channel = bus.keys.control
    pubsub = Channel(bus.client, channel)  # made again if its cluster node fails
    await bus.call(pubsub.subscribe, what="subscribe to control")

    async def listen() -> None:
        while True:
            item = await bus.call(
                lambda: pubsub.get_message(timeout=bus.options.block), what="control", blocks=True
            )
            if item is not None and item["type"] == "message":
                try:
                    request = RedisControlRequest(bus, item["data"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    log.error("ignored a malformed control command on %s", channel)
                    continue
                send.send_nowait(request)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bus.keep_running, "listening for control commands", listen)
            try:
                yield receive
            finally:
                nursery.cancel_scope.cancel()
    finally:
        send.close()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await bus.call(pubsub.close, what="unsubscribe from control")


async def send_control(bus: RedisBusBase, command: bytes, *, timeout: float, expect: int) -> list[bytes]:
    reply_to = bus.keys.new_reply()
    document = control_document(command, reply_to)
    deadline = trio.current_time() + timeout
    await bus.call(lambda: bus.client.publish(bus.keys.control, document), what="send control")
    answers: list[bytes] = []
    try:
        while len(answers) < expect:
            left = deadline - trio.current_time()
            if left <= 0:
                break
            wait = min(left, bus.options.block)
            popped = await bus.call(
                partial(bus.client.blpop, [reply_to], timeout=wait), what="wait for answers", blocks=True
            )
            if popped is not None:
                answers.append(popped[1])
    finally:
        with trio.CancelScope(shield=True):
            await bus.call(lambda: bus.client.execute_command("DEL", reply_to), what="drop answer key")
    return answers


class RedisControlRequest(ControlRequest):
    def __init__(self, bus: RedisBusBase, raw: bytes) -> None:
        document = orjson.loads(raw)
        self.reply_to: str = document.pop("reply_to")
        self.command = orjson.dumps(document)
        self._bus = bus

    async def answer(self, reply: bytes) -> None:
        bus, key = self._bus, self.reply_to

        def push() -> None:
            with bus.client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, reply)
                pipe.expire(key, 60)
                pipe.execute()

        await bus.call(push, what="answer control")


class RedisReplyChannel(ReplyChannel):
    """A reply address is a Redis list: a reply pushed before the requester waits is not lost."""

    def __init__(self, bus: RedisBusBase, address: str) -> None:
        self.bus = bus
        self.address = address

    async def receive(self) -> Message:
        client, block = self.bus.client, self.bus.options.block
        while True:
            popped: Any = await self.bus.call(
                lambda: client.blpop([self.address], timeout=block), what="wait for reply", blocks=True
            )
            if popped is not None:
                raw = popped[1]
                try:
                    return decode(self.address, raw, max_bytes=self.bus.options.max_message_bytes)
                except MalformedMessage as exc:
                    log.error("dropped a malformed reply on %s: %s", self.address, exc)

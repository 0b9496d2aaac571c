"""Fake Redis Cluster nodes on loopback, speaking RESP2, for `ClusterWire`'s unit tests: two
primaries sharing the slots, with the redirections a real cluster gives (MOVED, ASK for a slot
being migrated, TRYAGAIN, NOSCRIPT) under the tests' control."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import hiredis
import trio

from actionhub.bus.redis.slots import SLOTS, command_keys, key_slot


class Status(bytes):
    """A simple-string reply (``+OK``)."""


@attrs.frozen
class Err:
    """An error reply."""

    message: str


def encode(reply: Any) -> bytes:
    if isinstance(reply, Err):
        return b"-%s\r\n" % reply.message.encode()
    if isinstance(reply, Status):
        return b"+%s\r\n" % reply
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, (bytes, str)):
        data = reply.encode() if isinstance(reply, str) else reply
        return b"$%d\r\n%s\r\n" % (len(data), data)
    return b"*%d\r\n" % len(reply) + b"".join(map(encode, reply))


OK = Status(b"OK")


@attrs.define
class _Client:
    asking: bool = False
    queue: list[list[bytes]] | None = None
    dirty: bool = False


@attrs.define(eq=False)
class FakeNode:
    world: FakeCluster
    port: int = 0
    store: dict[bytes, list[bytes]] = attrs.field(factory=dict)
    scripts: set[str] = attrs.field(factory=set)
    seen: list[list[bytes]] = attrs.field(factory=list)
    drop_on: bytes | None = None  # a command holding this closes the connection, unanswered
    streams: set[trio.SocketStream] = attrs.field(factory=set)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def names(self) -> list[bytes]:
        return [command[0].upper() for command in self.seen]

    async def handle(self, stream: trio.SocketStream) -> None:
        self.streams.add(stream)
        reader, client = hiredis.Reader(), _Client()
        try:
            while data := await stream.receive_some(1 << 16):
                reader.feed(data)
                out = []
                while (command := reader.gets()) is not False:
                    if self.drop_on is not None and any(self.drop_on in arg for arg in command):
                        await stream.aclose()
                        return
                    self.seen.append(command)
                    out.append(encode(self.run(command, client)))
                await stream.send_all(b"".join(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.streams.discard(stream)

    def run(self, command: list[bytes], client: _Client) -> Any:
        name = command[0].upper()
        if name == b"ASKING":
            client.asking = True
            return OK
        if name == b"MULTI":
            client.queue, client.dirty = [], False
            return OK
        if name == b"EXEC":
            queue, client.queue, client.asking = client.queue or [], None, False
            return Err("EXECABORT discarded") if client.dirty else [self.apply(c) for c in queue]
        redirect = self.redirect(command, client.asking)
        if client.queue is not None:
            if redirect is not None:
                client.dirty = True
                return redirect
            client.queue.append(command)
            return Status(b"QUEUED")
        client.asking = False
        return redirect if redirect is not None else self.apply(command)

    def redirect(self, command: list[bytes], asking: bool) -> Err | None:
        keys = command_keys(command)
        if not keys:
            return None
        world, slot = self.world, key_slot(keys[0])
        if world.tryagain > 0:
            world.tryagain -= 1
            return Err("TRYAGAIN Multiple keys request during rehashing of slot")
        owner, migration = world.owners[slot], world.migrating.get(slot)
        if owner is self:
            if migration is not None and keys[0] not in self.store:
                return Err(f"ASK {slot} 127.0.0.1:{migration.port}")
            return None
        if migration is self and asking:
            return None
        return Err(f"MOVED {slot} 127.0.0.1:{owner.port}")

    def apply(self, command: list[bytes]) -> Any:
        name, args = command[0].upper(), command[1:]
        if name == b"RPUSH":
            values = self.store.setdefault(args[0], [])
            values += args[1:]
            return len(values)
        if name == b"LRANGE":
            return self.store.get(args[0], [])
        if name == b"PING":
            return Status(b"PONG")
        if name == b"ECHO":
            return args[0]
        if name == b"WAIT":
            return self.port  # so a test sees which node answered
        if name == b"SCRIPT" and args[0].upper() == b"LOAD":
            sha = hashlib.sha1(args[1]).hexdigest()
            self.scripts.add(sha)
            return sha
        if name == b"EVALSHA":
            if args[0].decode() not in self.scripts:
                return Err("NOSCRIPT No matching script. Please use EVAL.")
            self.store.setdefault(args[2], []).append(b"script")
            return b"ran"
        if name == b"CLUSTER" and args[0].upper() == b"SHARDS":
            return self.world.shards()
        return Err(f"ERR unknown command '{name.decode()}'")


@attrs.define(eq=False)
class FakeCluster:
    """Two fake primaries: ``a`` owns slots 0-8191, ``b`` the rest."""

    nodes: list[FakeNode] = attrs.field(factory=list)
    owners: list[FakeNode] = attrs.field(factory=list)
    migrating: dict[int, FakeNode] = attrs.field(factory=dict)  # slot -> node importing it
    tryagain: int = 0  # how many keyed commands answer TRYAGAIN

    @property
    def a(self) -> FakeNode:
        return self.nodes[0]

    @property
    def b(self) -> FakeNode:
        return self.nodes[1]

    def shards(self) -> list[Any]:
        shards = []
        for node in self.nodes:
            ranges: list[int] = []
            for slot in range(SLOTS):
                if self.owners[slot] is not node:
                    continue
                if ranges and ranges[-1] == slot - 1:
                    ranges[-1] = slot
                else:
                    ranges += [slot, slot]
            about = [b"id", b"%d" % node.port, b"port", node.port, b"ip", b"127.0.0.1"]
            about += [b"endpoint", b"127.0.0.1", b"role", b"master", b"health", b"online"]
            shards.append([b"slots", ranges, b"nodes", [about]])
        return shards


@asynccontextmanager
async def fake_cluster() -> AsyncIterator[FakeCluster]:
    world = FakeCluster()
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            node = FakeNode(world)
            listeners = await nursery.start(partial(trio.serve_tcp, node.handle, 0, host="127.0.0.1"))
            node.port = listeners[0].socket.getsockname()[1]
            world.nodes.append(node)
        world.owners = [world.a] * (SLOTS // 2) + [world.b] * (SLOTS // 2)
        yield world
        nursery.cancel_scope.cancel()


def key_on(node: FakeNode, name: str) -> str:
    """A key named after ``name`` whose slot ``node`` owns."""
    for i in range(1000):
        key = f"{{{name}{i}}}"
        if node.world.owners[key_slot(key)] is node:
            return key
    raise AssertionError("no key found")

"""A private Redis Cluster: one node holding every slot, or primaries with replicas."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis

from ._server import Deployment, RedisServer, _free, _pairs


class RedisCluster(Deployment):
    """A private Redis Cluster on loopback, for tests and benchmarks: ``primaries`` nodes sharing
    the 16384 slots, each with ``replicas`` replicas, every node a `RedisServer` in its own
    temporary directory. One primary holds every slot itself (cheap, and it still refuses
    cross-slot commands as any cluster does); more are built by ``redis-cli --cluster create``,
    which needs at least 3. Blocking methods; from trio use ``trio.to_thread``.

    Used by the cluster transport's tests (issue 20 part 3). Replication, not the append-only
    file, is what keeps data across a node's death here (``appendonly`` is off by default).
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 1,
        appendonly: bool = False,
        node_timeout: int = 2000,
        binary: str = "redis-server",
        cli: str = "redis-cli",
    ) -> None:
        """``node_timeout``: ``cluster-node-timeout`` in ms (a primary's death is noticed after
        it, and its replica promoted about 2 x later)."""
        if replicas < 0 or not (primaries >= 3 or (primaries == 1 and replicas == 0)):
            raise ValueError("a cluster has 1 primary (and no replica) or at least 3 primaries")
        for name in (binary, cli):
            if shutil.which(name) is None:
                raise FileNotFoundError(f"{name} is not on PATH (install the redis-server package)")
        self.cli = cli
        self._appendonly, self._binary = appendonly, binary
        self._node_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self._node_args += ["--cluster-node-timeout", str(node_timeout)]
        # Replicas sync at once (not after 5 s), and their offset, which CLUSTER SHARDS shows as
        # "loading" while 0, moves within a second even without writes (not after 10 s).
        self._node_args += ["--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"]
        self._sizes = (primaries, replicas)
        self.nodes: list[RedisServer] = []
        self._dead: dict[RedisServer, int | None] = {}  # killed node -> a slot it owned
        self._migrations: dict[int, tuple[RedisServer, RedisServer]] = {}  # slot -> (from, to)

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return f"redis+cluster://{','.join(f'127.0.0.1:{node.port}' for node in self.nodes)}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, make them a cluster and wait until it is ready (`wait_ready`)."""
        primaries, replicas = self._sizes
        self.nodes = [self._start_node() for _ in range(primaries * (1 + replicas))]
        if primaries == 1:
            self.call(self.nodes[0], "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        else:
            command = [self.cli, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes)]
            command += ["--cluster-replicas", str(replicas), "--cluster-yes"]
            made = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
            if made.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{made.stdout}{made.stderr}")
        self.wait_ready(timeout)

    def _start_node(self) -> RedisServer:
        """A started node on a port whose cluster bus port (+10000) is free too. Both lie below
        the ephemeral range (32768 up), where a passing outgoing connection could hold one."""
        for _ in range(20):
            port = random.randrange(20000, 22768)
            if not (_free(port) and _free(port + 10000)):
                continue
            node = RedisServer(
                port=port, appendonly=self._appendonly, binary=self._binary, extra_args=self._node_args
            )
            try:
                node.start()
                return node
            except RuntimeError as exc:
                node.close()
                if "already in use" not in str(exc):  # taken since we looked: try other ports
                    raise
        raise RuntimeError("no free port pair for a cluster node")

    @staticmethod
    def call(node: RedisServer, *args: str | bytes | int) -> Any:
        """One command to ``node``, its reply (RESP2, as bytes); an error reply raises RuntimeError."""
        reader = hiredis.Reader()
        request = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            request += [b"$%d\r\n" % len(data), data, b"\r\n"]
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as conn:
            conn.sendall(b"".join(request))
            reply = reader.gets()
            while reply is False:
                data = conn.recv(1 << 16)
                if not data:
                    raise ConnectionError(f"node {node.port} closed the connection")
                reader.feed(data)
                reply = reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"{' '.join(map(str, args[:3]))}... on node {node.port}: {reply}")
        return reply

    @property
    def live(self) -> list[RedisServer]:
        """The nodes not killed."""
        return [node for node in self.nodes if node not in self._dead]

    def node_id(self, node: RedisServer) -> str:
        return str(self.call(node, "CLUSTER", "MYID").decode())

    def shards(self, node: RedisServer | None = None) -> list[tuple[list[int], list[dict[str, Any]]]]:
        """``CLUSTER SHARDS`` as ``node`` (default: the first live one) sees it: for each shard,
        its slot ranges ``[first, last, ...]`` and its nodes (``port``, ``role``, ``health``...)."""
        reply = self.call(node or self.live[0], "CLUSTER", "SHARDS")
        shards = []
        for shard in map(_pairs, reply):
            nodes = [
                {k: v.decode() if isinstance(v, bytes) else v for k, v in _pairs(n).items()}
                for n in shard["nodes"]
            ]
            shards.append((list(shard["slots"]), nodes))
        return shards

    def primary_of(self, slot: int) -> RedisServer:
        """The live node serving ``slot``."""
        for slots, nodes in self.shards():
            if any(first <= slot <= last for first, last in zip(slots[::2], slots[1::2], strict=True)):
                found = self._live_with(n["port"] for n in nodes if n["role"] == "master")
                if found:
                    return found[0]
        raise LookupError(f"no live node serves slot {slot}")

    def primaries(self) -> list[RedisServer]:
        """The live nodes serving slots."""
        return self._live_with(
            n["port"] for slots, nodes in self.shards() if slots for n in nodes if n["role"] == "master"
        )

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The live replicas of ``primary``."""
        for _, nodes in self.shards():
            if any(n["port"] == primary.port and n["role"] == "master" for n in nodes):
                return self._live_with(n["port"] for n in nodes if n["role"] != "master")
        return []

    def _live_with(self, ports: Iterable[int]) -> list[RedisServer]:
        wanted = set(ports)
        return [node for node in self.live if node.port in wanted]

    def _slots_of(self, node: RedisServer) -> list[int]:
        """The slot ranges ``node`` serves (``[first, last, ...]``)."""
        for slots, nodes in self.shards():
            if any(n["port"] == node.port and n["role"] == "master" for n in nodes):
                return slots
        return []

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok``, they all see the same shards,
        every slot is served by a live primary and every live node is ``online`` (replicas have
        synchronised)."""
        deadline = time.monotonic() + timeout
        while (problem := self._not_ready()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not settle in {timeout} s: {problem}")
            time.sleep(0.05)

    def _not_ready(self) -> str | None:
        """What keeps the cluster from being ready, or None."""
        ports = {node.port for node in self.live}
        views = set()
        for node in self.live:
            if b"cluster_state:ok" not in self.call(node, "CLUSTER", "INFO"):
                return f"node {node.port} is not ok"
            view = frozenset(
                (
                    tuple(slots),
                    frozenset((n["port"], n["role"], n["health"]) for n in nodes if n["port"] in ports),
                )
                for slots, nodes in self.shards(node)
            )
            views.add(view)
        if len(views) > 1:
            return "the nodes disagree"
        (view,) = views
        seen = [(port, health) for _, nodes in view for port, _, health in nodes]
        if sorted(port for port, health in seen if health == "online") != sorted(ports):
            return f"nodes not (yet) online: {sorted(seen)}"
        served = sum(
            last - first + 1
            for slots, nodes in view
            if any(role == "master" for _, role, _ in nodes)
            for first, last in zip(slots[::2], slots[1::2], strict=True)
        )
        return None if served == 16384 else f"{16384 - served} slots have no live primary"

    def kill(self, node: RedisServer) -> None:
        """SIGKILL ``node``: a crash. A primary's replica takes over after `wait_for_promotion`."""
        slots = self._slots_of(node)
        node.kill()
        self._dead[node] = slots[0] if slots else None

    def wait_for_promotion(self, killed: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until a replica of the killed primary ``killed`` serves its slots; that replica."""
        slot = self._dead[killed]
        if slot is None:
            raise ValueError(f"node {killed.port} was not a primary when it was killed")
        self.wait_ready(timeout)
        return self.primary_of(slot)

    def revive(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed node again (it rejoins, as a replica if it was replaced) and wait_ready."""
        node.start()
        del self._dead[node]
        self.wait_ready(timeout)

    def failover(self, replica: RedisServer, timeout: float = 30.0) -> None:
        """``CLUSTER FAILOVER`` on ``replica``: it and its primary swap roles, losing nothing."""
        self.call(replica, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while not self._slots_of(replica):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {replica.port} did not take over in {timeout} s")
            time.sleep(0.05)
        self.wait_ready(max(0.0, deadline - time.monotonic()))

    def reshard(self, slot: int, to: RedisServer, timeout: float = 30.0) -> None:
        """Move ``slot`` and its keys to the primary ``to``, as ``redis-cli --cluster reshard``
        does (which cannot pick the slot: it moves the source's lowest)."""
        self.open_migration(slot, to)
        self.finish_migration(slot, timeout)

    def open_migration(self, slot: int, to: RedisServer, keys: Sequence[str | bytes] = ()) -> None:
        """Start moving ``slot`` to ``to`` and move ``keys`` of it now: until `finish_migration`
        its other keys stay behind (clients get ASK for keys moved, TRYAGAIN for a split set)."""
        source = self.primary_of(slot)
        if source is to:
            raise ValueError(f"slot {slot} is on node {to.port} already")
        self.call(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        self.call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(to))
        self._migrations[slot] = (source, to)
        if keys:
            self.call(source, "MIGRATE", "127.0.0.1", to.port, "", 0, 10000, "KEYS", *keys)

    def finish_migration(self, slot: int, timeout: float = 30.0) -> None:
        """Move the rest of ``slot``'s keys, hand the slot over and wait until every node agrees."""
        source, to = self._migrations.pop(slot)
        while keys := self.call(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            self.call(source, "MIGRATE", "127.0.0.1", to.port, "", 0, 10000, "KEYS", *keys)
        owner = self.node_id(to)
        for node in [to, source, *(p for p in self.primaries() if p not in (to, source))]:
            self.call(node, "CLUSTER", "SETSLOT", slot, "NODE", owner)
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove its directory."""
        for node in self.nodes:
            node.close()
        self._dead.clear()

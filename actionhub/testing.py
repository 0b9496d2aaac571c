"""Helpers for testing code that uses actionhub (shipped in the package, like ``trio.testing``)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import attrs
import hiredis

from .stats import WorkerStat
from .supervision.escalation import Escalation
from .supervision.policy import Behaviour, Instance


def worker_stat(addr: str, **fields: object) -> WorkerStat:
    """A `WorkerStat` of group ``addr`` (on topic ``addr``) with every counter 0, but ``fields``:
    a snapshot to feed what reads them (a dashboard, an exporter) without running a hub."""
    required = {f.name: 0 for f in attrs.fields(WorkerStat) if f.default is attrs.NOTHING}  # counters
    base: dict[str, object] = {
        **required,
        "addr": addr,
        "topic": addr,
        "instance": Instance.SCALING,
        "behaviour": Behaviour.RESTART_ONE,
    }
    return WorkerStat(**{**base, **fields})  # type: ignore[arg-type]


class EscalationLog(list[Escalation]):
    """An escalation callback that records what it receives: ``ActionHub(on_escalation=log)``."""

    def __call__(self, escalation: Escalation) -> None:
        self.append(escalation)

    def reasons(self) -> list[str]:
        """The ``reason`` of each escalation received, in order."""
        return [e.reason for e in self]


class RedisServer:
    """A private ``redis-server`` on a free loopback port (and a unix socket) in a temporary
    directory, for tests and benchmarks. Blocking methods; from trio use ``trio.to_thread``.

    With ``appendonly`` (the default) every write is fsynced, so `restart` and `kill` + `start`
    keep the data, like a production server configured for durability.
    """

    def __init__(
        self,
        *,
        appendonly: bool = True,
        binary: str = "redis-server",
        tls: tuple[str, str, str] | None = None,
        tls_protocols: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        """``tls``: (certificate, key, CA certificate) files; the server then also listens with
        TLS on `tls_port` (clients are not asked for certificates); ``tls_protocols``: Redis's
        ``tls-protocols``, say ``"TLSv1.2"`` (default: what Redis allows); ``extra_args``: more
        command-line options, say ``("--replicaof", "127.0.0.1", "6380")``; ``port``: the port
        (default: a free one)."""
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not on PATH (install the redis-server package)")
        self.binary = found
        self.appendonly = appendonly
        self.port = port or _free_port()
        self.directory = tempfile.mkdtemp(prefix="actionhub-redis-")
        self.unix_socket: str | None = os.path.join(self.directory, "redis.sock")
        self.tls = tls
        self.tls_protocols = tls_protocols
        self.extra_args = tuple(extra_args)
        self.tls_port = _free_port() if tls else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again, on the same port and directory) and wait until it answers."""
        self._process = subprocess.Popen(self._command(), cwd=self.directory, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.02)

    def _command(self) -> list[str]:
        """The command line that starts this server."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory]
        command += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700", "--save", ""]
        command += ["--daemonize", "no", "--protected-mode", "no", "--logfile", "redis.log"]
        if self.tls is not None:
            cert, key, ca = self.tls
            command += ["--tls-port", str(self.tls_port), "--tls-cert-file", cert, "--tls-key-file", key]
            command += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
            if self.tls_protocols:
                command += ["--tls-protocols", self.tls_protocols]
        if self.appendonly:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        return command + list(self.extra_args)

    @property
    def running(self) -> bool:
        """Whether its process is alive (started, and neither stopped nor killed since)."""
        return self._process is not None and self._process.poll() is None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM), killing it if it does not exit within 10 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a paused server could not exit
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Redis and its clients can tell."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: Redis hangs (connections stay open, nothing answers) until `resume`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`: Redis answers again, starting with what waited meanwhile."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same port and directory (the append-only file reloads)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = os.path.join(self.directory, "redis.log")
        if not os.path.exists(path):
            return "(no log)"
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisCluster:
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

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A RESP2 ``[name, value, ...]`` reply as a dict with text names."""
    return {name.decode(): value for name, value in zip(flat[::2], flat[1::2], strict=True)}


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_command(port: int, *args: str | int, timeout: float = 2.0) -> Any:
    """One command to the Redis (or Sentinel) on loopback ``port``: its reply as hiredis parses
    it (an error reply is returned, a `hiredis.ReplyError`, not raised)."""
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(hiredis.pack_command(cast(Any, args)))
        while (reply := reader.gets()) is False:
            data = conn.recv(1 << 16)
            if not data:
                raise ConnectionError(f"port {port} closed the connection")
            reader.feed(data)
    return reply


class SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` on a free loopback port, given its configuration (it rewrites
    the file as it learns: replicas, other sentinels, failovers)."""

    def __init__(self, config: str, *, binary: str = "redis-server") -> None:
        super().__init__(appendonly=False, binary=binary)
        self.config = os.path.join(self.directory, "sentinel.conf")
        with open(self.config, "w") as file:
            file.write(config)

    def _command(self) -> list[str]:
        binary, *options = super()._command()
        return [binary, self.config, "--sentinel", *options]


class RedisSentinels:
    """A primary, its replicas and the sentinels that watch them, each a private server on a free
    loopback port: a Sentinel deployment for tests and benchmarks. `url` is its
    ``redis+sentinel://`` URL; `kill_primary` and `wait_failover` make a failover happen.

    ``down_after`` and ``failover_timeout`` (seconds) are Sentinel's ``down-after-milliseconds``
    and ``failover-timeout``, short by default so that a failover takes a few seconds.
    """

    def __init__(
        self,
        *,
        service: str = "actionhub",
        replicas: int = 1,
        sentinels: int = 3,
        down_after: float = 1.0,
        failover_timeout: float = 3.0,
        binary: str = "redis-server",
    ) -> None:
        self.service = service
        # a full sync starts at once, not after the 5 s Redis waits for more replicas by default
        at_once = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(appendonly=False, binary=binary, extra_args=at_once)
        replica_of = (*at_once, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.servers = [self.primary]
        self.servers += [
            RedisServer(appendonly=False, binary=binary, extra_args=replica_of) for _ in range(replicas)
        ]
        config = (
            f"sentinel monitor {service} 127.0.0.1 {self.primary.port} {sentinels // 2 + 1}\n"
            f"sentinel down-after-milliseconds {service} {int(down_after * 1000)}\n"
            f"sentinel failover-timeout {service} {int(failover_timeout * 1000)}\n"
        )
        self.sentinels = [SentinelServer(config, binary=binary) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<port>,.../<service>/0``."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start every server, then wait until the replicas are in sync and every sentinel knows
        the primary, its replicas and the other sentinels (`wait_settled`)."""
        for server in self.servers:
            server.start()
        # the sentinels learn the replicas from the primary's INFO, which they ask for at once
        self._wait(self._replicas_in_sync, timeout, "the replicas to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel names `primary`, sees it and every live replica up, and
        sees every other sentinel (a failover needs their quorum and a majority)."""
        self._wait(self._settled, timeout, "the sentinels to settle")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (a crash); the server killed."""
        killed = self.primary
        killed.kill()
        return killed

    def wait_failover(self, timeout: float = 30.0) -> RedisServer:
        """Wait until every sentinel names a new primary and it says it is one; the new
        `primary`."""
        old = self.primary

        def done() -> bool:
            named = {self._named_port(sentinel) for sentinel in self.sentinels if sentinel.running}
            port = named.pop() if len(named) == 1 else None
            if port is None or port == old.port or redis_command(port, "ROLE")[0] != b"master":
                return False
            self.primary = next(server for server in self.servers if server.port == port)
            return True

        self._wait(done, timeout, "a failover")
        return self.primary

    def _named_port(self, sentinel: SentinelServer) -> int | None:
        reply = redis_command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(reply[1]) if isinstance(reply, list) else None

    def _replicas_in_sync(self) -> bool:
        for server in self.servers:
            if server is not self.primary and server.running:
                info = redis_command(server.port, "INFO", "replication").decode()
                if f"master_port:{self.primary.port}\r" not in info or "master_link_status:up" not in info:
                    return False
        return True

    def _settled(self) -> bool:
        live_replicas = {s.port for s in self.servers if s is not self.primary and s.running}
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            master = _fields(redis_command(sentinel.port, "SENTINEL", "MASTER", self.service))
            replicas = [
                _fields(r) for r in redis_command(sentinel.port, "SENTINEL", "REPLICAS", self.service)
            ]
            up = {
                int(r["port"])
                for r in replicas
                if r["flags"] == "slave"
                and r["master-link-status"] == "ok"
                and int(r["master-port"]) == self.primary.port
            }
            others = sum(s.running for s in self.sentinels) - 1
            if (
                master.get("flags") != "master"
                or int(master["port"]) != self.primary.port
                or int(master["num-other-sentinels"]) < others
                or not live_replicas <= up
            ):
                return False
        return self._replicas_in_sync()

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every server and remove their directories."""
        for server in [*self.sentinels, *self.servers]:
            server.close()

    def __enter__(self) -> RedisSentinels:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fields(reply: list[bytes]) -> dict[str, str]:
    """A Sentinel reply of names and values (``SENTINEL MASTER``): a dict of strings."""
    return {name.decode(): value.decode() for name, value in zip(reply[::2], reply[1::2], strict=True)}

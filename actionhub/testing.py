"""Helpers for testing code that uses actionhub (shipped in the package, like ``trio.testing``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
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
    ) -> None:
        """``tls``: (certificate, key, CA certificate) files; the server then also listens with
        TLS on `tls_port` (clients are not asked for certificates); ``tls_protocols``: Redis's
        ``tls-protocols``, say ``"TLSv1.2"`` (default: what Redis allows); ``extra_args``: more
        command-line options, say ``("--replicaof", "127.0.0.1", "6380")``."""
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not on PATH (install the redis-server package)")
        self.binary = found
        self.appendonly = appendonly
        self.port = _free_port()
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

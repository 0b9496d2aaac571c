"""A private Sentinel deployment: a primary, its replicas and the sentinels watching them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ._server import Deployment, RedisServer, _pairs, redis_command


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


class RedisSentinels(Deployment):
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
            master = _text(_pairs(redis_command(sentinel.port, "SENTINEL", "MASTER", self.service)))
            replicas = [
                _text(_pairs(r)) for r in redis_command(sentinel.port, "SENTINEL", "REPLICAS", self.service)
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


def _text(fields: dict[str, Any]) -> dict[str, str]:
    """A Sentinel reply's values (``SENTINEL MASTER``, ``REPLICAS``) as strings."""
    return {name: value.decode() for name, value in fields.items()}

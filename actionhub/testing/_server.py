"""A private redis-server for tests and benchmarks, and the small helpers the other fixtures share."""

from __future__ import annotations

import abc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Self, cast

import hiredis


class Deployment(abc.ABC):
    """Started on entry, stopped and its files removed on exit: also when starting fails."""

    @abc.abstractmethod
    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until ready (each deployment has its own default ``timeout``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and remove the files."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisServer(Deployment):
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

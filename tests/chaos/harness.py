"""What the chaos scenarios share: hub processes, the producer, the ledger of finished runs, and
Redis observed from outside (pending lists, dead letters)."""

from __future__ import annotations

import collections
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import orjson
import redis
import trio

TOPIC = "work"
GROUP = "work"


class HubProcess:
    """One ``tests.chaos.worker`` process; the test owns it and kills what is left at teardown."""

    def __init__(self, url: str, directory: Path, name: str, *options: str) -> None:
        self.name = name
        self.out = directory / f"{name}.out"
        self.log = directory / f"{name}.log"
        self.probe = directory / f"{name}.probe"
        command = [sys.executable, "-m", "tests.chaos.worker", url, str(self.out), "--name", name]
        command += ["--probe", str(self.probe), *options]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, cwd=Path(__file__).parents[2]
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self, timeout: float = 30) -> HubProcess:
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            line = await trio.to_thread.run_sync(self.process.stdout.readline, abandon_on_cancel=True)
        if line.strip() != b"ready":
            raise RuntimeError(f"hub {self.name} did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    async def wait(self, timeout: float = 60) -> int:
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(self.process.wait, abandon_on_cancel=True)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()

    def probes(self) -> list[dict[str, float]]:
        if not self.probe.exists():
            return []
        return [orjson.loads(line) for line in self.probe.read_bytes().splitlines() if line]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Hubs:
    """Starts hub processes for one test and leaves none behind."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.started: list[HubProcess] = []

    async def start(self, name: str, *options: str, url: str | None = None) -> HubProcess:
        hub = HubProcess(url or self.url, self.directory, name, *options)
        self.started.append(hub)
        return await hub.ready()

    def outputs(self) -> list[Path]:
        return [hub.out for hub in self.started]

    def close(self) -> None:
        for hub in self.started:
            hub.kill()


@attrs.frozen
class Ledger:
    """What the hubs' output files say: how often each message finished, and how long it took."""

    runs: collections.Counter[int]
    latencies: list[float]

    @classmethod
    def read(cls, paths: Iterable[Path]) -> Ledger:
        runs: collections.Counter[int] = collections.Counter()
        latencies: list[float] = []
        for path in paths:
            if not path.exists():
                continue
            for line in path.read_bytes().splitlines():
                fields = line.split()
                if len(fields) != 3:  # a process killed in the middle of a write: not finished
                    continue
                runs[int(fields[0])] += 1
                latencies.append(float(fields[2]))
        return cls(runs, latencies)

    def missing(self, expected: Iterable[int]) -> list[int]:
        return [i for i in expected if i not in self.runs]

    def duplicated(self) -> dict[int, int]:
        return {i: n for i, n in self.runs.items() if n > 1}


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def envelope(i: int) -> bytes:
    """Message ``i``; without an id, so that its id is the stream entry's (Redis's clock)."""
    return orjson.dumps({"payload": {"i": i}, "created_at": time.time()})


class RedisView:
    """Redis as the test sees it: a plain redis-py client on the bus's key prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: Any = redis.Redis.from_url(url, socket_timeout=30)
        self.prefix = prefix
        self.stream = f"{prefix}{TOPIC}"
        self.dead = f"{prefix}dead:{TOPIC}"

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), abandon_on_cancel=True)

    def publish_sync(self, ids: Iterable[int], batch: int = 1000) -> None:
        pipe = self.client.pipeline(transaction=False)
        for n, i in enumerate(ids, 1):
            pipe.xadd(self.stream, {"message": envelope(i)})
            if n % batch == 0:
                pipe.execute()
        pipe.execute()

    def add_entries(self, entries: Iterable[dict[bytes, bytes]]) -> None:
        """XADD each entry (its fields as given) to the stream, pipelined."""
        pipe = self.client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(self.stream, fields)
        pipe.execute()

    async def publish(self, ids: Iterable[int]) -> None:
        await self.run(self.publish_sync, list(ids))

    async def pending(self) -> int:
        try:
            summary = await self.run(self.client.xpending, self.stream, GROUP)
        except redis.ResponseError:  # no group yet
            return 0
        return int(summary["pending"])

    async def pending_ids(self, consumer: str) -> set[bytes]:
        if not consumer:
            return set()

        def read() -> set[bytes]:
            entries = self.client.xpending_range(
                self.stream, GROUP, "-", "+", 1_000_000, consumername=consumer
            )
            return {entry["message_id"] for entry in entries}

        return set(await self.run(read))

    async def still_pending(self, entry_ids: Iterable[bytes]) -> bool:
        """Whether any of these entries is still pending for anyone in the group."""

        def read() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for entry_id in entry_ids:
                pipe.xpending_range(self.stream, GROUP, entry_id, entry_id, 1)
            return any(pipe.execute())

        return bool(await self.run(read))

    async def settled(self) -> bool:
        return await self.pending() == 0

    async def pending_at_least(self, count: int) -> bool:
        return await self.pending() >= count

    async def consumer_of(self, pid: int) -> str:
        """The consumer name of the hub process ``pid`` (``<name>@<host>:<pid>``), or "" if it never
        read anything."""
        try:
            names = await self.consumers()
        except redis.ResponseError:
            return ""
        return next((name for name in names if name.endswith(f":{pid}")), "")

    async def consumers(self) -> dict[str, int]:
        consumers = await self.run(self.client.xinfo_consumers, self.stream, GROUP)
        return {c["name"].decode(): int(c["pending"]) for c in consumers}

    async def lag(self) -> int:
        """Entries of the stream the group has not read yet."""
        for group in await self.run(self.client.xinfo_groups, self.stream):
            if group["name"].decode() == GROUP:
                return int(group.get("lag") or 0)
        return 0

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in await self.run(self.client.xrange, self.dead)]

    async def payload_ids(self, entry_ids: Iterable[bytes]) -> set[int]:
        """The message numbers of the given stream entries."""
        found: set[int] = set()
        for entry_id in entry_ids:
            for _, fields in await self.run(self.client.xrange, self.stream, entry_id, entry_id):
                found.add(int(orjson.loads(fields[b"message"])["payload"]["i"]))
        return found

    def close(self) -> None:
        self.client.close()


async def wait_for(predicate: Any, *, timeout: float, what: str, poll: float = 0.1) -> float:
    """Poll the async ``predicate`` until true; the seconds it took. Fails saying ``what``."""
    start = trio.current_time()
    with trio.move_on_after(timeout) as scope:
        while not await predicate():  # noqa: ASYNC110 - the state lives in other processes and Redis
            await trio.sleep(poll)
    if scope.cancelled_caught:
        raise AssertionError(f"after {timeout} s still waiting for {what}")
    return trio.current_time() - start

"""What a hub costs as the number of its groups grows: N no-op actions in one hub process.

    python -m bench.many_actions                    # N = 1, 100, 1000; starts its own redis-server
    python -m bench.many_actions --quick            # N = 1, 50; fewer messages, a shorter idle window
    python -m bench.many_actions --actions 1,100 -n 20000 -r 3 --idle 5 --url redis://127.0.0.1:6379/0

For each N, one hub process of its own (``bench.many_actions_hub``) binds actions ``a0`` ...
``a<N-1>`` (``async def`` no-ops, ``max_workers=10``) on topics ``t0`` ... ``t<N-1>``, on a key
prefix of its own, and the benchmark measures:

* start-up: seconds from ``hub.running()`` until its block is entered, timed in the hub process;
* connections: the Redis clients (``CLIENT LIST``) that appeared with the hub, the benchmark's own
  (named ``many-actions-bench``) left out: once started and idle, and again after a drain;
* idle CPU: over the idle window with no messages, the hub process's CPU time (utime + stime,
  ``/proc/<pid>/stat``) and redis-server's (``INFO cpu``: used_cpu_user + used_cpu_sys), each as
  a percent of one core. The private redis-server serves only this hub, so all of its CPU is
  counted as the hub's; nothing is subtracted (with ``--url``, whatever else that server does
  counts too);
* drain: M messages written once the hub serves, in one MULTI/EXEC (so the hub sees none of them
  before all are in Redis), spread evenly over the N topics, and, in another hub process of the
  same shape, all on ``t0``; the hub times from when its first action call began to when its
  M-th ended: M / that time. Their ratio is the cost of spreading the same work over N groups.

Each round starts one hub per drain, the order alternating between rounds; the idle figures come
from the first hub of each N. Start-up and drains are medians over the hubs and rounds, the ratio
the median (min-max) of the per-round ratios, connections the most seen. Targets (issue: "a hub's
cost must not grow with the groups it serves") are judged at the largest N of the run and printed
next to the figures; a miss is reported, not an error. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from actionhub.message import Message
from bench import redis_url

ROOT = Path(__file__).resolve().parents[1]
#: the name of the benchmark's own connections, which are not the hub's
BENCH_CLIENT = "many-actions-bench"
#: seconds a hub gets after it serves before the idle window opens
SETTLE = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: (what, the limit, True if the figure must stay at or under it, how to print the figure)
TARGETS = {
    "hub_cpu": ("idle hub CPU, % of one core", 2.0, True, ".1f"),
    "redis_cpu": ("idle Redis CPU, % of one core", 2.0, True, ".1f"),
    "ratio": ("drain N topics / drain one topic", 0.7, False, ".2f"),
    "startup": ("start-up, s", 2.0, True, ".3f"),
    "connections": ("Redis connections, every N", 8, True, ",d"),
}


@dataclass
class Figures:
    """Everything measured for one N, over its hubs and rounds."""

    startup: list[float] = field(default_factory=list)
    idle_connections: list[int] = field(default_factory=list)
    drained_connections: list[int] = field(default_factory=list)
    hub_cpu: float | None = None
    redis_cpu: float | None = None
    spread: list[float] = field(default_factory=list)
    one: list[float] = field(default_factory=list)
    #: lines the hubs of this N logged, and the first of them
    log_lines: int = 0
    log_first: str | None = None

    def ratios(self) -> list[float]:
        return [s / o for s, o in zip(self.spread, self.one, strict=True)]


class HubProcess:
    """One ``bench.many_actions_hub`` process, the JSON lines it prints and what it logs (its
    stderr: counted and kept short, so a hub that logs a line per group does not drown the table)."""

    def __init__(self, url: str, actions: int, expected: int) -> None:
        command = [sys.executable, "-m", "bench.many_actions_hub", url, str(actions), str(expected)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.log_lines = 0
        self.log_first: str | None = None
        self.log_last: deque[str] = deque(maxlen=10)
        threading.Thread(target=self._read, daemon=True).start()
        self._logger = threading.Thread(target=self._read_log, daemon=True)
        self._logger.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(orjson.loads(line))
        self.events.put(None)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            text = line.decode(errors="replace").rstrip()
            self.log_lines += 1
            self.log_first = self.log_first or text
            self.log_last.append(text)

    def next_event(self, expected: str, timeout: float) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the hub did not say {expected!r} within {timeout:g} s") from None
        if event is None:
            code = self.process.wait()
            self._logger.join(timeout=5)
            log = "\n".join(self.log_last)
            raise RuntimeError(
                f"the hub exited (code {code}) before saying {expected!r}; its log ends:\n{log}"
            )
        if event["event"] != expected:
            raise RuntimeError(f"the hub said {event} where {expected!r} was due")
        return event

    def idle(self) -> bool:
        """Nothing said since the last event read (no drain reported)."""
        return self.events.empty()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._logger.join(timeout=5)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces: skip past it
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def foreign_clients(client: redis.Redis) -> set[int]:
    """Ids of the server's connections that are not the benchmark's."""
    return {int(c["id"]) for c in client.client_list() if c.get("name") != BENCH_CLIENT}


def consumer_groups(client: redis.Redis, streams: list[str]) -> list[list[dict[str, Any]] | None]:
    """``XINFO GROUPS`` of each stream, None for a stream that does not exist yet."""
    with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies = pipe.execute(raise_on_error=False)
    return [None if isinstance(reply, Exception) else reply for reply in replies]


def wait_for(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


def publish(client: redis.Redis, streams: list[str], topics: list[str], n: int) -> None:
    """``n`` messages spread evenly over ``topics``, in one transaction: the hub sees all or none."""
    with client.pipeline(transaction=True) as pipe:
        for i in range(n):
            k = i % len(topics)
            entry = Message(topic=topics[k], payload={"i": i}, id=uuid.uuid4().hex).encode()
            pipe.xadd(streams[k], {"message": entry})
        pipe.execute()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def run_hub(
    url: str,
    client: redis.Redis,
    actions: int,
    messages: int,
    one_topic: bool,
    idle: float | None,
    figures: Figures,
) -> None:
    """One hub process of ``actions`` actions on a fresh prefix: start-up and connections, the
    idle CPU if ``idle`` (seconds), then a drain of ``messages`` over every topic or only ``t0``."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    hub_url = f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    topics = [f"t{i}" for i in range(actions)]
    streams = [f"{prefix}{topic}" for topic in topics]
    before = foreign_clients(client)
    hub = HubProcess(hub_url, actions, messages)
    try:
        ready = hub.next_event("ready", timeout=300)
        figures.startup.append(ready["startup"])
        wait_for(
            "every topic's consumer group once the hub served",
            lambda: all(consumer_groups(client, streams)),
            timeout=30,
        )
        connections = [len(foreign_clients(client) - before)]
        time.sleep(SETTLE)
        if idle is not None:
            hub_before, redis_before, started = process_cpu(ready["pid"]), redis_cpu(client), time.monotonic()
            time.sleep(idle)
            hub_after, redis_after, elapsed = (
                process_cpu(ready["pid"]),
                redis_cpu(client),
                time.monotonic() - started,
            )
            figures.hub_cpu = 100 * (hub_after - hub_before) / elapsed
            figures.redis_cpu = 100 * (redis_after - redis_before) / elapsed
            connections.append(len(foreign_clients(client) - before))
        figures.idle_connections.append(max(connections))

        if not hub.idle():
            raise RuntimeError("the hub processed something before any message was written")
        written = time.perf_counter()  # CLOCK_MONOTONIC: the hub process's clock too
        publish(client, streams[:1] if one_topic else streams, topics[:1] if one_topic else topics, messages)
        drained = hub.next_event("drained", timeout=60 + messages / 100)
        if drained["first"] < written:
            raise RuntimeError("the hub began processing before the messages were written")
        (figures.one if one_topic else figures.spread).append(messages / (drained["last"] - drained["first"]))

        def acked() -> bool:
            return all(g["pending"] == 0 for groups in consumer_groups(client, streams) for g in groups or ())

        wait_for("the hub to acknowledge every message", acked, timeout=30)
        figures.drained_connections.append(len(foreign_clients(client) - before))
    finally:
        hub.stop()
        figures.log_lines += hub.log_lines
        figures.log_first = figures.log_first or hub.log_first
        delete_prefix(client, prefix)


def _cell(values: Sequence[float], spec: str) -> str:
    return format(statistics.median(values), spec) if values else "-"


def report(url: str, private: bool, args: argparse.Namespace, results: dict[int, Figures]) -> None:
    print(
        f"N no-op actions a<i> on topics t<i> (max_workers=10) in one hub process, on Redis streams "
        f"({url}); {args.messages:,} messages per drain, {args.rounds} round(s), idle window "
        f"{args.idle:g} s; medians, the ratio's median (min-max) of the rounds"
    )
    print(
        "  idle Redis CPU: all that redis-server used in the window, nothing subtracted ("
        + ("it serves only this hub)" if private else "with --url, other clients of that server count too)")
    )
    header = (
        f"{'N':>6}{'start-up s':>12}{'connections':>13}{'idle hub CPU %':>16}{'idle Redis CPU %':>18}"
        f"{'drain N topics':>16}{'drain 1 topic':>15}{'ratio':>20}"
    )
    print(header)
    print(f"{'':>6}{'':>12}{'idle/drained':>13}{'':>16}{'':>18}{'msg/s':>16}{'msg/s':>15}")
    for n, fig in results.items():
        ratios = fig.ratios()
        ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"
        connections = f"{max(fig.idle_connections)}/{max(fig.drained_connections)}"
        hub_cpu = "-" if fig.hub_cpu is None else f"{fig.hub_cpu:.1f}"
        redis_cpu = "-" if fig.redis_cpu is None else f"{fig.redis_cpu:.1f}"
        print(
            f"{n:>6}{_cell(fig.startup, '.3f'):>12}{connections:>13}{hub_cpu:>16}{redis_cpu:>18}"
            f"{_cell(fig.spread, ',.0f'):>16}{_cell(fig.one, ',.0f'):>15}{ratio:>20}"
        )

    logged = {n: fig for n, fig in results.items() if fig.log_lines}
    print("hub logs (stderr):" + ("" if logged else " none"))
    for n, fig in logged.items():
        print(f"  N={n}: {fig.log_lines:,} line(s), the first: {fig.log_first}")

    largest = max(results)
    fig = results[largest]
    most = max(results, key=lambda n: max(results[n].idle_connections + results[n].drained_connections))
    measured: dict[str, tuple[float | int | None, str]] = {
        "hub_cpu": (fig.hub_cpu, f"at N={largest}"),
        "redis_cpu": (fig.redis_cpu, f"at N={largest}"),
        "ratio": (statistics.median(fig.ratios()), f"at N={largest}"),
        "startup": (statistics.median(fig.startup), f"at N={largest}"),
        "connections": (
            max(results[most].idle_connections + results[most].drained_connections),
            f"most, at N={most}",
        ),
    }
    print(
        f"targets (judged at N={largest}, the largest N of this run"
        + ("" if largest >= 1000 else "; the issue's is 1000")
        + ")"
    )
    for key, (what, limit, at_most, spec) in TARGETS.items():
        value, where = measured[key]
        bound = f"{'<=' if at_most else '>='} {limit:g}"
        if value is None:
            print(f"  {what:<34} {bound:<6} {'-':>9}  not measured")
            continue
        met = value <= limit if at_most else value >= limit
        print(f"  {what:<34} {bound:<6} {value:>9{spec}}  {'PASS' if met else 'MISS'}  ({where})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.many_actions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="N = 1, 50; 5,000 messages; 3 s idle; 1 round")
    parser.add_argument("--actions", help="comma-separated N (default 1,100,1000)")
    parser.add_argument("-n", "--messages", type=int, help="messages per drain (default 20,000)")
    parser.add_argument("-r", "--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--idle", type=float, help="seconds of the idle window (default 5)")
    parser.add_argument("--url", help="a Redis to use (default: start a private redis-server)")
    args = parser.parse_args(argv)
    defaults = {"actions": "1,50", "messages": 5000, "rounds": 1, "idle": 3.0} if args.quick else {}
    defaults = {"actions": "1,100,1000", "messages": 20_000, "rounds": 3, "idle": 5.0} | defaults
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    counts = [int(n) for n in args.actions.split(",")]

    results = {n: Figures() for n in counts}
    with redis_url(args.url) as url:
        client = redis.Redis.from_url(url, client_name=BENCH_CLIENT)
        try:
            for n in counts:
                for round_no in range(args.rounds):
                    order = (False, True) if round_no % 2 == 0 else (True, False)
                    for one_topic in order:
                        first = round_no == 0 and not one_topic
                        run_hub(
                            url, client, n, args.messages, one_topic, args.idle if first else None, results[n]
                        )
        finally:
            client.close()
    report(url, args.url is None, args, results)


if __name__ == "__main__":
    main()

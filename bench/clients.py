"""What the clients cost over bare redis-py, one call at a time, as a service calls them.

    python -m bench.clients                    # starts its own redis-server on a free port
    python -m bench.clients -n 5000 -r 5 --url redis://127.0.0.1:6379/0

* **publish**: ``Client.publish`` against a bare redis-py ``XADD`` of the same envelope, one call
  after another; ``AsyncClient.publish`` against a bare ``redis.asyncio`` ``XADD``.
* **request**: the round trip of ``Client.request`` to a hub (a process of its own,
  ``bench.echo_app``) whose action replies at once, against
  a bare echo done by hand: ``XADD`` with a reply key, a responder thread that reads the stream
  (``XREAD BLOCK``) and ``LPUSH``es the reply, ``BLPOP`` for it. p50 of each.

Bare and client runs alternate per round, so machine drift hits both; ratios are per round.
Targets (issue 16): publish >= 0.9 x bare, both flavours; request p50 <= 1.3 x the bare echo.
This is a benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio

from actionhub.client import AsyncClient, Client
from bench import redis_url

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = {"order_id": 123456, "customer": "cust-000042", "amount_cents": 1999}


def envelope() -> bytes:
    return orjson.dumps({"payload": PAYLOAD, "id": uuid.uuid4().hex, "created_at": time.time()})


def bare_publish(url: str, n: int) -> float:
    client = redis.Redis.from_url(url, protocol=2)
    stream = f"bench:{uuid.uuid4().hex}"
    started = time.perf_counter()
    for _ in range(n):
        client.xadd(stream, {"message": envelope()})
    elapsed = time.perf_counter() - started
    client.delete(stream)
    client.close()
    return n / elapsed


def client_publish(url: str, n: int) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    with Client(f"{url}?prefix={prefix}") as client:
        started = time.perf_counter()
        for _ in range(n):
            client.publish("orders", PAYLOAD)
        elapsed = time.perf_counter() - started
        client._client.delete(f"{prefix}orders")
    return n / elapsed


async def bare_async_publish(url: str, n: int) -> float:
    client = redis.asyncio.Redis.from_url(url, protocol=2)
    stream = f"bench:{uuid.uuid4().hex}"
    started = time.perf_counter()
    for _ in range(n):
        await client.xadd(stream, {"message": envelope()})
    elapsed = time.perf_counter() - started
    await client.delete(stream)
    await client.aclose()
    return n / elapsed


async def async_client_publish(url: str, n: int) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    async with AsyncClient(f"{url}?prefix={prefix}") as client:
        started = time.perf_counter()
        for _ in range(n):
            await client.publish("orders", PAYLOAD)
        elapsed = time.perf_counter() - started
        await client._client.delete(f"{prefix}orders")
    return n / elapsed


def bare_echo(url: str, n: int) -> float:
    """p50 seconds of a hand-made request: XADD with a reply key, a responder LPUSHes, BLPOP."""
    stream = f"bench:{uuid.uuid4().hex}"
    stop = threading.Event()

    def respond() -> None:
        responder = redis.Redis.from_url(url, protocol=2)
        last = "$"
        while not stop.is_set():
            for _, entries in responder.xread({stream: last}, block=100) or ():
                for entry_id, fields in entries:
                    last = entry_id
                    request = orjson.loads(fields[b"message"])
                    responder.lpush(request["reply_to"], orjson.dumps({"payload": request["payload"]}))
        responder.close()

    responder = threading.Thread(target=respond)
    responder.start()
    time.sleep(0.2)  # the responder is reading
    client = redis.Redis.from_url(url, protocol=2)
    times = []
    for _ in range(n):
        reply_to = f"bench:reply:{uuid.uuid4().hex}"
        started = time.perf_counter()
        client.xadd(stream, {"message": orjson.dumps({"payload": PAYLOAD, "reply_to": reply_to})})
        client.blpop([reply_to], timeout=5)
        times.append(time.perf_counter() - started)
    stop.set()
    responder.join()
    client.delete(stream)
    client.close()
    return statistics.median(times)


def client_request(url: str, n: int) -> float:
    """p50 seconds of ``Client.request`` to a hub process of its own (``bench.echo_app``) whose
    action replies at once."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    bus = f"{url}?prefix={prefix}"
    command = [str(Path(sys.executable).with_name("actionhub")), "run", "bench.echo_app:hub", "--bus", bus]
    hub = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert hub.stderr is not None
        for line in hub.stderr:  # wait until it serves
            if " ready;" in line:
                break
        else:
            raise RuntimeError("the echo hub did not start")
        threading.Thread(target=hub.stderr.read, daemon=True).start()  # its log never fills the pipe
        times = []
        with Client(bus) as client:
            client.request("echo", PAYLOAD, timeout=10)  # the group exists, the path is warm
            for _ in range(n):
                started = time.perf_counter()
                client.request("echo", PAYLOAD, timeout=10)
                times.append(time.perf_counter() - started)
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=30)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--calls", type=int, default=3000, help="calls per run (3000)")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--url", help="a Redis to use instead of a private one")
    args = parser.parse_args(argv)
    rows: dict[str, list[tuple[float, float]]] = {"publish": [], "async publish": [], "request p50": []}
    with redis_url(args.url) as url:
        for round_ in range(args.rounds):
            pairs: list[tuple[str, Any, Any]] = [
                ("publish", lambda: bare_publish(url, args.calls), lambda: client_publish(url, args.calls)),
                (
                    "async publish",
                    lambda: asyncio.run(bare_async_publish(url, args.calls)),
                    lambda: asyncio.run(async_client_publish(url, args.calls)),
                ),
                (
                    "request p50",
                    lambda: bare_echo(url, args.calls // 3),
                    lambda: client_request(url, args.calls // 3),
                ),
            ]
            for name, bare, ours in pairs:
                first, second = (bare, ours) if round_ % 2 == 0 else (ours, bare)
                a, b = first(), second()
                rows[name].append((a, b) if round_ % 2 == 0 else (b, a))
    print(f"{args.calls} calls x {args.rounds} rounds, one at a time; median (min-max) of the rounds")
    print(f"{'':<14}{'bare':>22}{'actionhub':>22}{'ratio':>20}")
    for name, results in rows.items():
        bare_values = [b for b, _ in results]
        ours_values = [o for _, o in results]
        if name == "request p50":  # seconds: lower is better; ratio ours / bare
            ratios = [o / b for b, o in results]
            cells = [f"{statistics.median(v) * 1e6:,.0f} us" for v in (bare_values, ours_values)]
            target = "target <= 1.3"
        else:  # calls per second: ratio ours / bare
            ratios = [o / b for b, o in results]
            cells = [f"{statistics.median(v):,.0f}/s" for v in (bare_values, ours_values)]
            target = "target >= 0.9"
        ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{name:<14}{cells[0]:>22}{cells[1]:>22}{ratio:>20}   {target}")


if __name__ == "__main__":
    main()

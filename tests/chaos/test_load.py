"""Overload (producers ten times faster than the hub) and a soak of many messages through one hub:
memory, file descriptors and trio tasks stay bounded; nothing is lost."""

from __future__ import annotations

import signal
import time

import trio

from actionhub import ActionHub, Job, Overloaded
from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures, bus_url, scaled
from tests.chaos.harness import HubProcess, Hubs, Ledger, RedisView, percentile, wait_for
from tests.chaos.worker import rss_bytes
from tests.polling import wait_until

MIB = 2**20


async def _produce(view: RedisView, first: int, rate: float, seconds: float) -> int:
    """Publish ``rate`` messages a second for ``seconds``, in a batch every 10 ms; the next id."""
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    i, deadline = first, trio.current_time() + seconds
    next_tick = trio.current_time()
    while trio.current_time() < deadline:
        await view.publish(range(i, i + per_tick))
        i += per_tick
        next_tick += tick
        await trio.sleep_until(next_tick)
    return i


def _latencies(hub: HubProcess, ids: range) -> list[float]:
    latencies = []
    for line in hub.out.read_bytes().splitlines():
        i, _, latency = line.split()
        if int(i) in ids:
            latencies.append(float(latency))
    return latencies


async def test_overload_on_redis(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures
) -> None:
    """A hub that can run about 250 messages a second gets 2,500 a second for a while: Redis holds
    the backlog, the hub's memory stays put (it reads only what its buffer has room for), the
    backlog drains, and a trickle published afterwards sees the latency it saw before the burst."""
    capacity = 250  # 5 workers x 20 ms
    burst_seconds = scaled(3.0, 60.0)
    hub = await hubs.start(
        "hub", "--work", "0.02", "--workers", "5", "--buffer", "100", "--probe-every", "0.25"
    )
    before = range(0, await _produce(view, 0, capacity / 2, 2))
    await wait_for(lambda: _all_done(hub, before), timeout=30, what="the first trickle")
    burst_started = time.time()
    burst = range(before.stop, await _produce(view, before.stop, capacity * 10, burst_seconds))
    burst_ended = time.time()
    redis_memory = (await view.run(view.client.info, "memory"))["used_memory"]
    await wait_for(lambda: _all_done(hub, burst), timeout=burst_seconds * 12 + 30, what="the backlog")
    drained = time.time()
    after = range(burst.stop, await _produce(view, burst.stop, capacity / 2, 2))
    await wait_for(lambda: _all_done(hub, after), timeout=30, what="the last trickle")
    await wait_for(view.settled, timeout=30, what="no pending entries")
    ledger = Ledger.read([hub.out])
    assert not ledger.missing(range(after.stop)) and not ledger.duplicated()
    samples = hub.probes()
    quiet = [s["rss"] for s in samples if s["t"] < burst_started]
    loaded = [s["rss"] for s in samples if burst_started <= s["t"] <= drained]
    assert max(loaded) - max(quiet) < 20 * MIB  # the backlog is in Redis, not in the hub
    hub.signal(signal.SIGTERM)
    assert await hub.wait() == 0
    figures["hub capacity / burst rate (msg/s)"] = f"~{capacity} / {capacity * 10}"
    figures["burst (s) / messages"] = f"{burst_ended - burst_started:.1f} / {len(burst)}"
    figures["backlog drained, seconds after the burst"] = drained - burst_ended
    figures["hub RSS before / peak under load (MiB)"] = f"{max(quiet) / MIB:.1f} / {max(loaded) / MIB:.1f}"
    figures["Redis used_memory at the end of the burst (MiB)"] = redis_memory / MIB
    for q in (50, 99):
        before_ms, after_ms = (percentile(_latencies(hub, ids), q) * 1000 for ids in (before, after))
        figures[f"latency p{q} before / after the burst (ms)"] = f"{before_ms:.1f} / {after_ms:.1f}"
    figures["lost / run twice"] = f"{len(ledger.missing(range(after.stop)))} / {len(ledger.duplicated())}"


async def _all_done(hub: HubProcess, ids: range) -> bool:
    return not Ledger.read([hub.out]).missing(ids)


async def test_overload_in_process(figures: Figures) -> None:
    """memory://: four publishers as fast as they can at a group that runs far slower: they get
    Overloaded once the buffer stays full for accept_wait; the buffer never grows past its bound;
    every accepted message runs."""
    seconds = scaled(2.0, 20.0)
    hub = ActionHub()
    done: list[int] = []
    buffered_peak = 0

    @hub.action("slow", max_workers=5, buffer=100, accept_wait=0.05)
    async def slow(job: Job) -> None:
        await trio.sleep(0.01)
        done.append(job.payload)

    accepted: list[int] = []
    overloaded = 0
    rss_before = rss_bytes()

    async def publisher(first: int) -> None:
        nonlocal overloaded, buffered_peak
        i = first
        while trio.current_time() < deadline:
            try:
                await hub.publish("slow", i)
                accepted.append(i)
            except Overloaded:
                overloaded += 1
            buffered_peak = max(buffered_peak, hub.stats()[0].buffered)
            i += 1

    async with hub.running():
        deadline = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(publisher, n * 10_000_000)
        await wait_until(lambda: len(done) == len(accepted), timeout=30)
    assert sorted(done) == sorted(accepted)
    assert overloaded > 0 and buffered_peak <= 100
    figures["accepted / refused with Overloaded"] = f"{len(accepted)} / {overloaded}"
    figures["buffer peak (bound 100)"] = buffered_peak
    figures["RSS growth of the test process (MiB)"] = (rss_bytes() - rss_before) / MIB


async def test_soak(chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures) -> None:
    """Many messages through one hub (no-op action) while the producer keeps up with it: RSS, open
    file descriptors and trio tasks stay flat; the stream is trimmed as it is consumed."""
    total = scaled(60_000, 1_000_000)
    url = bus_url(chaos_redis.url, trim_interval=2)
    hub = await hubs.start("hub", "--workers", "10", "--buffer", "200", "--probe-every", "0.5", url=url)
    chunk = 5_000
    started = trio.current_time()
    for first in range(0, total, chunk):
        await view.publish(range(first, first + chunk))

        async def caught_up(first: int = first) -> bool:
            return await view.lag() < chunk

        await wait_for(caught_up, timeout=60, what="the hub to keep up")
    await wait_for(lambda: _all_done(hub, range(total)), timeout=120, what="every message")
    seconds = trio.current_time() - started
    await wait_for(view.settled, timeout=30, what="no pending entries")
    ledger = Ledger.read([hub.out])
    assert not ledger.missing(range(total)) and not ledger.duplicated()
    samples = [s for s in hub.probes() if s["processed"] > 0]
    warm = [s for s in samples if s["processed"] >= total * 0.1]
    rss = [s["rss"] / MIB for s in warm]
    fds = [s["fds"] for s in samples]
    tasks = [s["tasks"] for s in samples]
    assert max(rss) - rss[0] < 10, f"RSS grew from {rss[0]:.1f} to {max(rss):.1f} MiB"
    assert max(fds) - min(fds) <= 4, f"open files went from {min(fds)} to {max(fds)}"
    assert max(tasks) - min(tasks) <= 12, f"trio tasks went from {min(tasks)} to {max(tasks)}"
    stream_length = await view.run(view.client.xlen, view.stream)
    hub.signal(signal.SIGTERM)
    assert await hub.wait() == 0
    figures["messages"] = total
    figures["throughput with the producer (msg/s)"] = total / seconds
    figures["RSS after 10 % / at the end / peak (MiB)"] = f"{rss[0]:.1f} / {rss[-1]:.1f} / {max(rss):.1f}"
    figures["open file descriptors min / max"] = f"{min(fds)} / {max(fds)}"
    figures["trio tasks min / max"] = f"{min(tasks)} / {max(tasks)}"
    figures["stream length at the end (trimmed every 2 s)"] = stream_length
    figures["lost / run twice"] = f"{len(ledger.missing(range(total)))} / {len(ledger.duplicated())}"

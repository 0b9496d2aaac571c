"""The dashboard under many hubs: 50 hubs x 20 groups announcing, ``actionhub dashboard`` serving.

    python -m bench.dashboard                      # 50 hubs x 20 groups; starts its own redis-server
    python -m bench.dashboard --hubs 5 --groups 4 --seconds 4    # a quick look
    python -m bench.dashboard --url redis://127.0.0.1:6379/0

A thread announces H synthetic hub snapshots every 2 s (SET with an expiry, as a hub does), each
with G groups whose counters grow, on a key prefix of its own. ``actionhub dashboard`` serves
them, and the benchmark measures, over ``--seconds``:

* the overview's JSON: its size and the latency of ``GET /api/overview`` (p50, p99, max), asked
  twice a second, as a page polls;
* the browser (Debian's chromium through Playwright, when it is installed): seconds from
  opening the overview to every hub's rows on it, and the main thread's long tasks (over 50 ms,
  ``PerformanceObserver``) while it refreshes: the longest and their share of the time;
* the dashboard process's CPU, percent of one core;
* what it costs Redis: the SCAN and MGET calls per second (``INFO commandstats``: only readers
  of the snapshots send these) with one page open, with five, and for ``actionhub stats --watch``
  alone, which reads the same snapshots every 2 s. Targets: the page stays responsive (no long
  task over 100 ms: it answers input within 100 ms) and the dashboard costs Redis no more than
  ``stats --watch``, whatever the number of pages. A miss is reported, not an error. This is a
  benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import redis

from actionhub.bus.redis.keys import Keys
from actionhub.inspect import HubSnapshot
from actionhub.stats import WorkerStat
from actionhub.testing import worker_stat
from bench import redis_url

ROOT = Path(__file__).resolve().parents[1]
ACTIONHUB = str(Path(sys.executable).with_name("actionhub"))
ANNOUNCE_INTERVAL = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LONG_TASKS = """
window.longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def stat(group: int, processed: int) -> WorkerStat:
    return worker_stat(
        f"group-{group:02d}",
        min_workers=1,
        max_workers=10,
        total_message_received=processed,
        total_message_processed=processed,
        total_panics=processed // 100,
        total_failed=processed // 100,
        total_current_workers=5,
        buffered=group % 3,
        in_flight=group % 5,
    )


class Announcer:
    """H hubs of G groups each, announced every 2 s until stopped; each group processes about
    ten messages a second."""

    def __init__(self, url: str, prefix: str, hubs: int, groups: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.keys = Keys(prefix)
        self.hubs, self.groups = hubs, groups
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Announcer:
        self.announce()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def announce(self) -> None:
        now = time.time()
        processed = int((now - self.started) * 10)
        with self.client.pipeline(transaction=False) as pipe:
            for h in range(self.hubs):
                snapshot = HubSnapshot(
                    hub=f"hub-{h:02d}",
                    host=f"host-{h % 10}",
                    pid=1000 + h,
                    bus="redis://bench",
                    started_at=self.started,
                    at=now,
                    groups=tuple(stat(g, processed + g) for g in range(self.groups)),
                )
                pipe.set(
                    self.keys.hub(snapshot.hub), snapshot.to_json(), px=int(3 * ANNOUNCE_INTERVAL * 1000)
                )
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(ANNOUNCE_INTERVAL):
            self.announce()


def reads(client: redis.Redis) -> int:
    """SCAN and MGET calls Redis has served so far."""
    info = client.info("commandstats")
    return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("scan", "mget"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reads_per_second(client: redis.Redis, seconds: float) -> float:
    before = reads(client)
    time.sleep(seconds)
    return (reads(client) - before) / seconds


def started(process: subprocess.Popen[bytes], log: Path, line: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()}")
        found = [text for text in log.read_text().splitlines() if line in text]
        if found:
            return found[0]
        time.sleep(0.05)
    raise RuntimeError(f"no {line!r} within {timeout} s: {log.read_text()}")


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def browser_figures(
    base: str, client: redis.Redis, hubs: int, seconds: float, pages: int
) -> dict[str, float] | None:
    """How the overview renders and refreshes in chromium, and the Redis reads per second with
    ``pages`` of it open."""
    chromium = os.environ.get("ACTIONHUB_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        print("  (no chromium: the browser figures are left out)")
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(LONG_TASKS)
        opened = time.perf_counter()
        page.goto(base + "/")
        page.locator("section.hub").nth(hubs - 1).wait_for(timeout=60_000)  # (the CSP forbids eval)
        first_render = time.perf_counter() - opened
        page.evaluate("window.longTasks = []")
        time.sleep(seconds)
        tasks: list[float] = page.evaluate("window.longTasks")
        others = [browser.new_page() for _ in range(pages - 1)]
        for other in others:
            other.goto(base + "/")
        figures = {
            "first_render": first_render,
            "longest_task_ms": max(tasks, default=0.0),
            "blocked_share": sum(tasks) / 1000 / seconds,
        }
        if others:
            figures["reads_many_pages"] = reads_per_second(client, seconds)
        browser.close()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hubs", type=int, default=50)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="each measuring window")
    parser.add_argument("--pages", type=int, default=5, help="pages open at once, for the Redis reads")
    parser.add_argument("--url", help="a Redis to use (default: a private redis-server)")
    args = parser.parse_args(argv)
    with redis_url(args.url) as server:
        prefix = f"dashboard-bench-{uuid.uuid4().hex[:6]}:"
        url = f"{server}?prefix={prefix}"
        client = redis.Redis.from_url(server)
        print(f"dashboard: {args.hubs} hubs x {args.groups} groups announcing every {ANNOUNCE_INTERVAL:g} s")
        with Announcer(server, prefix, args.hubs, args.groups):
            time.sleep(0.5)
            idle_reads = reads_per_second(client, min(args.seconds, 4))
            log = ROOT / f".dashboard-bench-{os.getpid()}.log"
            port = _free_port()
            with log.open("wb") as out:
                dashboard = subprocess.Popen(
                    [ACTIONHUB, "dashboard", "--bus", url, "--port", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                started(dashboard, log, "dashboard of")
                base = f"http://127.0.0.1:{port}"
                latencies, sizes = [], []
                cpu_before, clock = cpu_seconds(dashboard.pid), time.perf_counter()
                reads_before = reads(client)
                with httpx.Client(base_url=base, timeout=30) as http:
                    while time.perf_counter() - clock < args.seconds:
                        asked = time.perf_counter()
                        answer = http.get("/api/overview")
                        latencies.append(time.perf_counter() - asked)
                        sizes.append(len(answer.content))
                        time.sleep(max(0.0, 0.5 - (time.perf_counter() - asked)))
                elapsed = time.perf_counter() - clock
                dashboard_cpu = (cpu_seconds(dashboard.pid) - cpu_before) / elapsed * 100
                one_page_reads = (reads(client) - reads_before) / elapsed
                shown = browser_figures(base, client, args.hubs, args.seconds, args.pages)
            finally:
                dashboard.terminate()
                dashboard.wait(timeout=20)
                log.unlink(missing_ok=True)
            watch = subprocess.Popen(
                [ACTIONHUB, "stats", "--bus", url, "--watch", str(ANNOUNCE_INTERVAL)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1)
                watch_reads = reads_per_second(client, args.seconds)
            finally:
                watch.terminate()
                watch.wait(timeout=20)
    ms = [1000 * latency for latency in latencies]
    print(f"  overview JSON: {statistics.median(sizes) / 1024:,.0f} KiB")
    p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
    print(f"  GET /api/overview: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ms):.1f} ms")
    print(f"  dashboard CPU, polled twice a second: {dashboard_cpu:.1f} % of one core")
    dashboard_reads = one_page_reads - idle_reads
    watch_reads -= idle_reads
    print(
        f"  Redis reads (SCAN+MGET) per s: dashboard {dashboard_reads:.2f}, stats --watch {watch_reads:.2f}"
    )
    if shown is not None:
        print(f"  browser: overview of every hub shown {shown['first_render']:.2f} s after opening it")
        print(
            f"  browser, refreshing: longest main-thread task {shown['longest_task_ms']:.0f} ms,"
            f" long tasks {100 * shown['blocked_share']:.1f} % of the time"
        )
        if "reads_many_pages" in shown:
            many = shown["reads_many_pages"] - idle_reads
            print(f"  Redis reads per s with {args.pages} pages open: {many:.2f}")
        met = shown["longest_task_ms"] <= 100
        print(f"  target: no long task over 100 ms: {'met' if met else 'MISSED'}")
    met = dashboard_reads <= watch_reads * 1.1 + 0.1
    print(f"  target: Redis reads no more than stats --watch: {'met' if met else 'MISSED'}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()

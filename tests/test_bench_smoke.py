"""The benchmarks run, with a tiny N, so they never rot. They time nothing here: the figures
come from running them by hand (bench/README.md)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import redis
import trio

from actionhub.testing import RedisServer
from bench import clients as clients_bench
from bench import cluster as cluster_bench
from bench import dashboard as dashboard_bench
from bench import durable as durable_bench
from bench import limits as limits_bench
from bench import many_actions as many_actions_bench
from bench import memory_bus, process_pool
from bench import ordered as ordered_bench
from bench import otel as otel_bench
from bench import publish as publish_bench
from bench import redis_cost as redis_cost_bench
from bench import redis_streams as redis_streams_bench
from bench import typed as typed_bench
from tests.polling import wait_until

BENCH = Path(__file__).resolve().parents[1] / "bench"

#: A stand-in for bench-peers' ``harness.common`` with the interface its README gives runners:
#: connection settings from BENCH_* variables, and ``handle_trio`` called once per message.
HARNESS_COMMON = textwrap.dedent(
    """
    import os

    import orjson

    CONCURRENCY = int(os.environ.get("BENCH_CONC", "10"))
    WORKLOAD = os.environ.get("BENCH_WORKLOAD", "w1")
    REDIS_URL = "redis://{}:{}/{}".format(
        os.environ["BENCH_REDIS_HOST"], os.environ["BENCH_REDIS_PORT"], os.environ["BENCH_REDIS_DB"]
    )

    async def handle_trio(payload):
        with open(os.environ["SMOKE_OUT"], "ab") as out:
            out.write(orjson.dumps(payload) + b"\\n")
    """
)


def test_memory_bus_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    memory_bus.main(["-n", "300", "-r", "1", "-w", "1", "--warmup", "10", "--metrics"])
    assert "ratio hub/bare" in capsys.readouterr().out


def test_cluster_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    cluster_bench.main(["-n", "300", "-r", "1", "--topics", "8", "--failovers", "1"])
    out = capsys.readouterr().out
    assert "ratio cluster / single" in out and "busiest / idlest" in out and "promoted replica" in out


def test_durable_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    durable_bench.main(["-n", "500", "-r", "1", "--kill-after", "0.3"])
    out = capsys.readouterr().out
    assert "durable=1 / durable=0" in out and "durable=1: " in out and "not on the replica" in out


def test_otel_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    otel_bench.main(["-n", "50", "-r", "1", "--runs", "1", "--warmup", "10"])
    out = capsys.readouterr().out
    assert "ratio b/a" in out and "ratio c/a" in out and "SDK floor" in out


def test_process_pool_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    process_pool.main(["-n", "4", "--fib", "5"])
    assert capsys.readouterr().out.count("jobs/s") == 3


def test_ordered_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    ordered_bench.main(["-n", "200", "--keys", "20", "-r", "1", "--url", redis_server.url])
    assert "ratio ordered/unordered" in capsys.readouterr().out


def test_typed_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    typed_bench.main(["-n", "50", "-r", "1"])
    assert "msgspec" in capsys.readouterr().out


def test_clients_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    clients_bench.main(["-n", "30", "-r", "1", "--url", redis_server.url])
    assert "request p50" in capsys.readouterr().out


def test_publish_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    publish_bench.main(["-n", "250", "-r", "1", "--url", redis_server.url])
    assert "dedupe / plain" in capsys.readouterr().out


def test_redis_streams_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    redis_streams_bench.main(["-n", "300", "-r", "1", "--url", redis_server.url])
    assert "ratio hub/bare" in capsys.readouterr().out


def test_redis_cost_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    redis_cost_bench.main(["-n", "300", "-r", "1", "--url", redis_server.url])
    out = capsys.readouterr().out
    assert out.count("Redis CPU per message") == 2 and "one Redis core's ceiling" in out


def test_limits_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    limits_bench.main(["-n", "300", "-r", "1", "--url", redis_server.url])
    out = capsys.readouterr().out
    assert "ratio rate/none" in out and "ratio concurrency/none" in out


def test_dashboard_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard_bench.main(
        ["--hubs", "2", "--groups", "2", "--seconds", "1", "--pages", "2", "--url", redis_server.url]
    )
    out = capsys.readouterr().out
    assert "GET /api/overview: p50" in out and "stats --watch" in out and "long task" in out


def test_many_actions_benchmark(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    many_actions_bench.main(["--quick", "-n", "300", "--idle", "0.5", "--url", redis_server.url])
    out = capsys.readouterr().out
    assert "drain 1 topic" in out and "targets (judged at N=50" in out
    assert out.count("PASS") + out.count("MISS") == 5


@pytest.mark.parametrize("workload", ["W1-drain", "W1-e2e"])
async def test_bench_peers_runner(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workload: str
) -> None:
    """The runner's worker process handles every message the runner's producer sends, once."""
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "__init__.py").write_text("")
    (tmp_path / "harness" / "common.py").write_text(HARNESS_COMMON)
    out = tmp_path / "handled.jsonl"
    db = 3
    redis.Redis(port=redis_server.port, db=db).flushdb()
    env = {
        "BENCH_REDIS_HOST": "127.0.0.1",
        "BENCH_REDIS_PORT": str(redis_server.port),
        "BENCH_REDIS_DB": str(db),
        "BENCH_CONC": "4",
        "BENCH_WORKLOAD": workload,
        "SMOKE_OUT": str(out),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(BENCH)]))
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("harness", "harness.common", "actionhub_runner", "actionhub_app"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    import actionhub_runner

    n = 250
    worker = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actionhub_runner", "worker"], cwd=tmp_path
    )
    try:
        producer = actionhub_runner.producer()
        await producer.start()
        for i in range(n):
            await producer.send({"i": i, "w": 0})
        await producer.close()

        def lines() -> list[bytes]:
            return out.read_bytes().splitlines() if out.exists() else []

        await wait_until(lambda: len(lines()) >= n)
        worker.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await worker.wait() == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert sorted(lines()) == sorted(f'{{"i":{i},"w":0}}'.encode() for i in range(n))

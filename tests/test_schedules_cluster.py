"""Schedules across hub processes on Redis: one message per tick whatever the number of hubs, a
killed hub loses no tick, catch-up after every hub was down, a changed definition, the CLI.

Each hub process is tests/schedule_hub.py (``every=1`` schedules, no action); the tests read the
topics' streams, and time is Redis's (TIME, and the entry ids XADD gives)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis
import trio

from actionhub.cli import main as cli_main
from actionhub.testing import RedisServer
from tests.polling import wait_until

ROOT = Path(__file__).parent.parent


def _spawn(url: str, name: str, *schedules: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.schedule_hub", url, "--name", name]
    for spec in schedules:
        command += ["--schedule", spec]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=20)


class Stream:
    """The messages a schedule published to its topic's stream, read with redis-py."""

    def __init__(self, client: redis.Redis, prefix: str, topic: str) -> None:
        self.client, self.key = client, f"{prefix}{topic}"

    def entries(self) -> list[tuple[float, dict[str, object]]]:
        """(XADD time in seconds, envelope) of every entry, oldest first."""
        out = []
        for entry_id, fields in self.client.xrange(self.key):
            ms = int(entry_id.decode().split("-")[0])
            out.append((ms / 1000, orjson.loads(fields[b"message"])))
        return out

    def ticks(self) -> list[float]:
        """The tick (``scheduled_at``) of every message, in stream order."""
        return [_tick(envelope) for _, envelope in self.entries()]

    def caught_up(self) -> list[float]:
        return [_tick(e) for _, e in self.entries() if _headers(e).get("schedule_catch_up") == "1"]


def _headers(envelope: dict[str, object]) -> dict[str, str]:
    headers = envelope.get("headers", {})
    assert isinstance(headers, dict)
    return headers


def _tick(envelope: dict[str, object]) -> float:
    return datetime.fromisoformat(_headers(envelope)["scheduled_at"]).timestamp()


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def _contiguous(ticks: list[float]) -> bool:
    return all(round(b - a, 3) == 1.0 for a, b in itertools.pairwise(ticks))


def _prefix(url: str) -> str:
    return url.split("prefix=", 1)[1]


async def test_three_hubs_fire_each_tick_once_and_a_killed_hub_loses_none(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    beat = Stream(client, _prefix(redis_url), "beats")
    hubs = [_spawn(redis_url, f"hub-{i}", "beat:beats:latest") for i in range(3)]
    try:
        start = _redis_now(client)
        await wait_until(lambda: _redis_now(client) >= start + 5, timeout=20)
        _stop(hubs[0], signal.SIGKILL)  # halfway: the other two carry on
        await wait_until(lambda: _redis_now(client) >= start + 10.5, timeout=20)
    finally:
        for hub in hubs:
            _stop(hub)
    entries = beat.entries()
    ticks = [_tick(envelope) for _, envelope in entries]
    assert len(ticks) == len(set(ticks)), "two messages for one tick"
    assert ticks == sorted(ticks) and _contiguous(ticks), f"a tick was lost: {ticks}"
    # measured on the Redis clock: the messages added in the 10 s after the hubs were up
    in_window = [at for at, _ in entries if start <= at < start + 10]
    assert 9 <= len(in_window) <= 11
    assert all(at - tick < 3.0 for tick, (at, _) in zip(ticks, entries, strict=True))  # on time


async def test_catch_up_after_every_hub_was_down_and_a_changed_definition(
    redis_url: str, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    prefix = _prefix(redis_url)
    streams = {name: Stream(client, prefix, name) for name in ("latest", "all", "none", "changed")}
    specs = ["latest:latest:latest", "all:all:all", "none:none:none"]
    first = _spawn(redis_url, "first", *specs, 'changed:changed:latest:{"v":1}')
    try:
        await wait_until(lambda: all(len(s.ticks()) >= 2 for s in streams.values()), timeout=20)
    finally:
        _stop(first)
    down_at = _redis_now(client)
    last = {name: max(stream.ticks()) for name, stream in streams.items()}
    await wait_until(lambda: _redis_now(client) >= down_at + 5, timeout=20)  # every hub down for 5 s
    restarted_at = _redis_now(client)
    second = _spawn(redis_url, "second", *specs, 'changed:changed:latest:{"v":2}')
    try:
        await wait_until(
            lambda: all(sum(t > restarted_at for t in s.ticks()) >= 2 for s in streams.values()),
            timeout=20,
        )
        # the CLI, while the second hub runs: each schedule, its last and next tick, its hubs
        await wait_until(lambda: bool(client.keys(f"{prefix}hub:second")), timeout=10)
        code = await trio.to_thread.run_sync(cli_main, ["schedules", "--bus", redis_url, "--json"])
        document = capsys.readouterr().out
        table_code = await trio.to_thread.run_sync(cli_main, ["schedules", "--bus", redis_url])
        table = capsys.readouterr().out
    finally:
        _stop(second)
    assert code == table_code == 0
    assert "4 schedule(s)" in table
    assert all(f"{name} " in table for name in streams) and table.count("every 1s") == 4
    rows = {row["name"]: row for row in orjson.loads(document)}
    assert set(rows) == {"latest", "all", "none", "changed"}
    for name, row in rows.items():
        assert row["hubs"] == ["second"] and row["topic"] == name and row["period"] == "every 1s"
        assert row["last"] is not None and row["next"] == pytest.approx(row["last"] + 1, abs=5)
        assert row["last"] >= restarted_at

    after = {name: [t for t in stream.ticks() if t > last[name]] for name, stream in streams.items()}
    for name, ticks in after.items():
        assert len(ticks) == len(set(ticks)) and _contiguous(ticks), (name, ticks)
    # "all": every missed tick, none left out; at least 3 ticks of the outage count as missed
    assert after["all"][0] == last["all"] + 1
    assert len(streams["all"].caught_up()) >= 3
    # "latest": one message, for the most recent missed tick; the ticks before it are skipped
    (caught,) = streams["latest"].caught_up()
    assert caught == after["latest"][0] and caught - last["latest"] >= 3
    # "none": no missed tick published; the next ticks are
    assert streams["none"].caught_up() == [] and after["none"][0] - last["none"] >= 3
    # a changed definition starts afresh, without a cleanup: no catch-up, the new payload
    changed = streams["changed"].entries()
    assert streams["changed"].caught_up() == []
    assert {e["payload"]["v"] for at, e in changed if _tick(e) > last["changed"]} == {2}  # type: ignore[index]
    assert after["changed"][0] >= restarted_at - 1


def test_the_cli_refuses_misuse_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schedules", "--bus", "nope://"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad bus URL" in err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["schedules", "--bus", "memory://", "--bogus"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1

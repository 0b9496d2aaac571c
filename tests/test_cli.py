"""The ``actionhub`` command, run as a user runs it: the installed console script, in subprocesses,
against the test Redis (hubs served by ``actionhub run tests.cli_app:hub``)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import trio

from actionhub.cli import build_parser
from actionhub.testing import RedisServer
from tests.polling import wait_until
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
ACTIONHUB = str(Path(sys.executable).with_name("actionhub"))  # the console script pip installed

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def cli(*args: str, check: bool = True) -> trio.CompletedProcess[bytes]:
    """Run ``actionhub ARGS``; its exit code, stdout and stderr."""
    result = await trio.run_process(
        [ACTIONHUB, *args], capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"actionhub {' '.join(args)} exited {result.returncode}: {result.stderr.decode()}"
        )
    return result


async def cli_json(*args: str) -> Any:
    return orjson.loads((await cli(*args, "--json")).stdout)


class ServedHub:
    """``actionhub run tests.cli_app:hub`` in a subprocess; ``lines()`` is what its actions wrote."""

    def __init__(self, process: trio.Process, out: Path, log: Path) -> None:
        self.process, self.out, self.log = process, out, log

    def lines(self, event: str) -> list[str]:
        text = self.out.read_text() if self.out.exists() else ""
        return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(event + " ")]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 60) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def served_hub(
    url: str, name: str, tmp_path: Path, *, work: float = 0.0, extra: tuple[str, ...] = ()
) -> AsyncIterator[ServedHub]:
    out, log = tmp_path / f"{name}.out", tmp_path / f"{name}.log"
    env = {**os.environ, "CLI_APP_OUT": str(out), "CLI_APP_WORK": str(work)}
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [ACTIONHUB, "run", "tests.cli_app:hub", "--bus", url, "--name", name, *extra],
            cwd=ROOT,
            env=env,
            stderr=log_file,
        )
        hub = ServedHub(process, out, log)
        try:
            await wait_until(lambda: f"hub {name} ready" in log.read_text() or process.poll() is not None)
            assert process.returncode is None, f"actionhub run exited: {log.read_text()}"
            yield hub
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def prefix_of(url: str) -> str:
    return url.split("prefix=", 1)[1].split("&", 1)[0]


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis(port=redis_server.port)


# --------------------------------------------------------------------------- run and signals


async def test_sigterm_lets_in_flight_work_finish_acks_it_and_exits_0(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    async with served_hub(redis_url, "graceful", tmp_path, work=2.0) as hub:
        for n in range(3):
            await cli("publish", "work", str(n), "--bus", redis_url)
        await wait_until(lambda: len(hub.lines("start")) == 3)
        hub.signal(signal.SIGTERM)
        assert await hub.exit_code() == 0
    assert sorted(hub.lines("done")) == ["0 1", "1 1", "2 1"]  # every one finished, at its first attempt
    assert client.xpending(f"{prefix_of(redis_url)}work", "work")["pending"] == 0  # and was acked
    log = hub.log.read_text()
    assert "SIGTERM: stopping gracefully" in log and "Traceback" not in log


async def test_a_second_signal_stops_at_once_and_leaves_the_work_unacked(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    async with served_hub(redis_url, "impatient", tmp_path, work=60.0) as hub:
        await cli("publish", "work", '"long"', "--bus", redis_url)
        await wait_until(lambda: len(hub.lines("start")) == 1)
        hub.signal(signal.SIGTERM)
        await wait_until(lambda: "stopping gracefully" in hub.log.read_text())
        hub.signal(signal.SIGINT)
        assert await hub.exit_code(timeout=20) == 128 + signal.SIGINT
    assert hub.lines("done") == []
    assert client.xpending(f"{prefix_of(redis_url)}work", "work")["pending"] == 1


async def test_sigkill_leaves_the_message_unacked_and_another_hub_runs_it_again(
    redis_url: str, tmp_path: Path
) -> None:
    url = redis_url + "&visibility_timeout=2&block=0.5"
    async with served_hub(url, "doomed", tmp_path, work=60.0) as doomed:
        await cli("publish", "work", '"job-1"', "--bus", url)
        await wait_until(lambda: doomed.lines("start") == ["job-1 1"])
        doomed.signal(signal.SIGKILL)
        assert await doomed.exit_code() == -signal.SIGKILL
    assert doomed.lines("done") == []
    async with served_hub(url, "survivor", tmp_path, work=0.0) as survivor:
        await wait_until(lambda: survivor.lines("done") != [], timeout=30)
        assert survivor.lines("done") == ["job-1 2"]  # delivered again: its second attempt


# --------------------------------------------------------------------------- two live hubs


async def test_operating_two_live_hubs(redis_url: str, tmp_path: Path) -> None:
    bus = ("--bus", redis_url)
    metrics_port = free_port()
    async with (
        served_hub(redis_url, "hub-a", tmp_path, extra=("--metrics-port", str(metrics_port))) as a,
        served_hub(redis_url, "hub-b", tmp_path) as b,
    ):

        async def stats() -> Stats:
            snapshots = await cli_json("stats", *bus)
            return {(s["hub"], g["addr"]): g for s in snapshots for g in s["groups"]}

        # stats --json: both hubs, every group
        await wait_until_async(lambda: _has_hubs(stats, {"hub-a", "hub-b"}))
        table = (await cli("stats", *bus)).stdout.decode()
        assert "2 live hub(s)" in table and "hub-a" in table and "hub-b" in table and "PROCESSED" in table

        # publish: the id is printed; the work is done by one of them
        published = await cli("publish", "work", '{"n": 1}', "--header", "source=test", *bus)
        assert published.stdout.strip()
        await wait_until(lambda: len(a.lines("done") + b.lines("done")) == 1)
        reply = await cli("publish", "echo", '"hi"', "--wait-reply", "10", *bus)
        assert reply.stdout.decode().splitlines()[-1] == '{"echo":"hi"}'

        # dead letters: list, requeue, purge
        await cli("publish", "fail", '"poison"', *bus)
        letters = await _wait_for_letters(redis_url, 1)
        assert letters[0]["message"]["payload"] == "poison"
        assert "cannot handle poison" in letters[0]["error"]
        listed = (await cli("dead-letters", "list", "fail", *bus)).stdout.decode()
        assert "poison" in listed and "max_attempts" in listed
        assert (
            await cli("dead-letters", "requeue", "fail", *bus)
        ).stdout == b"requeued 1 dead letter(s) of fail\n"
        await _wait_for_letters(redis_url, 1)  # it failed again
        assert (
            await cli("dead-letters", "purge", "fail", *bus)
        ).stdout == b"purged 1 dead letter(s) of fail\n"
        assert await cli_json("dead-letters", "list", "fail", *bus) == []

        # scale: both hubs answer, and their stats show it
        scaled = (await cli("scale", "work", "--min", "2", "--max", "3", *bus)).stdout.decode().splitlines()
        assert scaled == [
            "hub-a  applied   scaled work to 2..3 workers",
            "hub-b  applied   scaled work to 2..3 workers",
        ]
        await wait_until_async(
            lambda: _all(stats, "work", lambda g: (g["min_workers"], g["max_workers"]) == (2, 3))
        )

        # pause: nothing new starts; resume: the waiting work runs
        assert "paused work" in (await cli("pause", "work", *bus)).stdout.decode()
        for n in range(4):
            await cli("publish", "work", str(100 + n), *bus)
        await wait_until_async(lambda: _at_least(stats, "work", "total_message_received", 5), timeout=30)
        assert len(a.lines("done") + b.lines("done")) == 1
        assert "resumed work" in (await cli("resume", "work", *bus)).stdout.decode()
        await wait_until(lambda: len(a.lines("done") + b.lines("done")) == 5)

        # restart: every worker replaced, counted
        restarted = (await cli("restart", "work", *bus)).stdout.decode()
        assert restarted.count("applied") == 2
        await wait_until_async(lambda: _all(stats, "work", lambda g: g["total_restarts"] == 1))

        # metrics of hub-a over HTTP
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'actionhub_messages_processed_total{group="work",hub="hub-a",topic="work"}' in scraped

        # an unknown group: one line, exit 2
        unknown = await cli("pause", "nope", *bus, check=False)
        assert unknown.returncode == 2
        assert unknown.stderr.decode() == "actionhub: error: no live hub runs a group named 'nope'\n"


Stats = dict[tuple[str, str], dict[str, Any]]


async def wait_until_async(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Poll an async predicate (a CLI round trip) until it holds."""
    with trio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - the state lives in other processes
            await trio.sleep(0.2)


async def _has_hubs(stats: Callable[[], Awaitable[Stats]], names: set[str]) -> bool:
    return {hub for hub, _ in await stats()} == names


async def _all(
    stats: Callable[[], Awaitable[Stats]], group: str, predicate: Callable[[dict[str, Any]], bool]
) -> bool:
    found = [g for (_, name), g in (await stats()).items() if name == group]
    return len(found) == 2 and all(predicate(g) for g in found)


async def _at_least(stats: Callable[[], Awaitable[Stats]], group: str, field: str, count: int) -> bool:
    return sum(g[field] for (_, name), g in (await stats()).items() if name == group) >= count


async def _wait_for_letters(url: str, count: int) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal letters
        letters = await cli_json("dead-letters", "list", "fail", "--bus", url)
        return len(letters) == count

    await wait_until_async(enough)
    return letters


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["publish", "work", "{not json"], 2, "invalid JSON payload"),
        (["publish", "bad topic", "1"], 2, "invalid topic 'bad topic'"),
        (["publish", "work*", "1"], 2, "invalid topic 'work*'"),
        (["publish", "work", "1", "--header", "novalue"], 2, "bad --header 'novalue'"),
        (["publish", "work"], 2, "the following arguments are required: JSON"),
        (["scale", "work", "--min", "3", "--max", "1"], 2, "need 0 <= min <= max"),
        (["stats", "--bus", "ftp://example.com"], 2, "unknown bus URL scheme 'ftp'"),
        (["stats", "--bus", "redis://localhost/0?colour=blue"], 2, "unknown option(s) ['colour']"),
        (["run", "no_such_module:hub"], 2, "cannot import 'no_such_module'"),
        (["run", "tests.cli_app:nothing"], 2, "has no attribute 'nothing'"),
        (["run", "tests.cli_app"], 2, "expected MODULE:HUB"),
        (["dead-letters", "list", "a b"], 2, "invalid topic 'a b'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["dashboard", "--bus", "ftp://example.com"], 2, "unknown bus URL scheme 'ftp'"),
        (["dashboard", "--port", "http"], 2, "not a port: 'http'"),
        (["dashboard", "--port", "70000"], 2, "a port is 0 to 65535, not 70000"),
        (["dashboard", "--token", "short"], 2, "a dashboard token needs 16 characters"),
    ],
)
async def test_bad_input_gets_one_line_and_a_nonzero_exit(args: list[str], code: int, message: str) -> None:
    result = await cli(*args, check=False)
    assert result.returncode == code
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
    assert stderr.startswith("actionhub")


@pytest.mark.parametrize("command", [["stats"], ["publish", "work", "1"], ["pause", "work"], ["dashboard"]])
async def test_an_unreachable_redis_is_one_line_and_exit_3(command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = await cli(*command, "--bus", url, "--timeout", "1", check=False)
    assert result.returncode == 3
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and "unreachable" in stderr and "Traceback" not in stderr


async def test_commands_without_any_live_hub_say_so(redis_url: str) -> None:
    result = await cli("pause", "work", "--bus", redis_url, check=False)
    assert (result.returncode, result.stderr.decode()) == (
        1,
        f"actionhub: error: no live hub on {redis_url}\n",
    )
    assert await cli_json("stats", "--bus", redis_url) == []


async def test_every_command_has_help() -> None:
    commands = ["run", "publish", "stats", "dead-letters", "scale", "pause", "resume", "restart", "demo"]
    for command in commands:
        result = await cli(command, "--help")
        assert b"usage: actionhub " + command.encode() in result.stdout


# --------------------------------------------------------------------------- stats --watch and demo


async def test_stats_watch_refreshes_until_interrupted(redis_url: str, tmp_path: Path) -> None:
    async with served_hub(redis_url, "watched", tmp_path):
        out = tmp_path / "watch.txt"
        with out.open("wb") as sink:
            process = await trio.lowlevel.open_process(
                [ACTIONHUB, "stats", "--watch", "0.2", "--json", "--bus", redis_url], stdout=sink, cwd=ROOT
            )
            await wait_until(lambda: out.read_text().count("\n") >= 3)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                assert await process.wait() == 0
    frames = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert all(frame[0]["hub"] == "watched" for frame in frames)


async def test_demo_runs_on_redis(redis_url: str) -> None:
    result = await cli("demo", "--bus", redis_url)
    output = result.stdout.decode()
    assert "ESCALATION  notify: reason=max_restarts" in output and "done in" in output


def test_each_command_has_its_own_default_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = build_parser().parse_args
    assert parse(["run", "app:hub"]).bus is None  # the hub's own
    assert parse(["demo"]).bus == "memory://"
    assert parse(["stats"]).bus == parse(["publish", "t", "1"]).bus == "redis://localhost:6379/0"
    monkeypatch.setenv("ACTIONHUB_BUS", "redis://ops@redis.internal:6379/2")
    assert build_parser().parse_args(["pause", "work"]).bus == "redis://ops@redis.internal:6379/2"


# --------------------------------------------------------------------------- past the restart limit


async def test_a_group_that_stops_the_hub_makes_run_exit_4_and_its_message_waits_for_the_next(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """``on_max_restarts="stop_hub"``: the hub stops gracefully and ``actionhub run`` exits 4 (one
    line, no traceback), so that systemd or Kubernetes starts a fresh one; /readyz and /healthz
    answered on ``--health-port`` until then."""
    port, log = free_port(), tmp_path / "stopper.log"
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [ACTIONHUB, "run", "tests.stop_hub_app:hub", "--bus", redis_url, "--health-port", str(port)],
            cwd=ROOT,
            stderr=log_file,
        )
        try:
            await wait_until(lambda: "ready; SIGTERM" in log.read_text() or process.poll() is not None)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                assert (await http.get(f"http://127.0.0.1:{port}/healthz")).json()["live"] is True
            await cli("publish", "fragile", '"order-7"', "--bus", redis_url)
            with trio.fail_after(30):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    text = log.read_text()
    assert code == 4, text
    assert text.strip().splitlines()[-1] == (
        "actionhub: error: hub hub-"
        + text.split("actionhub: error: hub hub-", 1)[1].split(" ", 1)[0]
        + " stopped: group fragile went past its restart limit "
        "(ConnectionError('the database is gone (order-7)'))"
    )
    assert "Traceback" not in text
    # the message was retried, not lost: it waits in Redis for the next hub (in the delayed set,
    # or, if it came due before the hub stopped, as a second entry of the stream)
    prefix = prefix_of(redis_url)
    assert client.zcard(f"{prefix}delayed") + client.xlen(f"{prefix}fragile") == 2
    assert client.xlen(f"{prefix}dead:fragile") == 0


async def test_run_follows_actionhub_bus_like_every_other_command(redis_url: str, tmp_path: Path) -> None:
    """``tests.cli_app:hub`` is written for memory://; with ``$ACTIONHUB_BUS`` set and no
    ``--bus``, ``run`` serves on that bus (as ``stats`` reads it) and says so."""
    log = tmp_path / "env.log"
    env = {**os.environ, "ACTIONHUB_BUS": redis_url, "CLI_APP_OUT": str(tmp_path / "out")}
    with log.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [ACTIONHUB, "run", "tests.cli_app:hub", "--name", "from-env"], cwd=ROOT, env=env, stderr=log_file
        )
        try:
            await wait_until(lambda: "hub from-env ready" in log.read_text() or process.poll() is not None)
            assert f"hub from-env on {redis_url} ($ACTIONHUB_BUS)" in log.read_text()

            async def announced() -> bool:
                seen = await trio.run_process(
                    [ACTIONHUB, "stats", "--json"], cwd=ROOT, env=env, capture_stdout=True, check=True
                )
                return [snapshot["hub"] for snapshot in orjson.loads(seen.stdout)] == ["from-env"]

            await wait_until_async(announced)
        finally:
            process.kill()
            await process.wait()

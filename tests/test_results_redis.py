"""Results and status on Redis: a result fetched by a client in another process with no
request/reply, each client flavour, every state, expiry with a short ``keep_result``, records
that are not ours, and a hub that keeps no results writes no status at all."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from actionhub import ActionHub, InvalidStatusRecord, Job, MessageDead, MessageStatus, Reject, Retry
from actionhub.bus.redis.keys import Keys
from actionhub.bus.url import open_bus
from actionhub.testing import EscalationLog, RedisServer
from bench import results as results_bench
from tests.layouts import on_redis
from tests.polling import wait_until
from tests.test_clients import FLAVOURS, Flavour

ROOT = Path(__file__).resolve().parent.parent

# The other process: a blocking Client that waits for the result and reads the status, then
# prints both as JSON. It never publishes nor asks for a reply.
FETCH = """
import sys, orjson
from actionhub.client import Client
with Client(sys.argv[1]) as client:
    value = client.result(sys.argv[2], timeout=60)
    status = client.status(sys.argv[2])
print(orjson.dumps({"result": value, "state": status.state, "attempt": status.attempt}).decode())
"""


class Gates:
    def __init__(self) -> None:
        self.release = trio.Event()
        self.entered = 0


@asynccontextmanager
async def keeping(url: str, keep_result: float = 60) -> AsyncIterator[tuple[ActionHub, Gates]]:
    hub = ActionHub(url, name="keeper", announce_interval=0.5)
    gates = Gates()

    @hub.action("square", keep_result=keep_result)
    async def square(job: Job) -> dict[str, int]:
        return {"square": job.payload * job.payload}

    @hub.action("staged", keep_result=keep_result, max_attempts=3)
    async def staged(job: Job) -> str:
        gates.entered += 1
        await gates.release.wait()
        if job.attempt == 1:
            raise Retry(delay=2)
        return f"done on attempt {job.attempt}"

    @hub.action("refuse", keep_result=keep_result)
    async def refuse(job: Job) -> None:
        raise Reject("not today")

    async with hub.running():
        yield hub, gates


async def _until(
    hub: ActionHub, message_id: str, condition: Callable[[MessageStatus], bool]
) -> MessageStatus:
    """The message's status once ``condition`` holds: it lives in Redis, observed, not awaited."""
    with trio.fail_after(30):
        while not condition(status := await hub.status(message_id)):  # noqa: ASYNC110 - in Redis
            await trio.sleep(0.01)
    return status


def _redis(url: str) -> tuple[Any, Keys]:
    """A client of ``url``'s Redis (single node or cluster) and its key names."""
    on = on_redis(url)
    return on.client, on.keys


async def test_a_client_in_another_process_gets_the_result_without_request_reply(redis_url: str) -> None:
    async with keeping(redis_url) as (hub, _):
        message_id = await hub.publish("square", 12)
        done = await trio.run_process(
            [sys.executable, "-c", FETCH, redis_url, message_id],
            capture_stdout=True,
            capture_stderr=True,
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout) == {"result": {"square": 144}, "state": "done", "attempt": 1}


async def test_another_process_waits_for_a_result_that_comes_later(redis_url: str) -> None:
    async with keeping(redis_url) as (hub, gates):
        message_id = await hub.publish("staged", None)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", FETCH, redis_url, message_id], stdout=subprocess.PIPE, cwd=ROOT
        )
        try:
            await wait_until(lambda: gates.entered == 1)
            gates.release.set()  # attempt 1 retries after 2 s, attempt 2 returns
            with trio.fail_after(60):
                await process.wait()
            assert process.stdout is not None
            output = await process.stdout.receive_some()
        finally:
            process.kill()
    assert orjson.loads(output) == {"result": "done on attempt 2", "state": "done", "attempt": 2}


async def test_status_through_each_state(bus_url: str) -> None:
    redis_url = bus_url
    async with keeping(redis_url) as (hub, gates):
        message_id = await hub.publish("staged", None, delay=1)
        pending = await hub.status(message_id)
        assert (pending.state, pending.topic) == ("pending", "staged")  # written by the publish

        await wait_until(lambda: gates.entered == 1)
        running = await _until(hub, message_id, lambda status: status.state != "pending")
        assert (running.state, running.group, running.attempt) == ("running", "staged", 1)
        gates.release.set()
        status = await _until(hub, message_id, lambda status: status.state != "running")
        assert (status.state, status.attempt) == ("retrying", 2)
        assert status.next_attempt_at is not None and status.at is not None
        assert status.next_attempt_at - status.at == pytest.approx(2)
        assert await hub.result(message_id, timeout=30) == "done on attempt 2"
        done = await hub.status(message_id)
        assert (done.state, done.attempt, done.result) == ("done", 2, "done on attempt 2")

        refused = await hub.publish("refuse", None)
        with pytest.raises(MessageDead, match="rejected: not today"):
            await hub.result(refused, timeout=30)
        assert (await hub.status(refused)).reason == "rejected: not today"
        assert await hub.status("no-such-message") == MessageStatus("no-such-message", "unknown")
        with pytest.raises(trio.TooSlowError):
            await hub.result("no-such-message", timeout=0.3)


@pytest.mark.parametrize("name", FLAVOURS)
async def test_every_client_flavour_reads_status_and_results(redis_url: str, name: str) -> None:
    flavour = Flavour(name, f"{redis_url}&block=0.2")
    try:
        async with keeping(redis_url) as (hub, _):
            message_id = await hub.publish("square", 3)
            assert await flavour.call("result", message_id, 30) == {"square": 9}
            status = await flavour.call("status", message_id)
            assert (status.state, status.result) == ("done", {"square": 9})
            refused = await hub.publish("refuse", None)
            with pytest.raises(MessageDead, match="not today"):
                await flavour.call("result", refused, 30)
            with pytest.raises(TimeoutError, match="still unknown"):
                await flavour.call("result", "no-such-message", 0.3)
            assert (await flavour.call("status", "no-such-message")).state == "unknown"
    finally:
        await flavour.close()


async def test_results_expire_after_a_short_keep_result(bus_url: str) -> None:
    redis_url = bus_url
    client, keys = _redis(redis_url)
    async with keeping(redis_url, keep_result=0.5) as (hub, _):
        message_id = await hub.publish("square", 2)
        assert await hub.result(message_id, timeout=30) == {"square": 4}
        ttl = client.pttl(keys.status(message_id))
        assert 0 < ttl <= 500
        assert 0 < client.pttl(keys.status_bell(message_id)) <= 500  # never outlives the record
        await wait_until(lambda: client.exists(keys.status(message_id)) == 0, timeout=10)
        assert (await hub.status(message_id)).state == "unknown"
        assert client.exists(keys.status_bell(message_id)) == 0


async def test_a_hub_keeping_results_keeps_its_topics_marked(bus_url: str) -> None:
    redis_url = bus_url
    client, keys = _redis(redis_url)
    async with keeping(redis_url, keep_result=60):
        assert float(client.get(keys.keeps_results("square"))) == 60.0
        assert 0 < client.pttl(keys.keeps_results("square")) <= 60_000


async def test_records_that_are_not_ours_are_never_unpickled(redis_url: str) -> None:
    client, keys = _redis(redis_url)
    client.set(keys.status("evil"), pickle.dumps({"state": "done", "result": 1}))
    async with keeping(redis_url) as (hub, _):
        with pytest.raises(InvalidStatusRecord, match="not JSON"):
            await hub.status("evil")
    flavour = Flavour("blocking", redis_url)
    try:
        with pytest.raises(InvalidStatusRecord):
            await flavour.call("result", "evil", 1)
    finally:
        await flavour.close()


async def test_a_hub_that_keeps_no_results_writes_no_status(bus_url: str) -> None:
    redis_url = bus_url
    client, keys = _redis(redis_url)
    hub = ActionHub(redis_url, name="plain")
    seen: list[int] = []

    @hub.action("plain", max_workers=4)
    async def plain(job: Job) -> int:
        seen.append(job.payload)
        return 1

    async with hub.running():
        for n in range(50):
            await hub.publish("plain", n)
        await wait_until(lambda: len(seen) == 50)
        assert hub.group("plain").runner.keeper is None
        assert "_statuses" not in vars(hub.bus)  # no store was made on this bus
    for pattern in ("status:*", "bell:*", "keep:*", "*status", "*bell", "*}keep:*"):
        assert list(client.scan_iter(match=f"{keys.prefix}{pattern}")) == []


async def cli(*args: str) -> trio.CompletedProcess[bytes]:
    """``actionhub ARGS`` from this checkout; its exit code, stdout and stderr."""
    command = [sys.executable, "-c", "import sys; from actionhub.cli import main; sys.exit(main())", *args]
    return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)


async def test_the_status_command(redis_url: str) -> None:
    async with keeping(redis_url) as (hub, _):
        done = await hub.publish("square", 5)
        waited = await cli("status", done, "--wait", "30", "--bus", redis_url)
        assert (waited.returncode, orjson.loads(waited.stdout)) == (0, {"square": 25})
        line = await cli("status", done, "--bus", redis_url)
        assert line.returncode == 0
        assert line.stdout.decode().startswith(f"{done} done topic=square group=square attempt=1 at=")
        assert line.stdout.decode().rstrip().endswith('result={"square":25}')
        document = orjson.loads((await cli("status", done, "--json", "--bus", redis_url)).stdout)
        assert (document["state"], document["result"]) == ("done", {"square": 25})

        refused = await hub.publish("refuse", None)
        dead = await cli("status", refused, "--wait", "30", "--bus", redis_url)
        assert dead.returncode == 1 and "rejected: not today" in dead.stderr.decode()
        unknown = await cli("status", "nope", "--bus", redis_url)
        assert (unknown.returncode, unknown.stdout.decode()) == (0, "nope unknown\n")
        late = await cli("status", "nope", "--wait", "0.3", "--bus", redis_url)
        assert late.returncode == 1 and "still unknown" in late.stderr.decode()
    misuse = await cli("status", "--bus", redis_url)
    assert misuse.returncode == 2 and len(misuse.stderr.decode().splitlines()) == 1
    bad = await cli("status", "x", "--wait", "-1", "--bus", redis_url)
    assert bad.returncode == 2 and len(bad.stderr.decode().splitlines()) == 1


def test_the_results_benchmark_runs(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    results_bench.main(["-n", "200", "-r", "1", "--url", redis_server.url])
    out = capsys.readouterr().out
    assert "ratio keep/none" in out and "ratio kept/not" in out


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A bus URL of each kind keeping status records: in memory, on one node, on a cluster."""
    return "memory://" if request.param == "memory" else str(request.getfixturevalue(f"{request.param}_url"))


async def test_a_late_write_never_undoes_a_later_state(store_url: str) -> None:
    """Hub A's ``retrying`` of attempt 2 landing after hub B's ``done`` of attempt 2 (A's writer
    was slow) is refused; so is attempt 1's ``running`` after it; a redelivery's ``running``
    (attempt 3) replaces the ``done`` until its own final record comes."""
    from actionhub.results import encode, rank

    hub = ActionHub(store_url)
    async with hub.running():
        store = hub.bus.statuses()

        async def write(state: str, attempt: int, result: object = None) -> None:
            record = encode(MessageStatus("m", state, attempt=attempt, result=result))  # type: ignore[arg-type]
            final = state in ("done", "dead")
            await store.write("m", record, 60, final=final, rank=rank(state, attempt))
            flush = getattr(store, "flush", None)  # Redis queues what is not final: send it now
            if flush is not None:
                await flush()

        async def state() -> tuple[str, int | None]:
            status = await hub.status("m")
            return status.state, status.attempt

        await write("running", 2)
        await write("done", 2, "ok")
        await write("retrying", 2)
        await write("running", 1)
        assert await state() == ("done", 2)
        assert await hub.result("m", timeout=1) == "ok"
        await write("running", 3)
        assert await state() == ("running", 3)


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_one_group_of_a_topic_may_keep_results(where: str, redis_url: str) -> None:
    """Every group gets every message: two keeping results would overwrite each other's records
    of it. The second group fails to start, loudly (a start_failure escalation naming both),
    and the first keeps running; another hub of the same group joins as usual."""
    url = "memory://" if where == "memory" else redis_url
    escalations = EscalationLog()
    bus = open_bus(url)
    first, second = ActionHub(bus, name="first"), ActionHub(bus, name="second", on_escalation=escalations)
    joiner = ActionHub(bus, name="joiner")

    async def work(job: Job) -> str:
        return "ok"

    first.bind("keeper", work, topic="orders", keep_result=60)
    second.bind("auditor", work, topic="orders", keep_result=60)
    joiner.bind("keeper", work, topic="orders", keep_result=60)
    async with first.running(), second.running(), joiner.running():
        await wait_until(lambda: len(escalations) == 1)
        (escalation,) = escalations
        assert escalation.reason == "start_failure" and escalation.group == "auditor"
        assert "group 'auditor' cannot keep results of topic 'orders'" in str(escalation.error)
        assert [s.addr for s in joiner.stats()] == ["keeper"]
        message_id = await second.publish("orders", 1)
        assert await first.result(message_id, timeout=10) == "ok"

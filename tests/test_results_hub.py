"""Results and status on memory://, on trio's MockClock (autojump): every state a message goes
through, typed results, expiry, unknown messages, records that are not ours, and that a group
without ``keep_result`` writes nothing."""

from __future__ import annotations

import pickle
from typing import Any

import pydantic
import pytest
import trio

from actionhub import (
    ActionHub,
    InvalidStatusRecord,
    Job,
    MemoryBus,
    MessageDead,
    MessageStatus,
    Reject,
    Retry,
)
from actionhub.bus.statuses import MemoryStatuses
from tests import process_jobs


class Receipt(pydantic.BaseModel):
    order: int
    total_cents: int


class Gate:
    """Lets the test hold an action where it wants and see how far it got."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()


async def test_status_through_every_state(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")
    gates = [Gate(), Gate()]

    @hub.action("work", keep_result=600, max_attempts=3)
    async def work(job: Job) -> dict[str, Any]:
        gate = gates[job.attempt - 1]
        gate.entered.set()
        await gate.release.wait()
        if job.attempt == 1:
            raise Retry(delay=30)
        return {"order": job.payload["order"], "attempt": job.attempt}

    async with hub.running():
        published_at = trio.current_time()
        message_id = await hub.publish("work", {"order": 7}, delay=10)
        pending = await hub.status(message_id)
        assert (pending.state, pending.topic, pending.attempt) == ("pending", "work", None)
        assert not pending.final

        await gates[0].entered.wait()
        assert trio.current_time() - published_at >= 10
        running = await hub.status(message_id)
        assert (running.state, running.group, running.attempt) == ("running", "work", 1)

        gates[0].release.set()
        await trio.sleep(1)
        retrying = await hub.status(message_id)
        assert (retrying.state, retrying.attempt) == ("retrying", 2)
        assert retrying.next_attempt_at is not None and retrying.at is not None
        assert retrying.next_attempt_at - retrying.at == pytest.approx(30)

        await gates[1].entered.wait()
        assert (await hub.status(message_id)).state == "running"
        assert (await hub.status(message_id)).attempt == 2
        gates[1].release.set()
        assert await hub.result(message_id, timeout=5) == {"order": 7, "attempt": 2}
        done = await hub.status(message_id)
        assert (done.state, done.attempt, done.result) == ("done", 2, {"order": 7, "attempt": 2})
        assert done.final


async def test_dead_messages_say_why_and_result_raises(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("refuse", keep_result=60)
    async def refuse(job: Job) -> None:
        raise Reject("no such order")

    @hub.action("crash", keep_result=60, max_attempts=2, retry_backoff=(1, 1))
    async def crash(job: Job) -> None:
        raise ValueError(f"broken {job.payload}")

    async with hub.running():
        refused = await hub.publish("refuse", 1)
        with pytest.raises(MessageDead, match="rejected: no such order") as raised:
            await hub.result(refused, timeout=5)
        assert raised.value.status.state == "dead" and raised.value.status.attempt == 1

        crashed = await hub.publish("crash", 2)
        with pytest.raises(MessageDead) as raised:
            await hub.result(crashed, timeout=60)
        dead = await hub.status(crashed)
        assert dead == raised.value.status
        assert dead.reason == "max_attempts: failed 2 of 2 attempts" and dead.attempt == 2
        assert dead.error is not None and "broken 2" in dead.error


async def test_typed_results_are_stored_as_json_and_decoded_on_ask(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("charge", keep_result=60)
    async def charge(job: Job) -> Receipt:
        return Receipt(order=job.payload, total_cents=1250)

    async with hub.running():
        message_id = await hub.publish("charge", 42)
        receipt = await hub.result(message_id, timeout=5, result_type=Receipt)
        assert receipt == Receipt(order=42, total_cents=1250)
        assert await hub.result(message_id) == {"order": 42, "total_cents": 1250}  # as JSON


async def test_a_result_that_is_not_json_fails_the_run(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("odd", keep_result=60, max_attempts=1)
    async def odd(job: Job) -> object:
        return object()

    async with hub.running():
        message_id = await hub.publish("odd", None)
        with pytest.raises(MessageDead) as raised:
            await hub.result(message_id, timeout=5)
    assert "not JSON-serialisable" in (raised.value.status.error or "")
    assert len(await hub.bus.dead_letters("odd")) == 1  # a failed run, in the dead letters


async def test_final_records_expire_after_keep_result_others_later(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("quick", keep_result=5)
    async def quick(job: Job) -> int:
        return 1

    async with hub.running():
        done = await hub.publish("quick", None)
        assert await hub.result(done, timeout=1) == 1
        await trio.sleep(4.9)
        assert (await hub.status(done)).state == "done"
        await trio.sleep(0.2)
        assert (await hub.status(done)).state == "unknown"

        waiting = await hub.publish("quick", None, delay=3600)  # pending for an hour: kept past 5 s
        await trio.sleep(600)
        assert (await hub.status(waiting)).state == "pending"
        assert await hub.result(waiting, timeout=3600) == 1


async def test_unknown_messages_and_timeouts(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("slow", keep_result=60)
    async def slow(job: Job) -> int:
        await trio.sleep(100)
        return 2

    async with hub.running():
        assert await hub.status("never-published") == MessageStatus("never-published", "unknown")
        with pytest.raises(trio.TooSlowError):
            await hub.result("never-published", timeout=3)
        message_id = await hub.publish("slow", None)
        with pytest.raises(trio.TooSlowError, match="still running"):
            await hub.result(message_id, timeout=10)
        with pytest.raises(ValueError, match="timeout"):
            await hub.result(message_id, timeout=-1)


async def test_a_waiter_wakes_on_the_final_write_not_by_polling(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub("memory://")

    @hub.action("long", keep_result=60)
    async def long(job: Job) -> str:
        await trio.sleep(10_000)
        return "finally"

    async with hub.running():
        message_id = await hub.publish("long", None)
        store = hub.bus.statuses()
        reads = 0
        read = store.read

        async def counted(message_id: str) -> bytes | None:
            nonlocal reads
            reads += 1
            return await read(message_id)

        store.read = counted  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            results: list[str] = []

            async def wait_for_it() -> None:
                results.append(await hub.result(message_id))

            for _ in range(3):
                nursery.start_soon(wait_for_it)
        assert results == ["finally"] * 3
        assert reads == 6  # each waiter: once before the result, once when the bell rang


async def test_records_are_never_unpickled(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    hub = ActionHub(bus)
    async with hub.running():
        store = bus.statuses()
        await store.write("m1", pickle.dumps({"state": "done", "result": 1}), 60, final=True, rank=3)
        with pytest.raises(InvalidStatusRecord, match="not JSON"):
            await hub.status("m1")
        with pytest.raises(InvalidStatusRecord):
            await hub.result("m1", timeout=1)


async def test_hubs_sharing_a_memory_bus_share_records(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    worker, caller = ActionHub(bus, name="worker"), ActionHub(bus, name="caller")

    @worker.action("double", keep_result=60)
    async def double(job: Job) -> int:
        return int(job.payload) * 2

    async with worker.running(), caller.running():
        message_id = await caller.publish("double", 21)
        assert await caller.result(message_id, timeout=5) == 42


async def test_a_group_without_keep_result_writes_nothing(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    hub = ActionHub(bus)
    ran = trio.Event()

    @hub.action("plain")
    async def plain(job: Job) -> int:
        ran.set()
        return 1

    async with hub.running():
        message_id = await hub.publish("plain", None)
        await ran.wait()
        assert hub.group("plain").runner.keeper is None
        assert bus._statuses is None  # no store was even made: nothing per message
        assert (await hub.status(message_id)).state == "unknown"
        store = bus.statuses()
        assert isinstance(store, MemoryStatuses) and store.kept == {}


async def test_a_process_isolated_action_keeps_its_result() -> None:
    hub = ActionHub("memory://")
    hub.bind("cpu", process_jobs.cpu_job, isolation="process", keep_result=60)  # type: ignore[arg-type]
    async with hub.running():
        message_id = await hub.publish("cpu", {"n": 10})
        assert await hub.result(message_id, timeout=60) == process_jobs.cpu_job({"n": 10})

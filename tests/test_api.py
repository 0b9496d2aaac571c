"""The public API on the memory:// bus: publish, request/reply, retries, dead letters, stop."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

import actionhub
from actionhub import (
    ActionHub,
    Backoff,
    ConfigurationError,
    HubStopped,
    Job,
    Overloaded,
    Reject,
    Retry,
)


async def test_public_names_are_exported() -> None:
    for name in [
        "ActionHub",
        "Job",
        "Behaviour",
        "Instance",
        "Escalation",
        "EscalationProtocol",
        "WorkerStat",
        "WorkerTemplateRegistry",
        "SlaveTemplate",
        "Retry",
        "Reject",
        "Overloaded",
        "HubStopped",
    ]:
        assert hasattr(actionhub, name), name


async def test_publish_runs_the_action_with_decoded_payload(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    got: list[Job] = []

    @hub.action("greet")
    async def greet(job: Job) -> None:
        got.append(job)

    async with hub.running():
        msg_id = await hub.publish("greet", {"name": "ada", "tags": ("a", "b")}, headers={"k": "v"})
        await trio.sleep(1)
    assert len(got) == 1
    job = got[0]
    assert job.payload == {"name": "ada", "tags": ["a", "b"]}  # what JSON on the wire would give
    assert job.message.id == msg_id
    assert job.topic == "greet" and job.action == "greet" and job.attempt == 1
    assert job.headers == {"k": "v"}
    assert job.hub is hub


async def test_publish_many_runs_each_payload_in_order(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    got: list[Job] = []

    @hub.action("count", max_workers=1)
    async def count(job: Job) -> None:
        got.append(job)

    async with hub.running():
        ids = await hub.publish_many("count", ({"n": n} for n in range(5)), headers={"k": "v"})
        await trio.sleep(1)
    assert [job.payload for job in got] == [{"n": n} for n in range(5)]
    assert [job.message.id for job in got] == ids and len(set(ids)) == 5
    assert all(job.headers == {"k": "v"} for job in got)


async def test_payload_must_be_json() -> None:
    hub = ActionHub()
    hub.bind("a", _noop)
    async with hub.running():
        with pytest.raises(TypeError, match="JSON"):
            await hub.publish("a", {"x": object()})


async def test_request_reply(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("double")
    async def double(job: Job) -> None:
        await job.reply({"n": job.payload["n"] * 2})

    async with hub.running():
        answer = await hub.request("double", {"n": 21}, timeout=5)
        assert answer.payload == {"n": 42}
        with pytest.raises(trio.TooSlowError):
            await hub.request("nobody-listens", {}, timeout=1)
    assert hub.bus._replies == {}  # type: ignore[attr-defined]  # no leaked reply channels


async def test_reply_without_reply_to_is_a_no_op(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    results: list[bool] = []

    @hub.action("a")
    async def a(job: Job) -> None:
        results.append(await job.reply("x"))

    async with hub.running():
        await hub.publish("a", 1)
        await trio.sleep(1)
    assert results == [False]


async def test_hubs_sharing_a_group_share_the_work(autojump_clock: trio.abc.Clock) -> None:
    bus = actionhub.MemoryBus()
    handled: dict[str, list[int]] = {"a": [], "b": []}
    hubs = []
    for label in "ab":
        hub = ActionHub(bus, name=label)

        async def work(job: Job, label: str = label) -> None:
            handled[label].append(job.payload)
            await trio.sleep(0.1)

        hub.bind("work", work, max_workers=1, buffer=5)
        hubs.append(hub)
    async with hubs[0].running(), hubs[1].running():
        for i in range(10):
            await hubs[0].publish("work", i)
        await trio.sleep(5)
    assert sorted(handled["a"] + handled["b"]) == list(range(10))
    assert handled["a"] and handled["b"]


async def test_retry_then_succeed(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    attempts: list[int] = []

    @hub.action("flaky", max_attempts=5, retry_backoff=(1.0, 10.0, 0.0))
    async def flaky(job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise Retry()

    async with hub.running():
        await hub.publish("flaky", 1)
        await trio.sleep(10)
    assert attempts == [1, 2, 3]
    (stat,) = hub.stats()  # the last snapshot stays readable after stop
    assert stat.total_retried == 2 and stat.total_message_processed == 1 and stat.total_panics == 0


async def test_retry_backoff_is_exponential(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    times: list[float] = []

    @hub.action("flaky", max_attempts=4, retry_backoff=(1.0, 100.0, 0.0))
    async def flaky(job: Job) -> None:
        times.append(trio.current_time())
        raise Retry()

    async with hub.running():
        await hub.publish("flaky", 1)
        await trio.sleep(60)
        (stat,) = hub.stats()
        assert stat.total_retried == 3 and stat.total_dead_lettered == 1 and stat.total_panics == 0
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps == [1.0, 2.0, 4.0]
    (letter,) = await hub.dead_letters("flaky")
    assert letter.attempts == 4 and letter.reason.startswith("max_attempts")


async def test_retry_with_explicit_delay(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    times: list[float] = []

    @hub.action("later")
    async def later(job: Job) -> None:
        times.append(trio.current_time())
        if job.attempt == 1:
            raise Retry(delay=7)

    async with hub.running():
        await hub.publish("later", 1)
        await trio.sleep(20)
    assert round(times[1] - times[0], 3) == 7


async def test_reject_dead_letters_at_once_and_is_not_a_panic(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("strict", max_attempts=5)
    async def strict(job: Job) -> None:
        raise Reject("bad order")

    async with hub.running():
        await hub.publish("strict", {"id": 1})
        await trio.sleep(1)
        (stat,) = hub.stats()
        assert stat.total_panics == 0 and stat.total_rejected == 1 and stat.total_dead_lettered == 1
        (letter,) = await hub.dead_letters("strict")
        assert letter.reason == "rejected: bad order" and letter.message.payload == {"id": 1}


async def test_panicking_message_is_retried_then_dead_lettered_with_error(
    autojump_clock: trio.abc.Clock, escalations: list[object]
) -> None:
    hub = ActionHub(on_escalation=escalations.append)

    @hub.action("boom", max_attempts=3)
    async def boom(job: Job) -> None:
        raise ValueError(f"attempt {job.attempt}")

    async with hub.running():
        await hub.publish("boom", 1)
        await trio.sleep(60)
        (letter,) = await hub.dead_letters("boom")
        assert letter.attempts == 3
        assert "ValueError" in (letter.error or "") and "attempt 3" in (letter.traceback or "")
        (stat,) = hub.stats()
        assert stat.total_panics == 3 and stat.total_failed == 3 and stat.total_retried == 2


async def test_dead_letters_requeue_and_purge(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    fixed = False
    done: list[int] = []

    @hub.action("job", max_attempts=1)
    async def job(j: Job) -> None:
        if not fixed:
            raise Reject("not yet")
        done.append(j.payload)

    async with hub.running():
        for i in range(3):
            await hub.publish("job", i)
        await trio.sleep(1)
        letters = await hub.dead_letters("job")
        assert [dl.message.payload for dl in letters] == [0, 1, 2]
        assert await hub.purge_dead_letters("job", [letters[0].id]) == 1
        fixed = True
        assert await hub.requeue_dead_letters("job") == 2
        await trio.sleep(1)
        assert await hub.dead_letters("job") == []
    assert sorted(done) == [1, 2]


async def test_delayed_publish(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    times: list[float] = []

    @hub.action("tick")
    async def tick(job: Job) -> None:
        times.append(trio.current_time())

    async with hub.running():
        start = trio.current_time()
        await hub.publish("tick", 1, delay=30)
        await trio.sleep(29)
        assert times == []
        await trio.sleep(2)
    assert round(times[0] - start, 3) == 30


async def test_publish_after_stop_raises_and_never_blocks() -> None:
    hub = ActionHub()
    hub.bind("a", _noop)
    with pytest.raises(HubStopped, match="not running"):
        await hub.publish("a", 1)
    async with hub.running():
        pass
    with trio.fail_after(1):
        with pytest.raises(HubStopped):
            await hub.publish("a", 1)
        with pytest.raises(HubStopped):
            await hub.request("a", 1, timeout=1)


async def test_overloaded_after_accept_wait(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()
    release = trio.Event()

    @hub.action("slow", max_workers=1, buffer=2, accept_wait=0.5)
    async def slow(job: Job) -> None:
        await release.wait()

    async with hub.running():
        await hub.publish("slow", 0)  # taken by the worker
        await trio.sleep(0.1)
        await hub.publish("slow", 1)
        await hub.publish("slow", 2)  # buffer now full
        start = trio.current_time()
        with pytest.raises(Overloaded) as info:
            await hub.publish("slow", 3)
        assert trio.current_time() - start == pytest.approx(0.5)
        assert info.value.group == "slow"
        (stat,) = hub.stats()
        assert stat.buffered == 2 and stat.total_overloaded == 1
        release.set()


async def test_blocked_publisher_gets_room_when_a_worker_takes_one(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("slow", max_workers=1, buffer=1, accept_wait=10)
    async def slow(job: Job) -> None:
        await trio.sleep(1)

    async with hub.running():
        for i in range(4):
            await hub.publish("slow", i)  # waits for room instead of failing
        (stat,) = hub.stats()
        assert stat.total_overloaded == 0


async def test_stop_releases_blocked_publishers_with_hub_stopped(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("slow", max_workers=1, buffer=1, accept_wait=1000, shutdown_timeout=1)
    async def slow(job: Job) -> None:
        await trio.sleep_forever()

    errors: list[BaseException] = []

    async def blocked_publisher() -> None:
        try:
            await hub.publish("slow", "x")
        except HubStopped as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.publish("slow", 1)
        await trio.sleep(0.1)
        await hub.publish("slow", 2)
        nursery.start_soon(blocked_publisher)
        await trio.sleep(1)
        await hub.stop()
    assert len(errors) == 1


async def test_configuration_errors_are_clear() -> None:
    hub = ActionHub()
    with pytest.raises(ConfigurationError, match="min_workers"):
        hub.bind("a", _noop, min_workers=5, max_workers=2)
    with pytest.raises(ConfigurationError, match="unknown action option"):
        hub.bind("a", _noop, max_worker=2)
    with pytest.raises(ConfigurationError, match="max_workers must be at least 1"):
        hub.bind("a", _noop, max_workers=0)
    for backoff in ({"min": "soon"}, {"minimum": 1}, ("soon",), 5):
        with pytest.raises(ConfigurationError, match="a backoff is a Backoff"):
            hub.bind("a", _noop, retry_backoff=backoff)
    assert hub.bind("b", _noop, restart_backoff={"min": 1, "max": 2}).config.restart_backoff == Backoff(1, 2)
    await hub.unbind("b")
    hub.bind("a", _noop)
    with pytest.raises(ConfigurationError, match="already"):
        hub.bind("a", _noop)
    with pytest.raises(ConfigurationError, match="scheme"):
        ActionHub("kafka://x")
    with pytest.raises(ConfigurationError, match="unknown option"):
        ActionHub("memory://?colour=blue")


async def test_a_hub_runs_once() -> None:
    hub = ActionHub()
    async with hub.running():
        pass
    with pytest.raises(RuntimeError, match="already run"):
        await hub.run()


async def test_stop_from_inside_an_action_does_not_deadlock(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("quit")
    async def quit_(job: Job) -> None:
        await hub.stop()

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.publish("quit", None)
    assert not hub.is_running


async def test_timeout_is_a_panic_counted_as_timeout(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("hang", timeout=2, max_attempts=1)
    async def hang(job: Job) -> None:
        await trio.sleep_forever()

    async with hub.running():
        await hub.publish("hang", 1)
        await trio.sleep(5)
        (stat,) = hub.stats()
        assert stat.total_timeouts == 1 and stat.total_panics == 1
        (letter,) = await hub.dead_letters("hang")
        assert "timeout" in (letter.error or "")


async def _noop(job: Job) -> None:
    pass

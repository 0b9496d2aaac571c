"""A group cooling down on Redis: what it held goes back to the bus at once, so another hub of the
group runs it now, not after ``visibility_timeout``; an ordered group hands over its partitions
the same way; back from the cool-down, a lone hub runs what it handed back itself."""

from __future__ import annotations

import trio

from actionhub import ActionHub, Backoff, Escalation, GroupState, Job
from tests.faults import cannot_start
from tests.polling import wait_until

VISIBILITY = 20.0  # what the unstarted messages would wait without the hand-back


class GiveUps:
    """An ``on_escalation`` callback that keeps the give-ups, and when they came."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Escalation]] = []

    def __call__(self, escalation: Escalation) -> None:
        if escalation.reason == "max_restarts":
            self.seen.append((trio.current_time(), escalation))


async def test_a_cooling_group_hands_its_unstarted_messages_to_another_hub_at_once(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout={VISIBILITY}&block=0.2"
    give_ups = GiveUps()
    broken = ActionHub(url, name="broken", on_escalation=give_ups)
    working = ActionHub(url, name="working")
    ran: dict[str, float] = {}

    async def fail(job: Job) -> None:
        raise ConnectionError("the store is unreachable from this host")

    async def work(job: Job) -> None:
        ran[job.message.id] = trio.current_time()

    # one worker and a large buffer: the broken hub holds many unstarted messages when it gives up
    broken.bind("work", fail, max_workers=1, buffer=200, max_restarts=0, cool_down=Backoff(600, 600, 0))
    working.bind("work", work, buffer=1)
    async with working.running(), broken.running():
        working.group("work").pause()  # while the broken hub fills its buffer
        ids = await working.publish_many("work", list(range(300)))
        await wait_until(lambda: bool(give_ups.seen), timeout=20)
        working.group("work").resume()
        gave_up_at, escalation = give_ups.seen[0]
        handed_back = {message.id for message in escalation.pending_messages}
        assert len(handed_back) >= 100
        assert broken.group("work").stats().state is GroupState.COOLING_DOWN
        with trio.fail_after(VISIBILITY / 2):  # far below the visibility timeout
            await wait_until(lambda: handed_back <= ran.keys(), poll=0.01)
        taken_over = max(ran[i] for i in handed_back) - gave_up_at
        await wait_until(lambda: set(ids) <= ran.keys(), timeout=30)  # the crashed one too (retried)
    print(
        f"\n{len(handed_back)} unstarted messages handed back at the give-up ran on the other hub "
        f"within {taken_over:.2f}s (visibility_timeout: {VISIBILITY:.0f}s)"
    )


async def test_an_ordered_group_cooling_down_hands_its_partitions_over_at_once(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout={VISIBILITY}&block=0.2"
    give_ups = GiveUps()
    hubs = {name: ActionHub(url, name=name, on_escalation=give_ups) for name in ("broken", "working")}
    order: dict[str, list[int]] = {}

    async def fail(job: Job) -> None:
        raise ConnectionError("the store is unreachable from this host")

    async def work(job: Job) -> None:
        order.setdefault(job.key or "", []).append(job.payload)

    options = {"ordered": True, "partitions": 8, "max_restarts": 0, "cool_down": Backoff(600, 600, 0)}
    hubs["broken"].bind("orders", fail, **options)
    hubs["working"].bind("orders", work, **options)

    def owned(name: str) -> int:
        stats = hubs[name].stats()
        return stats[0].partitions_owned if stats else 0

    async with hubs["working"].running(), hubs["broken"].running():
        await wait_until(lambda: owned("broken") > 0 and owned("working") > 0, timeout=20)
        keys = [f"k{n}" for n in range(16)]
        for seq in range(10):
            await hubs["working"].publish_many("orders", [seq] * len(keys), keys=keys)
        await wait_until(lambda: bool(give_ups.seen), timeout=20)
        with trio.fail_after(VISIBILITY / 2):  # the leases were released, not left to lapse
            await wait_until(lambda: owned("working") == 8)
            await wait_until(lambda: sum(len(seqs) for seqs in order.values()) == 160, timeout=VISIBILITY)
    assert order == {key: list(range(10)) for key in keys}  # every key in order, each message once


async def test_a_lone_hub_back_from_its_cool_down_runs_what_it_handed_back(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout={VISIBILITY}&block=0.2"
    give_ups = GiveUps()
    hub = ActionHub(url, on_escalation=give_ups)
    broken = True
    done: set[int] = set()

    async def save(job: Job) -> None:
        if broken:
            raise ConnectionError("the store is unreachable")
        done.add(job.payload)

    hub.bind("save", save, max_workers=1, max_restarts=1, cool_down=Backoff(1, 1, 0))
    async with hub.running():
        await hub.publish_many("save", list(range(50)))
        await wait_until(lambda: bool(give_ups.seen), timeout=20)
        broken = False
        with trio.fail_after(VISIBILITY / 2):  # not left to the visibility timeout either
            await wait_until(lambda: done == set(range(50)))
        assert hub.group("save").stats().state is GroupState.RUNNING
        assert await hub.dead_letters("save") == []


async def test_what_a_read_in_flight_brings_during_the_stand_down_goes_back_at_once(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout={VISIBILITY}&block=5"  # reads stay blocked in Redis for 5 s
    give_ups = GiveUps()
    hub = ActionHub(url, on_escalation=give_ups)
    slow_running = trio.Event()
    ran: dict[object, float] = {}

    async def action(job: Job) -> None:
        if job.payload == "slow":
            slow_running.set()
            await trio.sleep(3)  # the stand-down waits for it
        elif job.payload == "crash":
            raise ConnectionError("the store is unreachable")
        else:
            ran[job.payload] = trio.current_time()

    hub.bind("work", action, max_workers=2, max_restarts=0, cool_down=Backoff(1, 1, 0))
    async with hub.running():
        await hub.publish("work", "slow")
        await slow_running.wait()
        await hub.publish("work", "crash")
        await wait_until(lambda: hub.group("work").stats().state is GroupState.COOLING_DOWN, poll=0.01)
        await trio.sleep(0.3)  # the reader is blocked in XREADGROUP, the inbox closed meanwhile
        published = trio.current_time()
        await hub.publish_many("work", list(range(10)))  # what that read brings back
        with trio.fail_after(VISIBILITY / 2):  # given back, not left to the visibility timeout
            await wait_until(lambda: len(ran) == 10, poll=0.05)
        assert max(ran.values()) - published < VISIBILITY / 2


async def test_a_group_that_fails_itself_leaves_its_messages_to_the_other_hubs(redis_url: str) -> None:
    url = f"{redis_url}&visibility_timeout=4&block=0.2"
    failing, other = ActionHub(url, name="failing"), ActionHub(url, name="other")
    ran: set[object] = set()

    async def save(job: Job) -> None:
        ran.add(job.payload)

    failing.bind("save", save, max_workers=1, min_workers=0)
    other.bind("save", save)
    async with failing.running():
        group = failing.group("save")

        group.pool._worker_context = cannot_start  # type: ignore[method-assign]
        await failing.publish("save", "trigger")
        await wait_until(group.finished.is_set, timeout=10)
        await failing.publish_many("save", list(range(20)))  # the hub runs on; the group reads no more
        async with other.running():
            await wait_until(lambda: set(range(20)) <= ran, timeout=20)

"""job.checkpoint / job.progress: a long job resumes where its last delivery left off."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import redis
import trio

from actionhub import ActionHub, Job, MemoryBus, Retry
from actionhub.job import MAX_CHECKPOINT_BYTES
from tests.checkpoint_hub import STEPS, bind_long_job
from tests.polling import wait_until


async def test_a_retried_or_timed_out_job_finds_its_last_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    hub = ActionHub(bus)
    seen: list[tuple[int, object]] = []
    done = trio.Event()

    @hub.action("steps", max_workers=1, timeout=5, retry_backoff=(0.1, 0.1, 0))
    async def steps(job: Job) -> None:
        seen.append((job.attempt, job.progress))
        await job.checkpoint({"attempt": job.attempt})
        if job.attempt == 1:
            raise RuntimeError("crash after the checkpoint")
        if job.attempt == 2:
            await trio.sleep_forever()  # over the timeout
        if job.attempt == 3:
            raise Retry(0.1)
        done.set()

    async with hub.running():
        await hub.publish("steps", {"n": 1})
        await done.wait()
    # the stop let the last run finish: acked, its checkpoint cleared
    assert seen == [(1, None), (2, {"attempt": 1}), (3, {"attempt": 2}), (4, {"attempt": 3})]
    assert bus._progress == {}  # forgotten once the message was acked


async def test_a_dead_lettered_message_forgets_its_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    bus = MemoryBus()
    hub = ActionHub(bus)

    @hub.action("doomed", max_attempts=2, retry_backoff=(0.1, 0.1, 0))
    async def doomed(job: Job) -> None:
        await job.checkpoint(job.attempt)
        raise RuntimeError("always")

    async with hub.running():
        await hub.publish("doomed", None)
        await wait_until(lambda: hub.stats()[0].total_dead_lettered == 1)
        assert len(await hub.dead_letters("doomed")) == 1
    assert bus._progress == {}


async def test_checkpoints_are_small_json() -> None:
    hub = ActionHub()
    errors: list[BaseException] = []
    done = trio.Event()

    @hub.action("bad")
    async def bad(job: Job) -> None:
        for state in ({"a": object()}, "x" * MAX_CHECKPOINT_BYTES):
            try:
                await job.checkpoint(state)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        assert job.progress is None and not job.checkpointed
        done.set()

    async with hub.running():
        await hub.publish("bad", None)
        with trio.fail_after(5):
            await done.wait()
    assert [type(e) for e in errors] == [TypeError, ValueError]
    assert "must be JSON" in str(errors[0]) and "at most 65536 bytes" in str(errors[1])


async def test_a_killed_job_resumes_from_its_checkpoint_on_another_hub(redis_url: str) -> None:
    url = redis_url + "&visibility_timeout=2&block=0.5"
    command = [sys.executable, "-m", "tests.checkpoint_hub", url]
    async with trio.open_nursery() as nursery:
        doomed = await nursery.start(partial(trio.run_process, command, stdout=subprocess.PIPE, check=False))
        with trio.fail_after(30):
            assert doomed.stdout is not None
            assert (await doomed.stdout.receive_some(100)).strip() == b"ready"
            async with ActionHub(url, name="publisher").running() as publisher:
                await publisher.publish("long", {"job": 1})  # only the doomed hub consumes yet
            assert await doomed.wait() == -9  # it killed itself after step 5, mid-job
            hub = ActionHub(url, name="survivor")
            ran: list[int] = []
            bind_long_job(hub, ran, die_after=None)
            async with hub.running():
                await wait_until(lambda: ran[-1:] == [STEPS - 1])  # reclaimed past visibility_timeout
                await wait_until(lambda: hub.stats()[0].total_message_processed == 1)
    assert ran == [6, 7, 8, 9]  # steps 0-5 ran, and were checkpointed, in the killed hub
    prefix = url.split("prefix=")[1].split("&")[0]
    client = redis.Redis.from_url(url.split("?")[0])
    assert client.keys(f"{prefix}progress:*") == []  # forgotten once acked


def test_progress_ttl_is_a_url_option() -> None:
    from actionhub.bus.redis.options import split_url

    assert split_url("redis://h/0?progress_ttl=60")[1].progress_ttl == 60
    with pytest.raises(ValueError, match="progress_ttl must be a finite number > 0"):
        split_url("redis://h/0?progress_ttl=0")

"""A hub with a rate- or concurrency-limited group in a process of its own, for
tests/test_limits_redis.py.

    python -m tests.limited_hub URL NAME [--rate 50/s] [--concurrency N] [--max-workers N] [--work S]

Action ``limited`` (group ``limited``) records each run in Redis, under the URL's prefix: on
entry it pushes ``<Redis time in us> <hub> <payload> <attempt>`` to ``<prefix>test:runs`` and
counts the runs under way in ``<prefix>test:running`` (the most ever in ``<prefix>test:most``);
then it sleeps ``--work`` seconds and counts itself out. Prints ``ready`` once serving; SIGTERM
stops it gracefully.
"""

from __future__ import annotations

import argparse

import redis
import trio

from actionhub import ActionHub, Job
from actionhub.bus.redis.options import split_url
from tests.hub_process import serve_until_terminated

ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])) .. ' ' .. ARGV[1])
return n
"""


def run_keys(prefix: str) -> tuple[str, str, str]:
    """(running now, the most at once, the list of runs) under ``prefix``."""
    return f"{prefix}test:running", f"{prefix}test:most", f"{prefix}test:runs"


async def serve(args: argparse.Namespace) -> None:
    redis_url, options = split_url(args.url)
    client = redis.Redis.from_url(redis_url)
    running, most, runs = run_keys(options.prefix)
    enter = client.register_script(ENTER)
    hub = ActionHub(args.url, name=args.name)

    @hub.action(
        "limited",
        max_workers=args.max_workers,
        buffer=20,
        rate_limit=args.rate,
        concurrency_limit=args.concurrency,
    )
    async def limited(job: Job) -> None:
        # blocking calls, but a few hundred microseconds each: the test's bookkeeping
        enter(keys=[running, most, runs], args=[f"{args.name} {job.payload} {job.attempt}"])
        try:
            await trio.sleep(args.work)
        finally:
            client.decr(running)

    await serve_until_terminated(hub)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("--rate")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--work", type=float, default=0.0)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()

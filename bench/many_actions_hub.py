"""The hub process `bench.many_actions` measures: N no-op actions in one hub, until SIGTERM.

    python -m bench.many_actions_hub BUS_URL ACTIONS EXPECTED

Binds actions ``a0`` ... ``a<N-1>`` on topics ``t0`` ... ``t<N-1>`` (``max_workers=10``) and
writes JSON lines to stdout, each with a ``time.perf_counter()`` of this process where it has a
time:

* ``{"event": "ready", "startup": s, "pid": p}`` once ``async with hub.running()`` is entered,
  ``startup`` being the seconds since the hub began starting;
* ``{"event": "drained", "count": c, "first": t, "last": t}`` each time the actions together have
  run another EXPECTED messages: ``first`` when the first of them began, ``last`` when the last
  one ended;
* ``{"event": "stopped", "stop": s}`` after the graceful stop SIGTERM asks for.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import orjson
import trio

from actionhub import ActionHub, Job


def emit(event: str, **fields: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stdout.flush()


async def serve(url: str, actions: int, expected: int) -> None:
    hub = ActionHub(url)
    count = 0
    first = 0.0

    async def noop(job: Job) -> None:
        nonlocal count, first
        if count % expected == 0:
            first = time.perf_counter()
        count += 1
        if count % expected == 0:
            emit("drained", count=count, first=first, last=time.perf_counter())

    for i in range(actions):
        hub.bind(f"a{i}", noop, topic=f"t{i}", max_workers=10)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        started = time.perf_counter()
        async with hub.running():
            emit("ready", startup=time.perf_counter() - started, pid=os.getpid())
            async for _ in signals:
                break
            stopping = time.perf_counter()
    emit("stopped", stop=time.perf_counter() - stopping)


def main(argv: list[str]) -> None:
    url, actions, expected = argv
    trio.run(serve, url, int(actions), int(expected))


if __name__ == "__main__":
    main(sys.argv[1:])

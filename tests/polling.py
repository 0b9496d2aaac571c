"""Waiting for what another process or Redis does: it cannot be awaited, only observed."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_until(predicate: Callable[[], bool], timeout: float = 30, poll: float = 0.05) -> None:
    """Poll ``predicate`` every ``poll`` seconds; `trio.TooSlowError` after ``timeout``."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the state lives in another process or in Redis
            await trio.sleep(poll)

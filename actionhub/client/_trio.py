"""`TrioClient`: the trio flavour, for trio services that run no actions (no hub needed)."""

from __future__ import annotations

from functools import partial
from types import TracebackType
from typing import TypeVar

import trio

from ._awaited import AwaitedMethods
from ._ops import Op
from ._sync import DEFAULT_URL, Client

T = TypeVar("T")


class TrioClient(AwaitedMethods):
    """`Client`'s methods, awaited, under trio: each call runs a blocking `Client` operation in a
    worker thread (one hop per call, as the hub's own thread path does). ``async with``."""

    def __init__(self, url: str = DEFAULT_URL, *, threads: int = 16) -> None:
        self.url = url
        self._client = Client(url)
        self._ops = self._client._ops
        self._threads = trio.CapacityLimiter(threads)

    async def __aenter__(self) -> TrioClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._client.close)

    async def _run(self, op: Op[T], what: str) -> T:
        return await trio.to_thread.run_sync(
            partial(self._client._run, op, what), abandon_on_cancel=True, limiter=self._threads
        )

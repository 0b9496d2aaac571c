"""Stopgap while the publish side of docs/design/cluster.md step 5 is not merged: in the cluster
layout the hub's mover of delayed messages (`RedisBusBase._move_due`, common.py) still asks for
the one delayed set of the single layout, which `ClusterKeys` refuses, and takes the hub down.
Tests of the consuming side on the cluster layout park it instead. Remove with the merge."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import trio

from actionhub.bus.redis.common import RedisBusBase
from actionhub.bus.redis.layout import ClusterKeys

_original: Callable[[RedisBusBase], Coroutine[Any, Any, None]] = RedisBusBase._move_due


async def _move_due(self: RedisBusBase) -> None:
    if isinstance(self.keys, ClusterKeys):
        await trio.sleep_forever()
    await _original(self)


def install() -> None:
    """Park the mover of delayed messages of buses in the cluster layout (this process)."""
    RedisBusBase._move_due = _move_due  # type: ignore[method-assign]

"""Faults the tests inject into a group itself (not into its action)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def cannot_start() -> AsyncIterator[None]:
    """A worker context that fails on entry, as a worker process that cannot be forked does."""
    raise OSError(24, "Too many open files")
    yield

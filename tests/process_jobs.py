"""Functions the process-isolation tests run in worker processes (importable by name, light)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def pid(_: Any) -> int:
    return os.getpid()


def burn(payload: dict[str, Any]) -> int:
    """Busy CPU for ``payload["seconds"]``; how many loops it ran."""
    deadline = time.perf_counter() + payload["seconds"]
    loops = 0
    while time.perf_counter() < deadline:
        loops += 1
    return loops


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def cpu_job(payload: dict[str, Any]) -> int:
    """The benchmark's CPU-bound job: a pure-Python recursion of fixed size."""
    return fib(payload["n"])


def crash(payload: dict[str, Any]) -> None:
    how = payload["how"]
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit":
        os._exit(3)
    elif how == "memory":
        hog = bytearray(2 << 30)  # 2 GiB: past any memory_limit the tests set
        hog[-1] = 1
    time.sleep(30)  # not reached


def sleep(payload: dict[str, Any]) -> float:
    time.sleep(payload["seconds"])
    return payload["seconds"]


def fail(payload: dict[str, Any]) -> None:
    raise ValueError(f"bad input {payload!r}")


_leaked: list[bytes] = []


def hog(payload: dict[str, Any]) -> int:
    """Leak ``payload["mb"]`` MiB (kept for the process's life); this process's pid."""
    _leaked.append(b"x" * (payload["mb"] << 20))
    return os.getpid()

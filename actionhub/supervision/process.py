"""Actions in OS processes of their own (``isolation="process"``).

Each worker of such a group owns one worker process (a trio-parallel worker context of size one),
started with the worker and shut down with it: the group's scaling, restarts and restart limit
apply to processes unchanged. A process that dies (signal, ``os._exit``, memory limit) makes its
job raise `WorkerProcessDied`, a panic of that worker; the worker is replaced, and with it the
process. A job cancelled (its ``timeout``, or a stop past ``shutdown_timeout``) kills the process.
A process is recycled after ``max_jobs_per_process`` jobs or after a job that leaves its RSS
past ``max_memory_per_process`` (the leak case). Payload and result cross as JSON bytes: nothing
user-defined is pickled, only the function, by reference.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import math
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
import trio_parallel

from ..errors import ConfigurationError, ProcessActionError, Reject, Retry, WorkerProcessDied

if TYPE_CHECKING:
    from ..job import Job
    from .policy import GroupConfig

#: seconds an idle process gets to exit when its worker stops, before it is killed
_EXIT_GRACE = 5.0


def check_process_function(fn: object) -> None:
    """``isolation="process"`` runs plain functions importable by name in another process."""
    if not callable(fn) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(f"isolation='process' needs a plain (sync) function, not {fn!r}")
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    try:
        found: Any = importlib.import_module(module) if module else None
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not fn:
        raise ConfigurationError(
            f"isolation='process' needs a module-level function that a new process can import "
            f"by name; {module}.{qualname} is not one"
        )


@attrs.frozen
class _Limits:
    max_jobs: int | None
    max_memory: int | None
    memory_limit: int | None


# ---------------------------------------------------------------------- in the worker process

_jobs_done = 0
_retiring = False


def _child_init(memory_limit: int | None) -> None:
    global _jobs_done, _retiring
    _jobs_done, _retiring = 0, False
    if memory_limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    # An idle process sees its hub die (its pipe closes); a busy one would finish its job first:
    # this watch ends it within a second of a SIGKILLed hub. (PR_SET_PDEATHSIG would fire when
    # the short-lived thread that spawned the process exits, not the hub.)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(70)  # EX_SOFTWARE: nobody is left to read the result


def _child_retire() -> bool:
    return _retiring


def _child_ping() -> int:
    return os.getpid()


def _child_run(fn: Callable[[Any], Any], payload: bytes, limits: _Limits) -> tuple[str, bytes, bool]:
    """Run one job: (kind, JSON or text, whether this process retires after it); kind is "ok"
    (the result), "retry" (the delay), "reject" (the reason), "error" or "memory" (what happened)."""
    global _jobs_done, _retiring
    _jobs_done += 1
    outcome: tuple[str, bytes]
    try:
        outcome = ("ok", orjson.dumps(fn(orjson.loads(payload))))
    except Retry as retry:
        outcome = ("retry", orjson.dumps(retry.delay))
    except Reject as reject:
        outcome = ("reject", orjson.dumps(reject.reason))
    except MemoryError:
        _retiring = True  # the heap may be in any state: never run another job here
        return "memory", f"MemoryError past memory_limit={limits.memory_limit} bytes".encode(), True
    except Exception as exc:
        outcome = ("error", "".join(traceback.format_exception(exc)).encode())
    _retiring = (limits.max_jobs is not None and _jobs_done >= limits.max_jobs) or (
        limits.max_memory is not None and _resident_bytes() > limits.max_memory
    )
    return outcome[0], outcome[1], _retiring


def _resident_bytes() -> int:
    """This process's resident memory now. (Not ru_maxrss: on Linux a spawned process inherits
    the peak of the process it was forked from, here the hub.)"""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------------- in the hub


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "vanished (exit status unknown)"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Slot:
    """One worker's process."""

    def __init__(self, context: trio_parallel.WorkerContext) -> None:
        self.context = context
        self.limiter = trio.CapacityLimiter(1)
        self.pid: int | None = None  # None: no process running for this worker


_current_slot: contextvars.ContextVar[_Slot] = contextvars.ContextVar("actionhub_process_slot")


class ProcessPool:
    """The processes of one group: `worker` is entered by each worker task, `run` is its action."""

    def __init__(self, group: str, fn: Callable[[Any], Any], config: GroupConfig) -> None:
        check_process_function(fn)
        self.group = group
        self.fn = fn
        self._limits = _Limits(
            config.max_jobs_per_process, config.max_memory_per_process, config.memory_limit
        )
        self.alive = 0
        self.started = 0
        self.died = 0
        self.killed = 0
        self.recycled = 0

    def stats(self) -> dict[str, int]:
        """The process fields of `WorkerStat`."""
        return {
            "processes_alive": self.alive,
            "total_processes_started": self.started,
            "total_process_deaths": self.died,
            "total_process_kills": self.killed,
            "total_process_recycles": self.recycled,
        }

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """A process for the calling worker task while the block runs (started at once)."""
        async with trio_parallel.open_worker_context(
            idle_timeout=math.inf,
            init=functools.partial(_child_init, self._limits.memory_limit),
            retire=_child_retire,
            grace_period=_EXIT_GRACE,
        ) as context:
            slot = _Slot(context)
            token = _current_slot.set(slot)
            try:
                await self._start(slot)
                yield
            finally:
                _current_slot.reset(token)
                self._gone(slot)

    async def run(self, job: Job) -> object:
        """The group's action: run the function on the payload in this worker's process; reply
        with its result if the message asks for one."""
        slot = _current_slot.get()
        if slot.pid is None:
            await self._start(slot)
        payload = orjson.dumps(job.payload)
        try:
            kind, data, retiring = await slot.context.run_sync(
                _child_run, self.fn, payload, self._limits, kill_on_cancel=True, limiter=slot.limiter
            )
        except trio_parallel.BrokenWorkerError as error:
            process = error.args[-1] if error.args else None
            exitcode = getattr(process, "exitcode", None)
            pid = slot.pid
            self._gone(slot)
            self.died += 1
            raise WorkerProcessDied(
                f"worker process {pid} of {self.group!r} {describe_exit(exitcode)}", exitcode
            ) from None
        except trio.Cancelled:
            if slot.pid is not None:  # a job was running: trio-parallel killed its process
                self._gone(slot)
                self.killed += 1
            raise
        if retiring:
            self._gone(slot)
            if kind != "memory":
                self.recycled += 1
        if kind == "memory":
            self.died += 1
            raise WorkerProcessDied(f"worker process of {self.group!r} ran out of memory: {data.decode()}")
        if kind == "retry":
            raise Retry(orjson.loads(data))
        if kind == "reject":
            raise Reject(orjson.loads(data))
        if kind == "error":
            raise ProcessActionError(data.decode())
        value = orjson.loads(data)
        await job.reply(value)
        return value  # kept as the message's result by a group with keep_result

    async def _start(self, slot: _Slot) -> None:
        try:
            slot.pid = await slot.context.run_sync(_child_ping, limiter=slot.limiter, kill_on_cancel=True)
        except (trio_parallel.BrokenWorkerError, OSError) as error:
            raise WorkerProcessDied(
                f"a worker process of {self.group!r} could not start: {error!r}"
            ) from error
        self.alive += 1
        self.started += 1

    def _gone(self, slot: _Slot) -> None:
        if slot.pid is not None:
            slot.pid = None
            self.alive -= 1

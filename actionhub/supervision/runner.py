"""MessageRunner: runs the action on one delivery and settles the message's fate.

Message fate is separate from worker fate: whatever the action does, the message ends acked,
scheduled for a retry (with backoff), or dead-lettered, here; what becomes of the worker that ran
it is the supervisor's business (`actionhub.supervision.group`), told through the `Panic` returned.
"""

from __future__ import annotations

import logging
import random
import time
import traceback as tb_module
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import orjson
import trio

from .. import tracing
from ..bus.base import Delivery, Subscription
from ..errors import Reject, Retry
from ..job import Job
from ..message import Message
from ..payloads import Codec, InvalidPayload
from .inbox import GroupInbox
from .keeper import ResultKeeper
from .limits import Gate
from .policy import GroupConfig

if TYPE_CHECKING:
    from ..hub import ActionHub

log = logging.getLogger("actionhub.group")

Action = Callable[[Job[Any]], Awaitable[object]]

#: How a run of the action ended, as a `MessageObserver` sees it: it returned (``ok``), raised
#: `Retry` (``retry``), `Reject` (``rejected``, dead-lettered), any other exception (``panic``:
#: retried, or dead-lettered after ``max_attempts``), ran over ``timeout`` (``timeout``, a panic
#: too), or was cancelled mid-run (``cancelled``: shutdown_timeout passed, a restart-all, a kill).
Outcome = Literal["ok", "retry", "rejected", "panic", "timeout", "cancelled"]


class MessageObserver(Protocol):
    """Told about every run of an action, in every group of a hub (its slaves and the groups it
    creates later too): set ``hub.observer`` (`actionhub.metrics.HubMetrics` does). Called
    synchronously in the worker's task, so it must be quick; what it raises is logged, no more."""

    def observe(self, group: str, queue_wait: float, duration: float, outcome: Outcome) -> None:
        """``queue_wait``: wall-clock seconds from publish (``Message.created_at``, kept across
        retries and delays) to the start of this run, never negative; ``duration``: the action's
        own run in trio seconds, settling the message excluded; ``outcome``: how the run ended."""


@attrs.frozen
class Panic:
    """The action raised (or its worker could not start): what the supervisor is told."""

    error: BaseException
    traceback: str
    message: Message | None  # None: the worker failed before taking a message (its process)


class MessageRunner:
    """Runs one group's action and settles each message; keeps the message-fate counters.

    ``later(delay, fn)`` calls ``fn`` after ``delay`` unless the group's workers are stopped
    first (an ordered group's retries held in place); ``lane_freed()`` is told when a key's
    lane opens, as a message of that key may be waiting."""

    def __init__(
        self,
        *,
        name: str,
        action: Action,
        hub: ActionHub,
        config: GroupConfig,
        inbox: GroupInbox,
        rng: random.Random,
        later: Callable[[float, Callable[[], None]], None],
        lane_freed: Callable[[], None],
        codec: Codec | None = None,
    ) -> None:
        self.name = name
        self.action = action
        self.hub = hub
        self.config = config
        self._inbox = inbox
        self._rng = rng
        self._later = later
        self._lane_freed = lane_freed
        self._codec = codec  # a typed action's payload type
        self._ordered = config.ordered
        self._holding: set[Delivery] = set()  # ordered: deliveries waiting for their retry, in place
        #: status writes of a group that keeps results; None (nothing per message) for the others
        self.keeper = None if config.keep_result is None else ResultKeeper(hub.bus, config.keep_result)
        self.processed = 0
        self.panics = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.rejected = 0
        self.timeouts = 0
        self.in_flight = 0
        self.gate: Gate | None = None  # the group's rate and concurrency limits, if it has any

    def stop_waiting(self) -> None:
        """The workers stop, or the group is paused: runs waiting for a limit give their
        deliveries back, unstarted."""
        if self.gate is not None:
            self.gate.stop_waiting()

    async def handle(self, delivery: Delivery) -> Panic | None:
        """Run the action on one delivery and settle the message; say if the action panicked.
        Ordered, the key's lane is freed once the message is settled; a run cancelled midway
        (a restart, a kill) runs again before the key's later messages. With limits, the run
        waits here for them first; a wait that ends early puts the delivery back unstarted."""
        gate = self.gate
        if gate is not None and not gate.try_enter() and not await self._wait_at(gate, delivery):
            return None
        trace = tracing.start_process(delivery.message, delivery.subscription.group, self.name)
        try:
            key = delivery.message.key
            if key is None or not self._ordered:
                return await self._run(delivery, trace)
            return await self._run_in_lane(delivery, key, trace)
        finally:
            if gate is not None:
                gate.leave()
            if trace is not None:
                trace.end()

    async def _wait_at(self, gate: Gate, delivery: Delivery) -> bool:
        """Wait for the group's limits; False if the wait ended early (the workers stop)."""
        entered = False
        try:
            entered = await gate.enter()
        finally:  # cancelled while waiting too: not started, the same attempt next time
            if not entered:
                self._inbox.put_back(delivery)
        return entered

    async def _run_in_lane(
        self, delivery: Delivery, key: str, trace: tracing.Processing | None
    ) -> Panic | None:
        settled = False
        try:
            panic = await self._run(delivery, trace)
            settled = True
            return panic
        finally:
            if delivery not in self._holding:
                if settled:
                    self._inbox.free_lane(key)
                    self._lane_freed()
                else:
                    self._run_again_first(delivery)

    def release_held(self) -> None:
        """Put every retry held in place back at the front of the inbox, due now (its timer is
        gone: the workers stopped for a cool-down)."""
        for delivery in list(self._holding):
            self._run_again_first(delivery)

    def _run_again_first(self, delivery: Delivery) -> None:
        self._holding.discard(delivery)
        self._inbox.run_again_first(delivery)
        self._lane_freed()

    def _hold_for_retry(self, delivery: Delivery, delay: float) -> None:
        """Ordered: retry ``delivery`` here after ``delay``, its key kept busy meanwhile (a retry
        through the bus would let the key's next messages overtake it)."""
        self._holding.add(delivery)
        self._later(delay, lambda: self._run_again_first(delivery))

    async def _run(self, delivery: Delivery, trace: tracing.Processing | None) -> Panic | None:
        """Run the action once on ``delivery`` and settle it, telling ``trace`` (the run's span,
        when tracing is on) how it went."""
        message = delivery.message
        subscription = delivery.subscription
        config = self.config
        if message.attempt > config.max_attempts:  # redelivered after crashes: a crash loop ends here
            self.dead_lettered += 1
            reason = (
                f"max_attempts: delivered {message.attempt} times, over {config.max_attempts}, "
                "without finishing"
            )
            if trace is not None:
                trace.dead_letter(reason, "dead_lettered")
            if self.keeper is not None:
                await self.keeper.dead(delivery, reason)
            await subscription.dead_letter(delivery, reason=reason)
            return None
        typed = None
        if self._codec is not None:
            try:
                typed = self._codec.decode(message.payload)
            except InvalidPayload as invalid:  # malformed for this action: never run, never retried
                self._inbox.note_malformed()
                reason = f"malformed: invalid payload: {invalid}"
                if trace is not None:
                    trace.dead_letter(reason, "malformed")
                if self.keeper is not None:
                    await self.keeper.dead(delivery, reason)
                await subscription.dead_letter(delivery, reason=reason)
                return None
        progress = None
        if message.attempt > 1:  # delivered before: an earlier run may have checkpointed
            saved = await subscription.load_progress(message.id)
            progress = None if saved is None else orjson.loads(saved)
        job = Job(
            message,
            self.name,
            self.hub,
            subscription=subscription,
            progress=progress,
            payload=typed,
            typed=self._codec is not None,
        )
        keeper = self.keeper
        if keeper is not None:
            await keeper.running(delivery)
        done = b""  # the done record, when results are kept
        self.in_flight += 1
        observer = self.hub.observer  # read per message: set or cleared at any time, for every group
        if observer is not None:
            queue_wait = max(0.0, time.time() - message.created_at)  # another host's clock may be ahead
            started = trio.current_time()
            duration = 0.0
        outcome: Outcome = "cancelled"
        try:
            try:
                if trace is not None:
                    trace.activate()  # replies, publishes and spans of the action are its children
                if config.timeout is None:
                    value = await self.action(job)
                else:
                    with trio.fail_after(config.timeout):
                        value = await self.action(job)
                if keeper is not None:  # a value that is not JSON fails the run, as a raise would
                    done = keeper.done_record(delivery, value)
            finally:  # the action's own time: settling the message (an ack on Redis) is not in it
                if trace is not None:
                    trace.deactivate()
                if observer is not None:
                    duration = trio.current_time() - started
        except Retry as retry:
            outcome = "retry"
            await self._retry_or_dead_letter(job, delivery, "retry requested", retry.delay, None, trace)
            return None
        except Reject as reject:
            outcome = "rejected"
            self.rejected += 1
            self.dead_lettered += 1
            reason = f"rejected: {reject.reason}"
            if trace is not None:
                trace.dead_letter(reason)
            if keeper is not None:
                await keeper.dead(delivery, reason)
            await subscription.dead_letter(delivery, reason=reason)
            await self._forget_progress(job, subscription)
            return None
        except Exception as error:  # a panic; Cancelled, KeyboardInterrupt, SystemExit never are
            self.panics += 1
            self.failed += 1
            outcome = "panic"
            if isinstance(error, trio.TooSlowError):
                outcome = "timeout"
                self.timeouts += 1
                error = TimeoutError(f"action {self.name!r} ran over its timeout of {config.timeout}s")
                if trace is not None:
                    trace.timeout(config.timeout or 0.0)
            if trace is not None:
                trace.panic(error)
            traceback = "".join(tb_module.format_exception(error))
            await self._retry_or_dead_letter(job, delivery, repr(error), None, traceback, trace)
            return Panic(error, traceback, message)
        else:
            outcome = "ok"
            self.processed += 1
            if keeper is not None:  # before the ack: a crash between leaves a result and a redelivery
                await keeper.done(delivery, done)
            await subscription.ack(delivery)
            await self._forget_progress(job, subscription)
            return None
        finally:
            self.in_flight -= 1
            if trace is not None:
                trace.outcome(outcome)
            if observer is not None:
                try:
                    observer.observe(self.name, queue_wait, duration, outcome)
                except Exception:  # a broken observer must not take the workers down with it
                    log.exception("group %s: message observer %r failed", self.name, observer)

    async def _retry_or_dead_letter(
        self,
        job: Job,
        delivery: Delivery,
        error: str,
        delay: float | None,
        traceback: str | None,
        trace: tracing.Processing | None,
    ) -> None:
        attempt = delivery.message.attempt
        if attempt >= self.config.max_attempts:
            self.dead_lettered += 1
            reason = f"max_attempts: failed {attempt} of {self.config.max_attempts} attempts"
            if trace is not None:
                trace.dead_letter(reason)
            if self.keeper is not None:
                await self.keeper.dead(delivery, reason, error)
            await delivery.subscription.dead_letter(delivery, reason=reason, error=error, traceback=traceback)
            await self._forget_progress(job, delivery.subscription)
            return
        self.retried += 1
        if delay is None:
            delay = self.config.retry_backoff.delay(attempt, self._rng)
        if trace is not None:
            trace.retry(delay, attempt + 1)
        if self.keeper is not None:
            await self.keeper.retrying(delivery, delay)
        if self._ordered and delivery.message.key is not None:
            self._hold_for_retry(delivery, delay)
        else:
            await delivery.subscription.retry(delivery, delay=delay, error=error)

    @staticmethod
    async def _forget_progress(job: Job, subscription: Subscription) -> None:
        """A settled message's checkpoint is of no more use (a requeued dead letter starts over)."""
        if job.progress is not None:
            await subscription.clear_progress(job.message.id)

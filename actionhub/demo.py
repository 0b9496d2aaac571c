"""The actionhub demo: three supervised actions on the in-process ``memory://`` bus.

Run it with ``actionhub demo`` (``--bus redis://...`` runs it on Redis, under a key prefix of its
own). In about five seconds it shows, as it happens:

* ``resize``  a burst of 80 messages makes the group scale UP to ``max_workers``; once the work
  is done and the extra workers have been idle for ``max_idleness`` they exit and the group is
  back DOWN to ``min_workers``.
* ``charge``  a flaky action: some orders raise on their first attempt. Each such panic gets the
  worker replaced (``Behaviour.RESTART_ONE``) and the message retried with backoff, where it
  succeeds. One order is refused with ``Reject``: dead-lettered at once, not a panic.
* ``notify``  its SMTP server is down for the first second: every message raises. After
  ``max_restarts`` restarts the group gives up: an ESCALATION with ``reason="max_restarts"``
  reaches the alert callback, and the group COOLS DOWN (no workers, nothing started) instead of
  leaving the hub. It comes back by itself; the server is up by then, and every notification,
  the ones that panicked included (retried), is sent. The other groups keep running throughout.

At the end it prints every group's `WorkerStat` counters and the dead letters.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from . import (
    ActionHub,
    Backoff,
    Behaviour,
    Escalation,
    EscalationProtocol,
    Job,
    Reject,
    WorkerStat,
)
from .inspect import redact

if TYPE_CHECKING:
    from .supervision.group import WorkerGroup

RESIZE_JOBS = 80  # the burst
ORDERS = [{"id": i, "card": "expired" if i == 6 else "visa"} for i in range(1, 13)]
NOTIFICATIONS = 5
SMTP_DOWN_FOR = 1.0  # seconds: notify fails until then
SAMPLE_EVERY = 0.5  # seconds between two "workers over time" lines

_start = 0.0


def say(line: str) -> None:
    """Print ``line`` prefixed with the seconds since the demo started."""
    print(f"{trio.current_time() - _start:5.1f}s  {line}", flush=True)


# --------------------------------------------------------------------------- the actions


def build_hub(on_escalation: Alerts, bus: str = "memory://") -> ActionHub:
    """A hub on ``bus`` with the demo's three actions bound to it."""
    hub = ActionHub(bus, on_escalation=on_escalation, name="demo")

    # Scales between 1 and 8 workers; a worker above the minimum exits after 1.5 s without work.
    @hub.action("resize", min_workers=1, max_workers=8, max_idleness=1.5)
    async def resize(job: Job) -> None:
        await trio.sleep(0.25)  # pretend to resize an image

    # A panic (any exception) replaces the worker and retries the message after a backoff.
    @hub.action(
        "charge",
        max_workers=3,
        behaviour=Behaviour.RESTART_ONE,
        max_attempts=3,
        retry_backoff=Backoff(min=0.3, max=2.0),
    )
    async def charge(job: Job) -> None:
        order = job.payload
        await trio.sleep(0.1)
        if order["card"] == "expired":
            raise Reject("card expired")  # can never succeed: dead-letter now, not a panic
        if order["id"] % 4 == 3 and job.attempt == 1:
            raise ConnectionError("payment gateway timed out")  # flaky: fine on the retry
        await job.reply({"charged": order["id"]})  # a no-op unless the sender used hub.request

    # Fails while its server is down. The third restart within 10 s is one too many: the group
    # escalates and cools down for 1.5 s, then starts again (on_max_restarts="cool_down").
    smtp_down_until = trio.current_time() + SMTP_DOWN_FOR

    @hub.action(
        "notify",
        max_workers=1,
        max_restarts=2,
        restart_window=10.0,
        retry_backoff=Backoff(min=0.5, max=2.0, jitter=0),
        cool_down=Backoff(min=1.5, max=30.0, jitter=0),
    )
    async def notify(job: Job) -> None:
        await trio.sleep(0.2)
        if trio.current_time() < smtp_down_until:
            raise OSError("SMTP server unreachable")

    return hub


# --------------------------------------------------------------------------- alerting


class Alerts:
    """The hub's ``on_escalation`` callback: prints each escalation and keeps it."""

    def __init__(self) -> None:
        self.seen: list[Escalation] = []

    def __call__(self, e: Escalation) -> None:
        self.seen.append(e)
        if e.worker_protocol is EscalationProtocol.RESTART:  # a panic, reported; the group handled it
            say(f"RESTART     {e.group}: worker panicked with {e.error!r}; replaced (restarts={e.restarts})")
        else:  # the group gave up: this is what would page someone
            say(f"ESCALATION  {e.group}: reason={e.reason}, restarts={e.restarts}, error={e.error!r}")
            if e.cool_down_until is not None:
                say(
                    f"            the group cools down for {e.cool_down_until - time.time():.1f}s, then "
                    "starts again; what it had not started waits for it"
                )
            else:
                say(f"            the group stopped and left the hub ({len(e.pending_messages)} unstarted)")

    def reasons(self) -> list[str]:
        return [e.reason for e in self.seen]


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Summary:
    """What the demo showed; returned by `main` so that a test can check it."""

    worker_samples: list[int]  # resize's total_current_workers, every SAMPLE_EVERY seconds
    min_workers: int
    max_workers: int
    escalations: list[Escalation]  # every escalation the callback received, panics included
    stats: list[WorkerStat]  # the last snapshot of every group, taken just before the stop
    dead_letters: int
    seconds: float


def sample(group: WorkerGroup, samples: list[int]) -> None:
    """Print (and record) the group's current number of workers."""
    stat = group.stats()
    samples.append(stat.total_current_workers)
    say(
        f"{stat.addr}  workers {stat.total_current_workers:>2} {'#' * stat.total_current_workers:<8}"
        f"  buffered {stat.buffered:>2}  processed {stat.total_message_processed:>2}"
    )


async def main(bus: str = "memory://") -> Summary:
    global _start
    _start = trio.current_time()
    alerts = Alerts()
    hub = build_hub(alerts, bus)
    say(f"hub {hub.name} on {redact(hub.bus.url)}")

    async with hub.running():  # starts every group; leaving the block stops them gracefully
        groups = {name: hub.group(name) for name in ("resize", "charge", "notify")}
        resize, charge = groups["resize"], groups["charge"]

        answer = await hub.request("charge", {"id": 0, "card": "visa"}, timeout=5)
        say(f"request/reply: charge answered {answer.payload}")

        samples: list[int] = []
        sample(resize, samples)
        say(f"burst: {RESIZE_JOBS} x resize, {len(ORDERS)} x charge, {NOTIFICATIONS} x notify")
        for i in range(RESIZE_JOBS):
            await hub.publish("resize", {"image": i})
        for order in ORDERS:
            await hub.publish("charge", order)
        for i in range(NOTIFICATIONS):
            await hub.publish("notify", {"to": f"user{i}@example.com"})

        def settled() -> bool:
            r, c, n = resize.stats(), charge.stats(), groups["notify"].stats()
            return (
                r.total_message_processed == RESIZE_JOBS
                and r.total_current_workers == r.min_workers
                and c.total_message_processed + c.total_dead_lettered == len(ORDERS) + 1
                and n.total_message_processed == NOTIFICATIONS
            )

        with trio.fail_after(30):  # a demo must never hang
            while True:
                sample(resize, samples)
                if settled():
                    break
                await trio.sleep(SAMPLE_EVERY)

        stat = resize.stats()
        say(f"resize is back to min_workers={stat.min_workers} (peak: {max(samples)} workers)")
        letters = [letter for name in groups for letter in await hub.dead_letters(name)]
        for name in groups:  # leave nothing behind on a shared bus
            await hub.purge_dead_letters(name)
        stats = [group.stats() for group in groups.values()]  # before the stop empties the pools

    print()
    print(format_table(stats))
    print()
    print(f"dead letters: {len(letters)}")
    for letter in letters:
        print(f"  {letter.message.topic:<7} {letter.message.payload}  {letter.reason}")
    seconds = trio.current_time() - _start
    print(f"\ndone in {seconds:.1f}s")
    return Summary(
        worker_samples=samples,
        min_workers=stat.min_workers,
        max_workers=stat.max_workers,
        escalations=alerts.seen,
        stats=stats,
        dead_letters=len(letters),
        seconds=seconds,
    )


COLUMNS: list[tuple[str, Callable[[WorkerStat], object]]] = [
    ("group", lambda s: s.addr),
    (
        "workers now/created/idled",
        lambda s: f"{s.total_current_workers}/{s.total_created_workers}/{s.total_idled_workers}",
    ),
    ("received", lambda s: s.total_message_received),
    ("processed", lambda s: s.total_message_processed),
    ("panics", lambda s: s.total_panics),
    ("restarts", lambda s: s.total_restarts),
    ("retried", lambda s: s.total_retried),
    ("dead-lettered", lambda s: s.total_dead_lettered),
    ("escalations", lambda s: s.total_escalations),
]


def format_table(stats: list[WorkerStat]) -> str:
    """The stats as an aligned text table, one row per group."""
    rows = [[title for title, _ in COLUMNS]] + [[str(cell(s)) for _, cell in COLUMNS] for s in stats]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

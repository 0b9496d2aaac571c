"""The commands that talk to live hubs: ``publish``, ``stats``, the controls, ``dead-letters``,
``replay``."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial

import attrs
import orjson
import trio
from rich.live import Live
from rich.table import Table

from .. import tracing
from ..bus.base import DeadLetter
from ..bus.dedupe import MessageIds, check_dedupe
from ..client import TrioClient
from ..inspect import HubSnapshot, redact
from ..message import JSON, Message
from ..stats import WorkerStat
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    _client,
    _connected,
    _console,
    _print_table,
    _topic,
    _when,
    _within,
)

# --------------------------------------------------------------------------- publish


def _payload(text: str) -> JSON:
    if text == "-":
        text = sys.stdin.read()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CliError(f"invalid JSON payload: {error}") from None


def _header(item: str) -> tuple[str, str]:
    key, equals, value = item.partition("=")
    if not equals or not key:
        raise CliError(f"bad --header {item!r}: expected KEY=VALUE")
    return key, value


async def _publish(args: argparse.Namespace) -> int:
    topic = _topic(args.topic)
    payload = _payload(args.payload)
    headers = dict(_header(item) for item in args.header)
    if args.delay is not None and args.delay < 0:
        raise CliError("--delay must be >= 0")
    check_dedupe(args.dedupe_key, args.dedupe_for)  # misuse fails before connecting
    if args.wait_reply is None:
        async with _client(args) as client:
            published = client.publish(
                topic, payload, headers=headers, delay=args.delay, dedupe_key=args.dedupe_key,
                dedupe_for=args.dedupe_for, durable=args.durable,
            )  # fmt: skip
            print(await _within(args.timeout, published))
            return EXIT_OK
    if args.dedupe_key is not None:
        raise CliError(
            "--dedupe-key cannot go with --wait-reply: a duplicate is not published, so no reply comes"
        )
    message = Message(topic, payload, id=MessageIds()(), headers=headers)  # a counted id: idempotent
    # the id first, then the reply: through the bus and its reply channel
    async with _connected(args) as bus, bus.reply_channel() as channel:
        message = attrs.evolve(message, reply_to=channel.address)
        send = partial(bus.publish, delay=args.delay, durable=args.durable)
        published = tracing.publishing(message, send, delay=args.delay)
        print(await _within(args.timeout, published), flush=True)
        with trio.move_on_after(args.wait_reply):
            reply = await channel.receive()
            print(orjson.dumps(reply.payload).decode())
            return EXIT_OK
    raise CliError(f"no reply within {args.wait_reply}s", EXIT_FAILED)


# --------------------------------------------------------------------------- stats


def _state(stat: WorkerStat) -> str:
    if stat.cool_down_until is None:
        return stat.state.value
    return f"{stat.state.value} ({max(0.0, stat.cool_down_until - time.time()):.0f}s)"


def _limits(stat: WorkerStat) -> str:
    limits = [stat.rate_limit] if stat.rate_limit is not None else []
    if stat.concurrency_limit is not None:
        limits.append(f"{stat.concurrency_limit} at once")
    return f"{', '.join(limits)} ({stat.total_throttled} throttled)" if limits else "-"


_STAT_COLUMNS: list[tuple[str, Callable[[WorkerStat], object]]] = [
    ("group", lambda s: s.addr),
    ("state", _state),
    ("workers", lambda s: f"{s.total_current_workers} ({s.min_workers}..{s.max_workers})"),
    ("busy", lambda s: s.in_flight),
    ("buffered", lambda s: s.buffered),
    ("received", lambda s: s.total_message_received),
    ("processed", lambda s: s.total_message_processed),
    ("failed", lambda s: s.total_failed),
    ("retried", lambda s: s.total_retried),
    ("dead", lambda s: s.total_dead_lettered),
    ("panics", lambda s: s.total_panics),
    ("restarts", lambda s: s.total_restarts),
    ("escalations", lambda s: s.total_escalations),
    # ordered groups: partitions held, and how often that changed
    (
        "partitions",
        lambda s: f"{s.partitions_owned} ({s.total_rebalances} rebalances)" if s.total_rebalances else "-",
    ),
    # rate_limit / concurrency_limit (over every hub of the group), and the runs they held back
    ("limits", _limits),
]


def stats_table(snapshots: Sequence[HubSnapshot], url: str, now: float) -> Table:
    """The live hubs' WorkerStats as one table: a row per hub and group."""
    table = Table(
        title=f"{len(snapshots)} live hub(s) on {redact(url)} at {_when(now)}",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    table.add_column("HUB")
    for title, _ in _STAT_COLUMNS:
        table.add_column(title.upper(), justify="left" if title in ("group", "state") else "right")
    for snapshot in snapshots:
        for stat in snapshot.groups:
            table.add_row(snapshot.hub, *(str(cell(stat)) for _, cell in _STAT_COLUMNS))
        if not snapshot.groups:
            table.add_row(snapshot.hub, "(no running group)", *[""] * (len(_STAT_COLUMNS) - 1))
    return table


async def _stats(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.watch is None:
            snapshots = await _within(args.timeout, client.hubs())
            if args.json:
                print(_snapshots_json(snapshots))
            else:
                _print_table(stats_table(snapshots, client.url, time.time()))
            return EXIT_OK
        return await _watch(args, client)


def _snapshots_json(snapshots: Sequence[HubSnapshot]) -> str:
    return (b"[" + b",".join(s.to_json() for s in snapshots) + b"]").decode()


async def _watch(args: argparse.Namespace, client: TrioClient) -> int:
    if args.watch <= 0:
        raise CliError("--watch takes a refresh interval > 0 (seconds)")
    console = _console()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def end_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(end_on_signal)
            with Live(console=console, auto_refresh=False, screen=console.is_terminal) as live:
                while True:
                    snapshots = await _within(args.timeout, client.hubs())
                    if args.json:
                        print(_snapshots_json(snapshots), flush=True)
                    else:
                        live.update(stats_table(snapshots, client.url, time.time()), refresh=True)
                    await trio.sleep(args.watch)
    return EXIT_OK


# --------------------------------------------------------------------------- control


async def _control(args: argparse.Namespace) -> int:
    arguments: dict[str, int] = {}
    if args.command == "scale":
        if not 0 <= args.min <= args.max:
            raise CliError(f"--min {args.min} --max {args.max}: need 0 <= min <= max")
        arguments = {"min_workers": args.min, "max_workers": args.max}
    async with _client(args) as client:
        answers = await _within(
            args.timeout + args.wait,
            client.command(args.command, args.group, timeout=args.wait, **arguments),
        )
    if not answers:
        raise CliError(f"no live hub on {redact(args.bus)}", EXIT_FAILED)
    if all(answer.outcome == "absent" for answer in answers):
        raise CliError(f"no live hub runs a group named {args.group!r}")
    width = max(len(answer.hub) for answer in answers)
    for answer in answers:
        print(f"{answer.hub:<{width}}  {answer.outcome:<8}  {answer.detail}")
    return EXIT_OK if all(a.outcome in ("applied", "absent") for a in answers) else EXIT_FAILED


# --------------------------------------------------------------------------- dead letters


async def _dead_letters(args: argparse.Namespace) -> int:
    topic = _topic(args.topic)
    ids = args.id or None
    async with _client(args) as client:
        if args.action == "list":
            letters = await _within(args.timeout, client.dead_letters(topic, limit=args.limit))
            if args.json:
                print(orjson.dumps([_letter_document(letter) for letter in letters]).decode())
                return EXIT_OK
            title = f"{len(letters)} dead letter(s) of {topic}"
            table = Table(title=title, title_justify="left", box=None, pad_edge=False)
            for column in ("ID", "FAILED AT", "ATTEMPTS", "GROUP", "REASON", "ERROR", "PAYLOAD"):
                table.add_column(column, overflow="fold")
            for letter in letters:
                table.add_row(
                    letter.id,
                    _when(letter.at),
                    str(letter.attempts),
                    letter.group or "",
                    letter.reason,
                    letter.error or "",
                    orjson.dumps(letter.message.payload).decode(),
                )
            _print_table(table)
            return EXIT_OK
        if args.action == "requeue":
            count = await _within(args.timeout, client.requeue_dead_letters(topic, ids))
            print(f"requeued {count} dead letter(s) of {topic}")
        else:
            count = await _within(args.timeout, client.purge_dead_letters(topic, ids))
            print(f"purged {count} dead letter(s) of {topic}")
    if ids is not None and count < len(ids):
        raise CliError(f"{len(ids) - count} of the given id(s) were not dead letters of {topic}", EXIT_FAILED)
    return EXIT_OK


def _letter_document(letter: DeadLetter) -> dict[str, JSON]:
    document = attrs.asdict(letter, recurse=False)
    message: Message = document.pop("message")
    return {**document, "message": {"topic": message.topic, **message.envelope()}}


# --------------------------------------------------------------------------- replay


async def _replay(args: argparse.Namespace) -> int:
    topic = _topic(args.topic)
    into = _topic(args.into) if args.into else None
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    left = math.inf if args.limit is None else args.limit
    first, replayed = args.start, 0
    async with _connected(args) as bus:
        while left > 0:
            page = await _within(
                args.timeout, bus.history(topic, first=first, last=args.end, count=int(min(left, 1000)))
            )
            if not page:
                break
            left -= len(page)
            first = "(" + page[-1][0]  # the next page starts after this one
            if into is None:
                for entry_id, message in page:
                    print(orjson.dumps({"id": entry_id, "message": message.envelope()}).decode())
                continue
            copies = [
                Message(
                    into,
                    message.payload,
                    id=uuid.uuid4().hex,
                    headers={**message.headers, "replayed_from": f"{topic}/{entry_id}"},
                )
                for entry_id, message in page
            ]
            await _within(args.timeout, bus.publish_many(copies))
            replayed += len(copies)
    if into is not None:
        print(f"replayed {replayed} message(s) of {topic} into {into}")
    return EXIT_OK

"""``actionhub schedules``: each schedule of the bus, its last and next tick, the hubs declaring it.

The definitions come from the live hubs' snapshots, the last ticks from the bus's schedule states
(so a schedule no live hub declares any more still shows, with its last tick)."""

from __future__ import annotations

import argparse
import time

import attrs
import orjson
from rich.table import Table

from ..bus.ticks import ScheduleState
from ..errors import ConfigurationError
from ..inspect import hub_snapshots, redact
from ..message import JSON
from ..scheduling import ScheduleInfo
from ._common import EXIT_OK, _connected, _print_table, _when, _within


@attrs.frozen
class ScheduleRow:
    """One schedule as the command shows it."""

    name: str
    #: None: no live hub declares it
    topic: str | None
    period: str | None
    tz: str | None
    catch_up: str | None
    #: the hubs declaring it, by name
    hubs: tuple[str, ...]
    #: the live hubs do not agree on its definition
    conflicting: bool
    #: the last tick published, seconds since the epoch; None: none (under this definition)
    last: float | None
    next: float | None


def schedule_rows(
    declared: dict[str, list[tuple[str, ScheduleInfo]]], states: dict[str, ScheduleState], now: float
) -> list[ScheduleRow]:
    """The rows of every schedule declared by a live hub or holding a state, by name."""
    rows = []
    for name in sorted(declared.keys() | states.keys()):
        hubs = declared.get(name, [])
        state = states.get(name)
        last = state.fired if state is not None else None
        if not hubs:
            rows.append(ScheduleRow(name, None, None, None, None, (), False, _seconds(last), None))
            continue
        info = hubs[0][1]
        try:
            schedule = info.schedule()
            after = max(state.last if state is not None else 0, int(now * 1000))
            nxt: float | None = schedule.next_tick(after) / 1000
            period = schedule.period
        except ConfigurationError:  # a definition this version cannot read
            nxt, period = info.next, info.cron or f"every {info.every}s"
        rows.append(
            ScheduleRow(
                name=name,
                topic=info.topic,
                period=period,
                tz=info.tz,
                catch_up=info.catch_up,
                hubs=tuple(sorted(hub for hub, _ in hubs)),
                conflicting=len({i.digest for _, i in hubs}) > 1,
                last=_seconds(last)
                if state is not None and state.digest in {i.digest for _, i in hubs}
                else None,
                next=nxt,
            )
        )
    return rows


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


async def _schedules(args: argparse.Namespace) -> int:
    async with _connected(args) as bus:
        snapshots = await _within(args.timeout, hub_snapshots(bus))
        states = await _within(args.timeout, bus.schedule_states())
    declared: dict[str, list[tuple[str, ScheduleInfo]]] = {}
    for snapshot in snapshots:
        for info in snapshot.schedules:
            declared.setdefault(info.name, []).append((snapshot.hub, info))
    now = time.time()
    rows = schedule_rows(declared, states, now)
    if args.json:
        document: list[JSON] = [attrs.asdict(row) for row in rows]
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    table = Table(
        title=f"{len(rows)} schedule(s) on {redact(args.bus)} at {_when(now)}",
        title_justify="left",
        box=None,
        header_style="bold",
    )
    for column in ("schedule", "topic", "when", "tz", "catch_up", "last tick", "next tick", "hubs"):
        table.add_column(column)
    for row in rows:
        hubs = ", ".join(row.hubs) or "- (no live hub)"
        table.add_row(
            row.name,
            row.topic or "-",
            row.period or "-",
            row.tz or "-",
            row.catch_up or "-",
            "-" if row.last is None else _when(row.last),
            "-" if row.next is None else _when(row.next),
            f"{hubs} (definitions differ!)" if row.conflicting else hubs,
        )
    _print_table(table)
    return EXIT_OK

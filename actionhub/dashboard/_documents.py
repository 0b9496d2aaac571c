"""The dashboard's JSON documents: what the page gets, built from the sampler's view and the
bus's records. Plain data only: the page puts every string in as text."""

from __future__ import annotations

import math
from typing import Any

import orjson

from ..bus.base import DeadLetter
from ..inspect import HubSnapshot
from ..stats import WorkerStat
from ._sampler import Point, Rate, Sampler


def overview_document(sampler: Sampler, *, read_only: bool, bus: str) -> dict[str, Any]:
    """Every live hub with its groups, each group over its hubs, and the rates of all."""
    groups: dict[str, dict[str, Any]] = {}
    hubs = []
    for snapshot in sampler.snapshots:
        rows = []
        for stat in snapshot.groups:
            rate = sampler.rates.get((snapshot.hub, stat.addr))
            row = group_row(stat, rate)
            rows.append(row)
            _add_to(groups, row)
        hubs.append(_hub(snapshot, rows))
    for name, group in groups.items():
        group["spark"] = _downsampled([p.processed for p in sampler.history(name)], 60)
    return {
        "bus": bus,
        "read_only": read_only,
        "interval": sampler.interval,
        "window": sampler.window,
        "hubs": hubs,
        "groups": sorted(groups.values(), key=lambda g: str(g["group"])),
        "history": series(sampler.history()),
    }


def _hub(snapshot: HubSnapshot, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "hub": snapshot.hub,
        "host": snapshot.host,
        "pid": snapshot.pid,
        "started_at": snapshot.started_at,
        "at": snapshot.at,
        "groups": rows,
    }


def group_row(stat: WorkerStat, rate: Rate | None) -> dict[str, Any]:
    rate = rate or Rate()
    return {
        "group": stat.addr,
        "topic": stat.topic,
        "state": stat.state.value,
        "cool_down_until": stat.cool_down_until,
        "workers": stat.total_current_workers,
        "min_workers": stat.min_workers,
        "max_workers": stat.max_workers,
        "busy": stat.in_flight,
        "buffered": stat.buffered,
        "processed": stat.total_message_processed,
        "failed": stat.total_failed,
        "dead_lettered": stat.total_dead_lettered,
        "panics": stat.total_panics,
        "restarts": stat.total_restarts,
        "escalations": stat.total_escalations,
        "processed_rate": round(rate.processed, 3),
        "failed_rate": round(rate.failed, 3),
    }


_SUMMED = (
    *("workers", "busy", "buffered", "processed", "failed", "dead_lettered", "panics", "restarts"),
    *("escalations", "processed_rate", "failed_rate", "min_workers", "max_workers"),
)


def _add_to(groups: dict[str, dict[str, Any]], row: dict[str, Any]) -> None:
    """Count one hub's row into its group's row over every hub."""
    group = groups.get(row["group"])
    if group is None:
        groups[row["group"]] = {**row, "hubs": 1, "states": [row["state"]]}
        return
    group["hubs"] += 1
    for field in _SUMMED:
        group[field] += row[field]
    if row["state"] not in group["states"]:
        group["states"].append(row["state"])


def series(points: list[Point]) -> dict[str, list[float]]:
    return {
        "at": [round(p.at, 1) for p in points],
        "processed": [round(p.processed, 3) for p in points],
        "failed": [round(p.failed, 3) for p in points],
        "workers": [p.workers for p in points],
        "buffered": [p.buffered for p in points],
    }


def _downsampled(values: list[float], most: int) -> list[float]:
    """At most ``most`` values: the means of runs of ``values``."""
    run = max(1, -(-len(values) // most))
    return [round(sum(values[i : i + run]) / len(values[i : i + run]), 2) for i in range(0, len(values), run)]


def letter_document(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "at": letter.at,
        "attempts": letter.attempts,
        "group": letter.group,
        "reason": letter.reason,
        "error": letter.error,
        "traceback": letter.traceback,
        "envelope": letter.message.envelope(),
    }


def escalation_document(event: dict[str, str]) -> dict[str, Any]:
    try:
        document = orjson.loads(event.get("document", "{}"))
    except orjson.JSONDecodeError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    try:
        at = float(event.get("at", "nan"))
    except ValueError:
        at = math.nan
    return {
        "hub": event.get("hub", ""),
        "group": event.get("group", ""),
        "reason": event.get("reason", ""),
        "error": event.get("error", ""),
        "at": None if math.isnan(at) else at,
        "traceback": document.get("traceback"),
        "offending_message": document.get("offending_message"),
        "restarts": document.get("restarts"),
    }

"""Seeing and steering live hubs from outside them: what the CLI, dashboards and scripts use.

Every running hub announces a `HubSnapshot` on its bus at an interval, with an expiry, so a dead
hub drops out by itself; `hub_snapshots` reads them. `send_command` delivers an operator command
(scale, pause, resume, restart) to every live hub and collects who applied what.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson

from .bus.url import redact
from .errors import ConfigurationError
from .scheduling import ScheduleInfo
from .stats import WorkerStat
from .supervision.policy import Behaviour, GroupState, Instance

if TYPE_CHECKING:
    from .bus.base import Bus
    from .hub import ActionHub

COMMANDS = ("scale", "pause", "resume", "restart")


@attrs.frozen
class HubSnapshot:
    """What one live hub announced: who it is, a `WorkerStat` per group and its schedules."""

    hub: str
    host: str
    pid: int
    bus: str
    started_at: float
    at: float
    groups: tuple[WorkerStat, ...]
    #: the schedules the hub declares (none in the snapshots of hubs older than schedules)
    schedules: tuple[ScheduleInfo, ...] = ()

    def to_json(self) -> bytes:
        document = attrs.asdict(self, recurse=False)
        document["groups"] = [stat.fields() for stat in self.groups]  # orjson writes enums by value
        document["schedules"] = [attrs.asdict(info) for info in self.schedules]
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, raw: bytes) -> HubSnapshot:
        """The snapshot in ``raw``; fields a newer hub adds are left out, so a rolling upgrade
        never hides a hub from older readers of this version on."""
        document = orjson.loads(raw)
        groups = tuple(
            WorkerStat(
                **{
                    **_known(WorkerStat, g),
                    "instance": Instance(g["instance"]),
                    "behaviour": Behaviour(g["behaviour"]),
                    "state": GroupState(g.get("state", "running")),  # hubs older than the field
                }
            )
            for g in document.pop("groups")
        )
        schedules = tuple(
            ScheduleInfo(**_known(ScheduleInfo, info)) for info in document.pop("schedules", ())
        )
        return cls(groups=groups, schedules=schedules, **_known(cls, document))


def _known(cls: type, document: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``document`` that attrs class ``cls`` has."""
    known = attrs.fields_dict(cls)
    return {name: value for name, value in document.items() if name in known}


def snapshot_of(hub: ActionHub, started_at: float) -> HubSnapshot:
    return HubSnapshot(
        hub=hub.name,
        host=socket.gethostname(),
        pid=os.getpid(),
        bus=redact(hub.bus.url),
        started_at=started_at,
        at=time.time(),
        groups=tuple(hub.stats()),
        schedules=tuple(hub.schedules.infos()),
    )


async def hub_snapshots(bus: Bus) -> list[HubSnapshot]:
    """The latest snapshot of every live hub on ``bus``, by hub name."""
    return snapshots_from(await bus.announcements())


def snapshots_from(announcements: Iterable[bytes | None]) -> list[HubSnapshot]:
    """The snapshots among raw announcements, by hub name (None: expired since it was listed)."""
    snapshots = []
    for raw in announcements:
        if raw is None:
            continue
        try:
            snapshots.append(HubSnapshot.from_json(raw))
        except (ValueError, TypeError, KeyError):
            continue  # an announcement of another version: not ours to show
    return sorted(snapshots, key=lambda s: s.hub)


Outcome = Literal["applied", "refused", "absent", "silent"]


@attrs.frozen
class CommandAnswer:
    """One hub's answer to an operator command: ``applied``, ``refused`` (the detail says why),
    ``absent`` (the hub runs no such group) or ``silent`` (no answer within the timeout)."""

    hub: str
    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome == "applied"


def command_document(command: str, group: str, **arguments: int) -> bytes:
    if command not in COMMANDS:
        raise ConfigurationError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    return orjson.dumps({"command": command, "group": group, **arguments})


async def send_command(
    bus: Bus, command: str, group: str, *, timeout: float = 5.0, **arguments: int
) -> list[CommandAnswer]:
    """Send ``command`` for ``group`` to every live hub; one answer per hub, by hub name
    (``silent`` for a hub that did not answer within ``timeout``)."""
    document = command_document(command, group, **arguments)
    hubs = {snapshot.hub for snapshot in await hub_snapshots(bus)}
    raw = await bus.send_control(document, timeout=timeout, expect=len(hubs))
    answers = {answer.hub: answer for answer in map(decode_answer, raw)}
    for hub in hubs - answers.keys():
        answers[hub] = CommandAnswer(hub, "silent", f"no answer within {timeout}s")
    return sorted(answers.values(), key=lambda a: a.hub)


def decode_answer(raw: bytes) -> CommandAnswer:
    document = orjson.loads(raw)
    return CommandAnswer(document["hub"], document["outcome"], document["detail"])


def apply_command(hub: ActionHub, raw: bytes) -> CommandAnswer:
    """Apply an operator command to ``hub``'s group; never raises (the answer says what failed)."""
    try:
        document = orjson.loads(raw)
        command, name = document.get("command"), document.get("group")
        if not isinstance(name, str):
            raise ValueError("the command names no group")
        try:
            group = hub.group(name)
        except KeyError as error:
            return CommandAnswer(hub.name, "absent", error.args[0])
        if command == "scale":
            group.scale(int(document.get("min_workers", -1)), int(document.get("max_workers", -1)))
            detail = f"scaled {name} to {group.config.min_workers}..{group.config.max_workers} workers"
        elif command == "pause":
            group.pause()
            detail = f"paused {name}"
        elif command == "resume":
            group.resume()
            detail = f"resumed {name}"
        elif command == "restart":
            cooling_down = group.cooling_down
            group.restart()
            detail = f"ending the cool-down of {name}" if cooling_down else f"restarting {name}"
        else:
            raise ConfigurationError(f"unknown command {command!r}")
    except (ValueError, TypeError, AttributeError) as error:
        return CommandAnswer(hub.name, "refused", str(error))
    return CommandAnswer(hub.name, "applied", detail)


def encode_answer(answer: CommandAnswer) -> bytes:
    return orjson.dumps(attrs.asdict(answer))


__all__: Sequence[str] = ["CommandAnswer", "HubSnapshot", "hub_snapshots", "redact", "send_command"]

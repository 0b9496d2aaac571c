"""``actionhub status``: where one message stands, or (``--wait``) its kept result."""

from __future__ import annotations

import argparse

import orjson

from ..results import MessageDead, MessageStatus
from ._common import EXIT_FAILED, EXIT_OK, CliError, _client, _when, _within


def status_line(status: MessageStatus) -> str:
    """One line: the id, the state, and what the record says of it."""
    parts = [status.id, status.state]
    if status.topic is not None:
        parts.append(f"topic={status.topic}")
    if status.group is not None:
        parts.append(f"group={status.group}")
    if status.attempt is not None:
        parts.append(f"attempt={status.attempt}")
    if status.next_attempt_at is not None:
        parts.append(f"next_attempt_at={_when(status.next_attempt_at)}")
    if status.at is not None:
        parts.append(f"at={_when(status.at)}")
    if status.reason is not None:
        parts.append(f"reason={status.reason!r}")
    if status.error is not None:
        parts.append(f"error={status.error!r}")
    if status.state == "done":
        parts.append(f"result={orjson.dumps(status.result).decode()}")
    return " ".join(parts)


async def _status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.wait is None:
            status = await _within(args.timeout, client.status(args.id))
            print(orjson.dumps(_document(status)).decode() if args.json else status_line(status))
            return EXIT_OK
        try:
            value = await _within(args.wait + args.timeout, client.result(args.id, args.wait))
        except MessageDead as dead:
            raise CliError(str(dead), EXIT_FAILED) from None
        except TimeoutError as error:
            raise CliError(str(error), EXIT_FAILED) from None
        print(orjson.dumps(value).decode())
        return EXIT_OK


def _document(status: MessageStatus) -> dict[str, object]:
    fields = {
        "id": status.id,
        "state": status.state,
        "topic": status.topic,
        "group": status.group,
        "attempt": status.attempt,
        "next_attempt_at": status.next_attempt_at,
        "at": status.at,
        "reason": status.reason,
        "error": status.error,
        "result": status.result,
    }
    return {name: value for name, value in fields.items() if value is not None or name == "result"}

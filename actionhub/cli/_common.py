"""What every command shares: exit codes, the one-line error, the bus and client of ``--bus``,
tables on a terminal."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio
from rich.console import Console
from rich.table import Table

from ..bus.base import Bus
from ..bus.url import open_bus
from ..client import TrioClient
from ..errors import ConfigurationError
from ..message import check_topic

log = logging.getLogger("actionhub.cli")

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: ``actionhub run``: a group with ``on_max_restarts="stop_hub"`` went past its restart limit and
#: stopped the hub, so that the process supervisor (systemd, Kubernetes) starts a fresh one
EXIT_GROUP_GAVE_UP = 4
DEFAULT_BUS = "redis://localhost:6379/0"


class CliError(Exception):
    """Ends the command with one line on stderr and ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- plumbing


@asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[Bus]:
    """The bus of ``--bus``, connected (`BusError`, exit 3, if it does not answer in ``--timeout``)."""
    bus = _bus(args.bus)
    async with bus.open(f"cli-{os.getpid()}", connect_timeout=args.timeout, serving=False):
        yield bus


@asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[TrioClient]:
    """An `actionhub.client.TrioClient` on ``--bus``: what the commands that only read and send
    use (no hub machinery: no delayed mover, no acker)."""
    try:
        client = TrioClient(args.bus)
    except ConfigurationError as error:
        raise CliError(f"bad bus URL: {error}") from None
    async with client:
        yield client


def _bus(url: str) -> Bus:
    try:
        return open_bus(url)
    except ConfigurationError as error:
        raise CliError(f"bad bus URL: {error}") from None


async def _within(seconds: float, work: Awaitable[T]) -> T:
    """``work``'s result; `trio.TooSlowError` (exit 3) after ``seconds``."""
    with trio.fail_after(seconds):
        return await work


def _topic(topic: str) -> str:
    try:
        return check_topic(topic)
    except ConfigurationError as error:
        raise CliError(str(error)) from None


def _console() -> Console:
    """Tables at full width on a terminal; unwrapped when piped (a log or a README keeps them whole)."""
    return Console(width=None if sys.stdout.isatty() else 250, highlight=False)


def _print_table(table: Table) -> None:
    console = _console()
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    print("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")

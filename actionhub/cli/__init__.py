"""The ``actionhub`` command: serve a hub, publish, read stats, steer live hubs, dead letters, demo.

Every command that talks to live hubs takes ``--bus URL`` (default: ``$ACTIONHUB_BUS``, else
``redis://localhost:6379/0``). Exit codes, for scripts: 0 done; 1 the command ran but did not
succeed (a hub refused or stayed silent, no reply in time, no live hub); 2 bad usage or bad input;
3 the bus could not be reached; 4 ``run``: a group with ``on_max_restarts="stop_hub"`` gave up;
130/143 ``run`` was stopped at once by a second signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import trio

from ..dashboard import TOKEN_VARIABLE
from ..errors import ActionHubError, BusError
from ..inspect import COMMANDS, redact
from ..logs import configure_logging
from ._common import (
    DEFAULT_BUS,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    log,
)
from ._keys import _keys
from ._operate import (
    _control,
    _dead_letters,
    _publish,
    _replay,
    _stats,
    stats_table,
)
from ._results import _status
from ._schedules import _schedules
from ._serve import (
    _dashboard,
    _demo,
    _run,
    _schema,
)

# --------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="actionhub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(
        dest="command_name", required=True, metavar="COMMAND", parser_class=_Parser
    )
    shared_bus = os.environ.get("ACTIONHUB_BUS", DEFAULT_BUS)

    def command(
        name: str,
        handler: Callable[[argparse.Namespace], Awaitable[int]],
        help: str,
        bus: str | None = shared_bus,
        bus_help: str = f"the bus the hubs share (default: $ACTIONHUB_BUS or {DEFAULT_BUS})",
    ) -> _Parser:
        # Each command gets options of its own: argparse parents would share one --bus action,
        # and a default set for one command would become every command's.
        sub: _Parser = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        sub.add_argument("--bus", default=bus, metavar="URL", help=bus_help)
        sub.add_argument(
            "--timeout", type=_positive, default=10.0, metavar="S", help="give up on the bus after S seconds"
        )
        sub.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr")
        sub.add_argument("--log-level", default=None, metavar="LEVEL", help="INFO for run, ERROR otherwise")
        return sub

    run = command(
        "run",
        _run,
        "serve a hub until SIGTERM/SIGINT (the second one stops at once)",
        bus=None,
        bus_help="put the hub on this bus (default: $ACTIONHUB_BUS, else the hub's own)",
    )
    run.add_argument("target", metavar="MODULE:HUB", help="an ActionHub, or a function returning one")
    run.add_argument("--name", help="the hub's name (default: its own)")
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics, /healthz and /readyz on PORT",
    )
    run.add_argument(
        "--health-port", type=_port, metavar="PORT", help="serve only /healthz and /readyz on PORT"
    )

    publish = command("publish", _publish, "publish one message (JSON; - reads stdin); prints its id")
    publish.add_argument("topic", metavar="TOPIC")
    publish.add_argument("payload", metavar="JSON")
    publish.add_argument("--delay", type=float, metavar="S", help="deliver after S seconds")
    publish.add_argument("--header", action="append", default=[], metavar="K=V", help="a header (repeatable)")
    publish.add_argument(
        "--wait-reply", type=_positive, metavar="S", help="wait S seconds for a reply, and print it"
    )
    publish.add_argument(
        "--dedupe-key", metavar="KEY", help="publish nothing if KEY was published to TOPIC within the window"
    )
    publish.add_argument(
        "--dedupe-for", type=_positive, metavar="S", help="the dedupe window in seconds (default 3600)"
    )
    publish.add_argument(
        "--durable",
        type=_replicas,
        metavar="N",
        help="return once N Redis replicas have the message (default: the bus URL's durable)",
    )

    stats = command("stats", _stats, "the WorkerStats of every live hub on the bus")
    stats.add_argument("--json", action="store_true", help="one JSON document (a list of hub snapshots)")
    stats.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="S", help="refresh every S seconds (default 2)"
    )

    schedules = command(
        "schedules", _schedules, "each schedule: its last and next tick, the hubs declaring it"
    )
    schedules.add_argument("--json", action="store_true", help="one JSON document (a list of schedules)")

    for name, help in [
        ("scale", "set a group's worker bounds on every live hub"),
        ("pause", "start nothing new in a group (in-flight work finishes)"),
        ("resume", "undo pause"),
        ("restart", "restart every worker of a group"),
    ]:
        control = command(name, _control, help)
        control.add_argument("group", metavar="GROUP")
        control.add_argument(
            "--wait", type=_positive, default=5.0, metavar="S", help="wait S seconds for the answers"
        )
        control.set_defaults(command=name)
        if name == "scale":
            control.add_argument("--min", type=int, required=True, metavar="N")
            control.add_argument("--max", type=int, required=True, metavar="M")

    dead = command("dead-letters", _dead_letters, "list, requeue or purge the dead letters of a topic")
    dead.add_argument("action", choices=("list", "requeue", "purge"))
    dead.add_argument("topic", metavar="TOPIC")
    dead.add_argument("--id", action="append", metavar="ID", help="only this dead letter (repeatable)")
    dead.add_argument("--limit", type=int, default=100, metavar="N", help="list at most N (default 100)")
    dead.add_argument("--json", action="store_true", help="list as JSON")

    replay = command(
        "replay",
        _replay,
        "print a range of a topic's retained history (JSON lines), or publish it into another topic",
    )
    replay.add_argument("topic", metavar="TOPIC")
    replay.add_argument(
        "--from", dest="start", default="-", metavar="ID", help="first entry id (default: oldest)"
    )
    replay.add_argument("--to", dest="end", default="+", metavar="ID", help="last entry id (newest)")
    replay.add_argument(
        "--into", metavar="TOPIC", help="publish the messages into TOPIC instead of printing them"
    )
    replay.add_argument("--limit", type=int, metavar="N", help="at most N messages")

    keys = command(
        "keys",
        _keys,
        "the Redis key names of a topic in the bus URL's layout (single node or cluster)",
    )
    keys.add_argument("topic", metavar="TOPIC")
    keys.add_argument(
        "--key", metavar="KEY", help="also the partition stream of a message with this ordering key"
    )
    keys.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="the topic's partition count (default: read from the bus; given, nothing is read)",
    )
    keys.add_argument("--json", action="store_true", help="one JSON object: what -> key name")

    status = command(
        "status", _status, "where a message stands (a keep_result group): pending ... done, dead, unknown"
    )
    status.add_argument("id", metavar="ID", help="the message id a publish returned")
    status.add_argument("--json", action="store_true", help="the status as one JSON document")
    status.add_argument(
        "--wait", type=_positive, metavar="S", help="wait up to S seconds for the result, and print it (JSON)"
    )

    schema = command(
        "schema",
        _schema,
        "the JSON Schema of each typed action's payload: what another language must send",
        bus=None,
        bus_help="not used",
    )
    schema.add_argument("target", metavar="MODULE:HUB", help="an ActionHub, or a function returning one")

    dashboard = command("dashboard", _dashboard, "serve the web dashboard of the hubs on the bus")
    dashboard.add_argument("--host", default="127.0.0.1", help="listen on this address (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8080, help="listen on this port (default 8080)")
    dashboard.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="answer requests for this host name (repeatable; default: this machine's own names "
        "when --host is a loopback address, else any)",
    )
    dashboard.add_argument(
        "--token",
        help=f"allow changes to whoever gives this token (default: ${TOKEN_VARIABLE}; none: read-only)",
    )

    command(
        "demo",
        _demo,
        "the five-second demo: scaling, a restart, an escalation",
        "memory://",
        "default: memory://",
    )
    assert set(COMMANDS) <= set(commands.choices)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = args.log_level or ("INFO" if args.command_name == "run" else "ERROR")
    try:
        configure_logging(format=args.log_format, level=level.upper())
    except ValueError:
        raise CliError(f"unknown --log-level {args.log_level!r}") from None


def _leaf(error: BaseException) -> BaseException:
    """The first error that is not a group (trio's nurseries wrap what they raise)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        _configure_logging(args)
        code: int = trio.run(args.handler, args)
        return code
    except BaseException as raised:  # one line and an exit code, never a traceback
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            return 128 + signal.SIGINT
        if isinstance(error, CliError):
            message, code = str(error), error.code
        elif isinstance(error, BusError):  # the clients' errors name the bus already
            bus = "" if "(bus " in str(error) else f" (bus {redact(args.bus or '')})"
            message, code = f"{error}{bus}", EXIT_UNREACHABLE
        elif isinstance(error, trio.TooSlowError):
            message, code = f"no answer from the bus within {args.timeout}s", EXIT_UNREACHABLE
        elif isinstance(error, (ActionHubError, ValueError, TypeError)):
            message, code = str(error), EXIT_USAGE
        elif isinstance(error, OSError):
            message, code = f"{error.strerror or error}", EXIT_FAILED
        else:
            log.debug("unexpected error", exc_info=error)
            message, code = f"unexpected {type(error).__name__}: {error}", EXIT_FAILED
        print(f"actionhub: error: {message}", file=sys.stderr)
        return code


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
    "stats_table",
]

"""The ``actionhub`` command: serve a hub, publish, read stats, steer live hubs, dead letters, demo.

Every command that talks to live hubs takes ``--bus URL`` (default: ``$ACTIONHUB_BUS``, else
``redis://localhost:6379/0``). Exit codes, for scripts: 0 done; 1 the command ran but did not
succeed (a hub refused or stayed silent, no reply in time, no live hub); 2 bad usage or bad input;
3 the bus could not be reached; 130/143 ``run`` was stopped at once by a second signal.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import NoReturn, TypeVar

import attrs
import orjson
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import tracing
from .bus.base import Bus, DeadLetter
from .bus.url import open_bus
from .client import TrioClient
from .dashboard import TOKEN_VARIABLE, serve_dashboard
from .errors import ActionHubError, BusError, ConfigurationError
from .hub import ActionHub
from .inspect import COMMANDS, HubSnapshot, redact
from .logs import configure_logging
from .message import JSON, Message, check_topic
from .stats import WorkerStat

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


# --------------------------------------------------------------------------- run


def _load_hub(target: str) -> ActionHub:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CliError(f"expected MODULE:HUB (like myapp.workers:hub), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the app lives where you run it
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CliError(f"cannot import {module_name!r}: {error}") from None
    try:
        hub = getattr(module, attribute)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if callable(hub) and not isinstance(hub, ActionHub):
        hub = hub()  # a factory
    if not isinstance(hub, ActionHub):
        raise CliError(f"{target} is {type(hub).__name__}, not an ActionHub (or a function returning one)")
    return hub


async def _run(args: argparse.Namespace) -> int:
    hub = _load_hub(args.target)
    # one precedence for every command: --bus, then $ACTIONHUB_BUS, then (run only) the hub's own
    from_env = os.environ.get("ACTIONHUB_BUS")
    bus, source = (args.bus, "--bus") if args.bus else (from_env, "$ACTIONHUB_BUS")
    if not bus:
        source = "the hub's own"
    try:
        hub.configure(bus=bus or None, name=args.name)
    except ConfigurationError as error:
        raise CliError(str(error)) from None
    log.info(
        "hub %s on %s (%s)",
        hub.name,
        redact(hub.bus.url),
        source,
        extra={"hub": hub.name, "bus": redact(hub.bus.url), "bus_from": source},
    )
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    forced_by: int | None = None
    with trio.open_signal_receiver(*stop_signals) as signals:
        async with trio.open_nursery() as nursery:

            async def serve_hub(*, task_status: trio.TaskStatus[None]) -> None:
                await hub.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # it may stop by itself (on_max_restarts="stop_hub")

            await nursery.start(serve_hub)
            if args.metrics_port is not None:
                from .metrics import serve_metrics

                url = await nursery.start(serve_metrics, hub, args.metrics_port)
                log.info("metrics served on %s", url, extra={"hub": hub.name, "metrics": url})
            if args.health_port is not None:
                from .health import serve_health

                url = await nursery.start(serve_health, hub, args.health_port)
                log.info("health probes served on %s", url, extra={"hub": hub.name, "health": url})
            log.info(
                "hub %s ready; SIGTERM or Ctrl-C stops it gracefully, a second one at once",
                hub.name,
                extra={"hub": hub.name},
            )

            async def stop_gracefully() -> None:
                await hub.stop()
                nursery.cancel_scope.cancel()

            async for signum in signals:
                name = signal.Signals(signum).name
                if not hub.is_running:  # already stopping: the second signal
                    forced_by = signum
                    log.warning(
                        "second signal (%s): stopping at once; unfinished messages stay unacknowledged "
                        "and will be delivered again",
                        name,
                        extra={"hub": hub.name, "signal": name},
                    )
                    nursery.cancel_scope.cancel()
                    break
                log.warning(
                    "%s: stopping gracefully (intake closed; in-flight work gets shutdown_timeout to finish)",
                    name,
                    extra={"hub": hub.name, "signal": name},
                )
                nursery.start_soon(stop_gracefully)
    if forced_by is not None:
        return 128 + forced_by
    if hub.stopped_by is not None:
        raise CliError(
            f"hub {hub.name} stopped: group {hub.stopped_by.group} went past its restart limit "
            f"({hub.stopped_by.error!r})",
            EXIT_GROUP_GAVE_UP,
        )
    return EXIT_OK


# --------------------------------------------------------------------------- schema


async def _schema(args: argparse.Namespace) -> int:
    """Each action's topic and payload schema (None: any JSON), its slaves' too, as one JSON
    document; ``actionhub.message.json_schema()`` is the envelope around them."""
    hub = _load_hub(args.target)
    document: dict[str, JSON] = {}
    for template in hub.templates():
        document[template.name] = {
            "topic": template.topic,
            "payload": template.codec.schema() if template.codec is not None else None,
            "slaves": {
                template.slave_name(slave): slave.codec.schema() if slave.codec is not None else None
                for slave in template.slaves
            },
        }
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return EXIT_OK


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
    if args.wait_reply is None:
        async with _client(args) as client:
            published = client.publish(topic, payload, headers=headers, delay=args.delay)
            print(await _within(args.timeout, published))
            return EXIT_OK
    message = Message(topic, payload, id=uuid.uuid4().hex, headers=headers)
    # the id first, then the reply: through the bus and its reply channel
    async with _connected(args) as bus, bus.reply_channel() as channel:
        message = attrs.evolve(message, reply_to=channel.address)
        published = tracing.publishing(message, partial(bus.publish, delay=args.delay), delay=args.delay)
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


# --------------------------------------------------------------------------- dashboard


async def _dashboard(args: argparse.Namespace) -> int:
    _bus(args.bus)  # a bad URL is one line, before anything is served
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    serve = partial(
        serve_dashboard,
        args.bus,
        host=args.host,
        port=args.port,
        token=token,
        timeout=args.timeout,
        allowed_hosts=args.allowed_host,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(serve)
            mode = "changes need the token" if token else "read-only (start it with --token to allow changes)"
            print(f"dashboard of {redact(args.bus)} on {base}/, {mode}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return EXIT_OK


# --------------------------------------------------------------------------- demo


async def _demo(args: argparse.Namespace) -> int:
    from . import demo

    url = args.bus
    if url.startswith(("redis", "unix")) and "prefix=" not in url:
        url += ("&" if "?" in url else "?") + f"prefix=actionhub-demo-{uuid.uuid4().hex[:6]}:"
    _bus(url)  # a bad URL is bad input, not a crash inside the demo
    logging.getLogger("actionhub").setLevel(logging.CRITICAL)  # the demo prints what happens itself
    await demo.main(url)
    return EXIT_OK


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

    stats = command("stats", _stats, "the WorkerStats of every live hub on the bus")
    stats.add_argument("--json", action="store_true", help="one JSON document (a list of hub snapshots)")
    stats.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="S", help="refresh every S seconds (default 2)"
    )

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

"""The commands that serve: ``run`` (a hub), ``dashboard``, ``demo``; and ``schema``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import uuid
from functools import partial

import orjson
import trio

from ..dashboard import TOKEN_VARIABLE, serve_dashboard
from ..errors import ConfigurationError
from ..hub import ActionHub
from ..inspect import redact
from ..message import JSON
from ._common import (
    EXIT_GROUP_GAVE_UP,
    EXIT_OK,
    CliError,
    _bus,
    log,
)

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
                from ..metrics import serve_metrics

                url = await nursery.start(serve_metrics, hub, args.metrics_port)
                log.info("metrics served on %s", url, extra={"hub": hub.name, "metrics": url})
            if args.health_port is not None:
                from ..health import serve_health

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
    from .. import demo

    url = args.bus
    if url.startswith(("redis", "unix")) and "prefix=" not in url:
        url += ("&" if "?" in url else "?") + f"prefix=actionhub-demo-{uuid.uuid4().hex[:6]}:"
    _bus(url)  # a bad URL is bad input, not a crash inside the demo
    logging.getLogger("actionhub").setLevel(logging.CRITICAL)  # the demo prints what happens itself
    await demo.main(url)
    return EXIT_OK

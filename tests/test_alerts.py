"""Escalation integrations (log, bus stream, webhook) and the structured log formats."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from actionhub import ActionHub, Backoff, BusError, Job, MemoryBus
from actionhub.alerts import EscalationStream, Webhook, log_escalation
from actionhub.bus.url import open_bus
from actionhub.logs import configure_logging
from actionhub.supervision.escalation import Escalation
from actionhub.supervision.policy import EscalationProtocol

FAST = Backoff(min=0.01, max=0.01, jitter=0)


class Receiver:
    """A tiny ASGI app standing in for an alerting service: answers with ``statuses`` in turn."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[int, dict[str, str], Any]] = []
        self.received = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((status, headers, orjson.loads(body)))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if status == 200:
            self.received.set()


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    """Serve ``receiver`` on a free loopback port; yields its URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, receiver, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            yield binds[0] + "/hook"
        finally:
            stop.set()


def escalation(group: str = "charge") -> Escalation:
    return Escalation(
        group=group,
        error=ValueError("bad card"),
        traceback="Traceback ...\nValueError: bad card\n",
        reason="max_restarts",
        worker_protocol=EscalationProtocol.KILL_AND_ESCALATE,
        group_protocol=EscalationProtocol.KILL_AND_ESCALATE,
        restarts=5,
        hub="hub-a",
    )


def failing_hub(bus: str | MemoryBus, alerts: list[Any]) -> ActionHub:
    hub = ActionHub(bus, name="hub-a", on_escalation=alerts)

    @hub.action("charge", max_attempts=1, max_restarts=0)
    async def charge(job: Job) -> None:
        raise ValueError(f"bad card {job.payload}")

    return hub


# --------------------------------------------------------------------------- webhook


async def test_the_webhook_receives_an_escalation_of_a_running_hub_as_json() -> None:
    receiver = Receiver()
    async with receiving(receiver) as url:
        hub = failing_hub("memory://", [Webhook(url, headers={"authorization": "Bearer s3cret"})])
        async with hub.running():
            await hub.publish("charge", {"order": 7})
            with trio.fail_after(10):
                await receiver.received.wait()
    ((status, headers, document),) = receiver.requests
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer s3cret"
    assert document["hub"] == "hub-a" and document["group"] == "charge"
    assert document["reason"] == "max_restarts" and document["error_type"] == "builtins.ValueError"
    assert "bad card {'order': 7}" in document["error"] and "ValueError" in document["traceback"]
    assert document["offending_message"]["payload"] == {"order": 7}
    assert document["host"] == socket.gethostname()


async def test_the_webhook_retries_a_server_error_then_delivers() -> None:
    receiver = Receiver(500, 503)
    async with receiving(receiver) as url:
        await Webhook(url, retries=3, backoff=FAST)(escalation())
    assert [status for status, _, _ in receiver.requests] == [500, 503, 200]
    assert receiver.requests[-1][2]["group"] == "charge"


async def test_the_webhook_gives_up_after_its_retries_and_logs_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(*[502] * 10)
    async with receiving(receiver) as url:
        secret_url = url.replace("http://", "http://alerts:hunter2@") + "?token=t0ken"
        webhook = Webhook(secret_url, retries=2, backoff=FAST)
        with caplog.at_level(logging.ERROR):
            await webhook(escalation())  # never raises into the escalation dispatcher
    assert len(receiver.requests) == 3
    assert "did not take the escalation of group charge: HTTP 502" in caplog.text
    assert "hunter2" not in caplog.text and "t0ken" not in caplog.text and "hunter2" not in repr(webhook)


async def test_the_webhook_does_not_retry_a_refusal() -> None:
    receiver = Receiver(400)
    async with receiving(receiver) as url:
        await Webhook(url, retries=3, backoff=FAST)(escalation())
    assert len(receiver.requests) == 1


async def test_an_unreachable_webhook_is_retried_then_logged(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    with caplog.at_level(logging.ERROR):
        await Webhook(f"http://127.0.0.1:{port}/hook", retries=1, backoff=FAST)(escalation())
    assert "ConnectError" in caplog.text


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Webhook("ftp://user:pw@example.com")


# --------------------------------------------------------------------------- stream and log


async def test_the_stream_integration_records_escalations_on_the_hubs_own_bus(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus = MemoryBus()
    hub = failing_hub(bus, [EscalationStream()])
    async with hub.running():
        await hub.publish("charge", 1)
        await trio.sleep(1)
    (event,) = await bus.events("escalations")
    assert (event["hub"], event["group"], event["reason"]) == ("hub-a", "charge", "max_restarts")
    assert orjson.loads(event["document"])["offending_message"]["payload"] == 1


async def test_the_stream_integration_on_redis(redis_url: str) -> None:
    hub = failing_hub(redis_url, [EscalationStream()])
    async with hub.running():
        await hub.publish("charge", 2)
        with trio.fail_after(10):
            while not await hub.bus.events("escalations"):  # noqa: ASYNC110 - written by another task to Redis
                await trio.sleep(0.05)
    reader = open_bus(redis_url)  # any consumer of <prefix>escalations sees the same
    async with reader.open("reader"):
        (event,) = await reader.events("escalations")
    assert event["group"] == "charge" and "bad card 2" in event["error"]


async def test_an_unbound_stream_fails_loudly() -> None:
    with pytest.raises(ValueError, match="must be given to an ActionHub"):
        await EscalationStream()(escalation())


def test_log_escalation_is_one_record_with_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="actionhub.alerts"):
        log_escalation(escalation())
    (record,) = caplog.records
    assert (
        record.getMessage() == "escalation in group charge of hub hub-a: max_restarts, ValueError('bad card')"
    )
    assert record.escalation_reason == "max_restarts"  # type: ignore[attr-defined]
    assert "ValueError: bad card" in record.escalation_traceback  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- log formats


@pytest.fixture
def root_logger() -> Iterator[None]:
    """configure_logging changes the root logger: put it back as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.usefixtures("root_logger")
def test_json_logs_are_one_object_per_line_with_the_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", out)
    logging.getLogger("actionhub.hub").warning("hub %s started", "a", extra={"hub": "a", "groups": 3})
    logging.getLogger("actionhub.hub").debug("not shown")
    (line,) = out.getvalue().splitlines()
    document = orjson.loads(line)
    assert document["message"] == "hub a started" and document["level"] == "WARNING"
    assert (document["hub"], document["groups"], document["logger"]) == ("a", 3, "actionhub.hub")
    assert document["time"].endswith("+00:00")


@pytest.mark.usefixtures("root_logger")
def test_text_logs_put_the_fields_on_the_events_line() -> None:
    out = io.StringIO()
    configure_logging("text", "INFO", out)
    configure_logging("text", "INFO", out)  # again: replaces its handler, lines are not doubled
    logging.getLogger("actionhub.hub").info("hub stopped", extra={"hub": "a", "note": 'two "words"'})
    line = out.getvalue()
    assert line.endswith(' INFO actionhub.hub hub stopped  hub=a note="two \\"words\\""\n')


async def test_a_redis_password_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bus = open_bus(f"redis://ops:hunter2@127.0.0.1:{port}/0")
    with caplog.at_level(logging.DEBUG), pytest.raises(BusError):
        async with bus.open("x", connect_timeout=0.5):
            pass  # pragma: no cover - the connection is refused
    ours = [r for r in caplog.records if r.name.startswith("actionhub")]
    assert "redis unreachable" in caplog.text and "ops:***@" in str(ours[0].__dict__)
    assert "hunter2" not in caplog.text and all("hunter2" not in str(r.__dict__) for r in caplog.records)


def test_configure_logging_refuses_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("text", "LOUD")

"""OpenTelemetry tracing (`actionhub.tracing`), read through the SDK's in-memory exporter: a
publish is the parent of each run of its action, a run the parent of its reply, across
processes too; retries, panics, timeouts and dead letters show on the runs' spans; logs carry
the ids; and with no provider nothing is traced at all.

The spans go to a provider of each test's own (`tracing.use_tracer_provider`): a global provider
can be set once per process, and the rest of the suite runs untraced."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actionhub import ActionHub, BusError, Job, Reject, Retry, tracing
from actionhub.client import Client, TrioClient
from actionhub.logs import TraceContextFilter, configure_logging
from actionhub.message import Message
from tests import process_jobs
from tests.polling import wait_until
from tests.servers import free_port


class Traced:
    """The spans of one test: ``tracer`` for the test's own, ``finished()`` for all that ended."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    spans = Traced()
    tracing.use_tracer_provider(spans.provider)
    try:
        yield spans
    finally:
        tracing.use_tracer_provider(None)


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traceparent(span: ReadableSpan) -> str:
    trace_id, span_id = ids(span)
    return f"00-{trace_id:032x}-{span_id:016x}"


@asynccontextmanager
async def hub_with(topic: str, action: Any, **config: Any) -> AsyncIterator[ActionHub]:
    hub = ActionHub(name="traced")
    hub.bind(topic, action, **config)
    async with hub.running():
        yield hub


# ---------------------------------------------------------------------- publish and run


async def test_a_publish_is_the_parent_of_the_run_of_its_action(traced: Traced) -> None:
    seen: list[tuple[Message, trace.Span]] = []
    done = trio.Event()

    async def action(job: Job) -> None:
        seen.append((job.message, trace.get_current_span()))
        done.set()

    async with hub_with("orders.charge", action, group="billing") as hub:
        with traced.tracer.start_as_current_span("POST /orders") as caller:
            message_id = await hub.publish("orders.charge", {"id": 7})
        await done.wait()
    (send,) = traced.named("send orders.charge")
    (run,) = traced.named("process orders.charge")
    assert send.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert ids(send)[0] == ids(run)[0] == caller.get_span_context().trace_id
    assert parent_of(send) == caller.get_span_context().span_id
    assert parent_of(run) == ids(send)[1]
    assert dict(send.attributes or {}) == {
        "messaging.system": "actionhub",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "orders.charge",
        "messaging.message.id": message_id,
    }
    assert dict(run.attributes or {}) == {
        "messaging.system": "actionhub",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders.charge",
        "messaging.consumer.group.name": "billing",
        "messaging.message.id": message_id,
        "actionhub.action": "orders.charge",
        "actionhub.attempt": 1,
        "actionhub.outcome": "ok",
    }
    assert run.status.status_code is StatusCode.UNSET and not run.events
    ((message, current),) = seen
    assert message.headers["traceparent"].startswith(traceparent(send))
    assert current.get_span_context().span_id == ids(run)[1]  # the run's span is current in the action


async def test_publish_many_is_one_span_the_parent_of_every_run(traced: Traced) -> None:
    runs = 0
    done = trio.Event()

    async def action(job: Job) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            done.set()

    async with hub_with("batch", action) as hub:
        await hub.publish_many("batch", [1, 2, 3])
        await done.wait()
    (send,) = traced.named("send batch")
    assert send.attributes is not None and send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    processed = traced.named("process batch")
    assert len(processed) == 3 and {parent_of(run) for run in processed} == {ids(send)[1]}


async def test_a_context_of_the_publishers_own_is_the_parent_of_its_send(traced: Traced) -> None:
    """Headers forwarded from elsewhere (an upstream message, an HTTP request) keep their trace:
    the send is a child of their context, and the message carries the send's, never a mix."""
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen: list[Message] = []
    done = trio.Event()

    async def action(job: Job) -> None:
        seen.append(job.message)
        done.set()

    async with hub_with("t", action) as hub:
        with traced.tracer.start_as_current_span("unrelated"):
            await hub.publish("t", 1, headers={"traceparent": theirs, "tracestate": "them=1"})
        await done.wait()
    (send,) = traced.named("send t")
    (run,) = traced.named("process t")
    assert (ids(send)[0], parent_of(send)) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert ids(run)[0] == ids(send)[0] and parent_of(run) == ids(send)[1]
    assert seen[0].headers["traceparent"].startswith(traceparent(send))
    assert seen[0].headers["tracestate"] == "them=1"  # the state of that trace, carried on


async def test_baggage_travels_with_the_message(traced: Traced) -> None:
    from opentelemetry import baggage, context

    found: list[object] = []
    done = trio.Event()

    async def action(job: Job) -> None:
        found.append(baggage.get_baggage("tenant"))
        done.set()

    async with hub_with("t", action) as hub:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            await hub.publish("t", 1)
        finally:
            context.detach(token)
        await done.wait()
    assert found == ["acme"]


async def test_a_reply_carries_the_context_back(traced: Traced) -> None:
    async def action(job: Job) -> None:
        await job.reply({"ok": job.payload})

    async with hub_with("ask", action) as hub:
        reply = await hub.request("ask", 1, timeout=10)
    (send,) = traced.named("send ask")
    (run,) = traced.named("process ask")
    (answer,) = traced.named("send")
    assert parent_of(run) == ids(send)[1] and parent_of(answer) == ids(run)[1]
    assert len({ids(span)[0] for span in (send, run, answer)}) == 1
    assert reply.headers["traceparent"].startswith(traceparent(answer))
    assert answer.attributes is not None and send.attributes is not None
    request_id = send.attributes["messaging.message.id"]
    assert answer.attributes["messaging.message.conversation_id"] == request_id
    assert send.attributes["messaging.message.conversation_id"] == request_id
    assert answer.attributes["messaging.destination.temporary"] is True


async def test_a_process_isolated_run_is_traced_in_the_hub_around_its_process(traced: Traced) -> None:
    async with hub_with("fib", process_jobs.fib, isolation="process") as hub:
        with trio.fail_after(60):
            reply = await hub.request("fib", 10, timeout=60)
    assert reply.payload == 55
    (run,) = traced.named("process fib")
    (answer,) = traced.named("send")
    assert parent_of(answer) == ids(run)[1]  # the result crosses back, the reply leaves from here
    assert run.attributes and run.attributes["actionhub.outcome"] == "ok"


# ---------------------------------------------------------------------- fates


async def test_each_attempt_of_a_retried_message_is_a_span_of_its_own(
    traced: Traced, autojump_clock: trio.abc.Clock
) -> None:
    async def action(job: Job) -> None:
        if job.attempt < 3:
            raise Retry(delay=2.0)

    async with hub_with("flaky", action, max_attempts=5) as hub:
        await hub.publish("flaky", 1)
        await wait_until(lambda: len(traced.named("process flaky")) == 3)
    (send,) = traced.named("send flaky")
    runs = sorted(traced.named("process flaky"), key=lambda span: span.start_time or 0)
    assert [run.attributes["actionhub.attempt"] for run in runs if run.attributes] == [1, 2, 3]
    assert {ids(run)[0] for run in runs} == {ids(send)[0]}
    assert {parent_of(run) for run in runs} == {ids(send)[1]}  # every attempt: the same publish
    for run, next_attempt in zip(runs[:2], (2, 3), strict=True):
        (event,) = run.events
        assert (event.name, dict(event.attributes or {})) == (
            "retry",
            {"actionhub.retry.delay": 2.0, "actionhub.retry.attempt": next_attempt},
        )
        assert run.attributes is not None and run.attributes["actionhub.outcome"] == "retry"
        assert run.status.status_code is StatusCode.UNSET  # asking for a retry is no error
    assert not runs[2].events and runs[2].attributes and runs[2].attributes["actionhub.outcome"] == "ok"


async def test_a_panic_fails_its_span_and_its_fate_shows(
    traced: Traced, autojump_clock: trio.abc.Clock
) -> None:
    async def action(job: Job) -> None:
        raise ValueError(f"boom {job.attempt}")

    async with hub_with("bad", action, max_attempts=2, retry_backoff=(1.0, 1.0, 0.0)) as hub:
        await hub.publish("bad", 1)
        await wait_until(lambda: len(traced.named("process bad")) == 2)
    first, last = sorted(traced.named("process bad"), key=lambda span: span.start_time or 0)
    for run, boom in ((first, "boom 1"), (last, "boom 2")):
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == f"ValueError: {boom}"
        assert run.events[0].name == "exception"
        assert dict(run.events[0].attributes or {})["exception.type"] == "ValueError"
    assert [event.name for event in first.events] == ["exception", "retry"]
    assert [event.name for event in last.events] == ["exception", "dead_letter"]
    reason = dict(last.events[1].attributes or {})["actionhub.dead_letter.reason"]
    assert isinstance(reason, str) and reason.startswith("max_attempts")
    assert first.attributes and last.attributes
    assert (first.attributes["actionhub.outcome"], last.attributes["actionhub.outcome"]) == ("panic", "panic")


async def test_a_timeout_fails_its_span(traced: Traced, autojump_clock: trio.abc.Clock) -> None:
    async def action(job: Job) -> None:
        await trio.sleep(10)

    async with hub_with("slow", action, timeout=1.0, max_attempts=1) as hub:
        await hub.publish("slow", 1)
        await wait_until(lambda: len(traced.named("process slow")) == 1)
    (run,) = traced.named("process slow")
    assert run.status.status_code is StatusCode.ERROR
    assert [event.name for event in run.events] == ["timeout", "exception", "dead_letter"]
    assert dict(run.events[0].attributes or {}) == {"actionhub.timeout": 1.0}
    assert run.attributes and run.attributes["actionhub.outcome"] == "timeout"


async def test_rejected_and_malformed_messages_are_dead_letter_events(traced: Traced) -> None:
    async def refuse(job: Job) -> None:
        raise Reject("no such order")

    async def typed(job: Job[int]) -> None:
        pass

    hub = ActionHub()
    hub.bind("refuse", refuse)
    hub.bind("typed", typed)
    async with hub.running():
        await hub.publish("refuse", 1)
        await hub.publish("typed", "not a number")
        await wait_until(lambda: len(traced.finished()) == 4)
    (rejected,) = traced.named("process refuse")
    (malformed,) = traced.named("process typed")
    for run, reason, outcome in (
        (rejected, "rejected: no such order", "rejected"),
        (malformed, "malformed: invalid payload", "malformed"),
    ):
        (event,) = run.events
        assert event.name == "dead_letter"
        assert str(dict(event.attributes or {})["actionhub.dead_letter.reason"]).startswith(reason)
        assert run.status.status_code is StatusCode.ERROR
        assert run.attributes and run.attributes["actionhub.outcome"] == outcome


# ---------------------------------------------------------------------- isolation and cost


async def test_a_worker_started_from_inside_a_run_does_not_inherit_its_span(traced: Traced) -> None:
    """The first run publishes a message with no trace context while its own worker is busy: the
    worker started for it is spawned from inside that run, yet neither it nor its run belong to
    that trace."""
    workers: dict[int, trio.lowlevel.Task] = {}
    second_done = trio.Event()

    async def action(job: Job) -> None:
        workers[job.payload] = trio.lowlevel.current_task()
        if job.payload == 1:
            await job.hub.bus.publish(Message("spawn", 2, id="raw-2"))  # no headers at all
            await second_done.wait()
        else:
            second_done.set()

    async with hub_with("spawn", action, min_workers=1, max_workers=2) as hub:
        await hub.publish("spawn", 1)
        await wait_until(lambda: len(traced.named("process spawn")) == 2)
        await trio.testing.wait_all_tasks_blocked()
        assert workers[1] is not workers[2]
        # the second worker, idle now, has no span of its own or anybody's
        assert not workers[2].context.run(trace.get_current_span).get_span_context().is_valid
    first, second = sorted(traced.named("process spawn"), key=lambda span: span.start_time or 0)
    assert second.parent is None and ids(second)[0] != ids(first)[0]


async def test_a_lazy_group_started_from_inside_a_run_does_not_inherit_its_span(traced: Traced) -> None:
    from actionhub import WorkerTemplateRegistry

    registry = WorkerTemplateRegistry()
    supervisors: list[trio.lowlevel.Task] = []

    @registry.action("later")
    async def later(job: Job) -> None:
        pass

    async def first(job: Job) -> None:
        await job.hub.publish("later", 1)  # the lazy group starts in this run's task

    hub = ActionHub(registry=registry)
    hub.bind("first", first)
    async with hub.running():
        await hub.publish("first", 1)
        await wait_until(lambda: len(traced.named("process later")) == 1)
        supervisors = [t for t in _tasks() if t.name.endswith("_supervise")]
        assert supervisors
        for task in supervisors:
            assert not task.context.run(trace.get_current_span).get_span_context().is_valid


def _tasks() -> list[trio.lowlevel.Task]:
    found, todo = [], [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        found.append(task)
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return found


async def test_without_a_tracer_provider_nothing_is_traced() -> None:
    assert tracing.tracer() is None, "a global tracer provider is set in the test process"
    seen: list[Message] = []
    done = trio.Event()

    async def action(job: Job) -> None:
        seen.append(job.message)
        done.set()

    async with hub_with("plain", action) as hub:
        await hub.publish("plain", 1, headers={"k": "v"})
        await done.wait()
    assert seen[0].headers == {"k": "v"}


LATE_PROVIDER = """
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from actionhub import ActionHub

async def main():
    hub = ActionHub()
    seen = []

    @hub.action("t")
    async def t(job):
        seen.append("traceparent" in job.headers)

    async with hub.running():
        await hub.publish("t", 1)  # no provider yet
        await trio.testing.wait_all_tasks_blocked()
        trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))  # a real one, recording nothing
        await hub.publish("t", 2)
        await trio.testing.wait_all_tasks_blocked()
    print(seen)

trio.run(main)
"""


def test_a_global_provider_set_while_the_hub_runs_turns_tracing_on() -> None:
    """In a process of its own: a process sets its global provider once."""
    done = subprocess.run(
        [sys.executable, "-c", LATE_PROVIDER], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[False, True]"


# ---------------------------------------------------------------------- logs


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(TraceContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_log_records_carry_the_trace_and_span_ids(traced: Traced) -> None:
    records = Records()
    logger = logging.getLogger("tests.tracing")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    done = trio.Event()

    async def action(job: Job) -> None:
        logger.info("charging")
        done.set()

    try:
        async with hub_with("logged", action) as hub:
            await hub.publish("logged", 1)
            await done.wait()
        logger.info("outside")
    finally:
        logger.removeHandler(records)
    (run,) = traced.named("process logged")
    inside, outside = records.records
    trace_id, span_id = ids(run)
    assert (getattr(inside, "trace_id", None), getattr(inside, "span_id", None)) == (
        f"{trace_id:032x}",
        f"{span_id:016x}",
    )
    assert not hasattr(outside, "trace_id") and not hasattr(outside, "span_id")


def test_configure_logging_puts_the_ids_in_each_line(traced: Traced) -> None:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("json", stream=out)
    try:
        with traced.tracer.start_as_current_span("work") as span:
            logging.getLogger("tests.tracing").warning("inside")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    line = orjson.loads(out.getvalue().splitlines()[-1])
    context = span.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


# ---------------------------------------------------------------------- clients, across processes


async def test_a_client_publish_is_the_parent_of_the_run(traced: Traced, redis_url: str) -> None:
    done = trio.Event()

    async def action(job: Job) -> None:
        done.set()

    hub = ActionHub(redis_url, name="traced")
    hub.bind("client.t", action)
    async with hub.running(), TrioClient(redis_url) as client:
        with traced.tracer.start_as_current_span("caller") as caller:
            await client.publish("client.t", 1)
        await done.wait()
        await client.publish_many("client.t", [2, 3])
        await wait_until(lambda: len(traced.named("process client.t")) == 3)
    single, batch = sorted(traced.named("send client.t"), key=lambda span: span.start_time or 0)
    assert parent_of(single) == caller.get_span_context().span_id
    assert batch.attributes and batch.attributes["messaging.batch.message_count"] == 2
    parents = sorted(parent_of(run) or 0 for run in traced.named("process client.t"))
    assert parents == sorted([ids(single)[1], ids(batch)[1], ids(batch)[1]])


def test_a_client_publish_cancelled_midway_ends_its_span_failed(traced: Traced) -> None:
    """An asyncio service whose request is cancelled (its caller went away) while publishing."""
    import asyncio
    import socket

    from actionhub.client import AsyncClient

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)

        async def publish_and_cancel() -> None:
            async with AsyncClient(f"redis://127.0.0.1:{silent.getsockname()[1]}/0") as client:
                task = asyncio.ensure_future(client.publish("stuck", 1))
                while True:  # until the client is connected, and so waits for an answer
                    try:
                        connection, _ = silent.accept()
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
                with connection:
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    (send,) = traced.named("send stuck")  # ended when cancelled, not at aclose
                assert send.status.status_code is StatusCode.ERROR
                assert send.attributes is not None and send.attributes["error.type"] == "CancelledError"

        asyncio.run(publish_and_cancel())


NOT_INSTALLED = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed
import trio
from actionhub import ActionHub, tracing

async def main():
    hub = ActionHub()
    seen = []

    @hub.action("t")
    async def t(job):
        seen.append(dict(job.headers))

    async with hub.running():
        await hub.publish("t", 1)
        await trio.testing.wait_all_tasks_blocked()
    print(seen, tracing.tracer())

import trio.testing
trio.run(main)
"""


def test_without_opentelemetry_installed_nothing_is_traced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"},  # set fleet-wide
    )
    assert done.stdout.strip() == "[{}] None"


def test_a_publish_that_cannot_reach_redis_fails_its_span(traced: Traced) -> None:
    with Client(f"redis://127.0.0.1:{free_port()}/0") as client, pytest.raises(BusError):
        client.publish("nowhere", 1)  # nothing listens there
    (send,) = traced.named("send nowhere")
    assert send.status.status_code is StatusCode.ERROR
    assert [event.name for event in send.events] == ["exception"]


class ServerSpans:
    """What an HTTP instrumentation does: a SERVER span around each request, current in it."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER):
            await self.app(scope, receive, send)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
async def test_one_trace_from_an_asyncio_service_through_a_hub_process_and_back(
    traced: Traced, redis_url: str, tmp_path: Path
) -> None:
    """examples/fastapi_app.py (asyncio, `AsyncClient.request`) asks a hub in another process,
    whose spans the SDK there writes to a file: one trace, each span the child of the last."""
    from fastapi.testclient import TestClient

    from examples import fastapi_app

    spans_file = tmp_path / "hub-spans.jsonl"
    hub = await trio.to_thread.run_sync(_start_traced_hub, redis_url, spans_file)
    try:

        def order_now() -> tuple[int, Any]:
            app = ServerSpans(fastapi_app.create_app(redis_url), traced.tracer)
            with TestClient(app) as http:
                response = http.post("/orders/now", json={"id": 2})
                return response.status_code, response.json()

        answer = await trio.to_thread.run_sync(order_now)

        def hub_spans() -> list[dict[str, Any]]:
            text = spans_file.read_bytes() if spans_file.exists() else b""
            return [orjson.loads(line) for line in text.splitlines()]

        await wait_until(lambda: len(hub_spans()) == 2)
    finally:
        hub.terminate()
        await trio.to_thread.run_sync(hub.wait, 30)
    assert answer == (200, {"charged": {"id": 2}})
    (server,) = traced.named("POST /orders/now")
    (request,) = traced.named("send orders.charge")
    spans = {span["name"]: span for span in hub_spans()}
    run, reply = spans["process orders.charge"], spans["send"]
    trace_id = f"{ids(server)[0]:032x}"
    assert {f"{ids(request)[0]:032x}", run["trace_id"], reply["trace_id"]} == {trace_id}
    assert parent_of(request) == ids(server)[1]
    assert run["parent_id"] == f"{ids(request)[1]:016x}"  # across processes, through Redis
    assert reply["parent_id"] == run["span_id"]
    assert (run["kind"], reply["kind"]) == ("CONSUMER", "PRODUCER")
    assert run["attributes"]["messaging.consumer.group.name"] == "orders.charge"
    assert run["attributes"]["messaging.message.id"] == request.attributes["messaging.message.id"]  # type: ignore[index]


def _start_traced_hub(url: str, spans_file: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.traced_hub", url, str(spans_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert process.stdout is not None
    if process.stdout.readline() != b"ready\n":
        process.kill()
        raise AssertionError(f"the traced hub did not start (exit {process.wait()})")
    return process

"""A hub in a process of its own, traced by the OpenTelemetry SDK, for tests/test_tracing.py.

    python -m tests.traced_hub URL SPANS_FILE

Sets a global SDK tracer provider whose exporter appends each finished span to SPANS_FILE as one
JSON object per line (ids in W3C hex), then serves action ``orders.charge``, which replies
``{"charged": payload}``. Prints ``ready`` once serving; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

import orjson
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from actionhub import ActionHub, Job
from tests.hub_process import serve_until_terminated


def span_document(span: ReadableSpan) -> dict[str, Any]:
    """What the test reads of a span."""
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": None if span.parent is None else format(span.parent.span_id, "016x"),
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "status": span.status.status_code.name,
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file, one JSON line each, flushed at once."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self.out.write(orjson.dumps(span_document(span)) + b"\n")
        self.out.flush()
        return SpanExportResult.SUCCESS


async def serve(url: str) -> None:
    hub = ActionHub(url, name="traced")

    @hub.action("orders.charge")
    async def charge(job: Job) -> None:
        await job.reply({"charged": job.payload})

    await serve_until_terminated(hub)


def main() -> None:
    url, spans_file = sys.argv[1:3]
    with open(spans_file, "ab") as out:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(out)))
        trace.set_tracer_provider(provider)  # set after actionhub's import, as a service may
        trio.run(serve, url)
        provider.shutdown()


if __name__ == "__main__":
    main()

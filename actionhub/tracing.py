"""OpenTelemetry tracing, the ``actionhub[otel]`` extra: one trace from a publish to the run of
its action and on to the reply.

Publishing (`ActionHub.publish`, ``publish_many``, ``request``, a job's reply, every
`actionhub.client` flavour) starts a PRODUCER span ``send <topic>`` and writes its context into
the message's headers (W3C ``traceparent``/``tracestate``, through the globally configured
propagator). Each run of an action is a CONSUMER span ``process <topic>`` whose parent is that
context, current while the action runs: its replies, its publishes and its own spans are its
children. Retries, dead letters, timeouts and panics are events and statuses of that span.
Attribute names are OpenTelemetry's messaging conventions (``messaging.*``) plus ``actionhub.*``.

Nothing here costs anything unless ``opentelemetry-api`` is installed *and* a tracer provider is
set: the global one (``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument``),
at any time, even after actionhub was imported, or `use_tracer_provider`. Until then every hook
returns at once and no header is added. This module imports opentelemetry only once somebody
else has (no provider can be set before) or ``OTEL_PYTHON_TRACER_PROVIDER`` names one, so
``import actionhub`` never pays for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .message import Message

__all__ = ["TRACER_NAME", "Processing", "current_ids", "tracer", "use_tracer_provider"]

#: the instrumentation scope of actionhub's spans
TRACER_NAME = "actionhub"
SYSTEM = "actionhub"

T = TypeVar("T")
Y = TypeVar("Y")

# opentelemetry.trace loads a provider named by this variable on first use, not on import
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

_tracer: Tracer | None = None  # once found: a global provider, once set, is never replaced
_trace_api: Any = None  # opentelemetry.trace, once imported (by anybody): where the global lives
_idle: object = None  # a global provider that hands out no-op spans (NoOpTracerProvider)
_missing = False  # opentelemetry could not be imported: never try again


def tracer() -> Tracer | None:
    """The tracer actionhub's spans come from, or None while tracing is off (no opentelemetry,
    or no provider yet). Cheap enough to ask per message: that is what it is for."""
    if _tracer is not None:
        return _tracer
    api = _trace_api
    if api is None:
        if _missing or ("opentelemetry.trace" not in sys.modules and not _PROVIDER_FROM_ENV):
            return None  # nobody imported it (or it is blocked): no provider can be set
        return _look()
    # opentelemetry.trace's own global, read as get_tracer_provider() would, without the call
    provider = api._TRACER_PROVIDER
    if provider is None or provider is _idle:
        return None
    return _look()


def _look() -> Tracer | None:
    global _tracer, _trace_api, _idle, _missing
    try:
        from opentelemetry import trace
    except ImportError:  # OTEL_PYTHON_TRACER_PROVIDER set where opentelemetry is not installed
        _missing = True
        return None
    provider = trace.get_tracer_provider()  # loads the provider OTEL_PYTHON_TRACER_PROVIDER names
    if hasattr(trace, "_TRACER_PROVIDER"):  # else every call comes here: slower, still right
        _trace_api = trace
    if isinstance(provider, trace.NoOpTracerProvider):
        _idle = provider
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    _tracer = _tracer_of(provider)
    return _tracer


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Send actionhub's spans to ``provider`` instead of the global one (tests; a service whose
    providers are its own); None: back to the global provider."""
    global _tracer
    _tracer = None if provider is None else _tracer_of(provider)


def _tracer_of(provider: TracerProvider) -> Tracer:
    from importlib.metadata import PackageNotFoundError, version

    global _api
    _api = _Api()
    try:
        release: str | None = version("actionhub")
    except PackageNotFoundError:
        release = None
    return provider.get_tracer(TRACER_NAME, release)


class _Api:
    """What the hooks call, bound once tracing turns on (``opentelemetry.propagate`` reads its
    entry points on import: only then)."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace

        self.trace = trace
        self.attach = context.attach
        self.detach = context.detach
        self.inject = propagate.inject
        self.extract = propagate.extract
        self.in_context = trace.set_span_in_context
        self.producer = trace.SpanKind.PRODUCER
        self.consumer = trace.SpanKind.CONSUMER
        self.error = trace.StatusCode.ERROR
        self.status = trace.Status
        self.root = context.Context()


_api: _Api | None = None  # set with the tracer


# ---------------------------------------------------------------------- producing


def start_send(
    topic: str,
    message_id: str | None = None,
    *,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    delay: float | None = None,
    batch: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Span | None:
    """A PRODUCER span for a message about to be written, or None while tracing is off: a child
    of the context in its ``headers`` if they carry one (the publisher's own), else of the
    current span. ``in_reply_to``: the message is a reply to that one (to a temporary
    destination: the span is plain ``send``); ``batch``: it stands for that many."""
    found = tracer()
    if found is None:
        return None
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if batch is not None:
        attributes["messaging.batch.message_count"] = batch
    if in_reply_to is not None:
        attributes["messaging.message.conversation_id"] = in_reply_to
        attributes["messaging.destination.temporary"] = True
        attributes["messaging.destination.anonymous"] = True
    elif reply_to is not None:
        attributes["messaging.message.conversation_id"] = message_id
    if delay:
        attributes["actionhub.delay"] = delay
    assert _api is not None
    name = "send" if in_reply_to is not None else f"send {topic}"
    return found.start_span(name, context=_parent(headers), kind=_api.producer, attributes=attributes)


def _parent(headers: Mapping[str, str] | None) -> Context | None:
    """The context a send builds on: the one in ``headers``, else the current one (None)."""
    if not headers or "traceparent" not in headers:
        return None
    assert _api is not None
    return _api.extract(headers)


async def publishing(
    message: Message, write: Callable[[Message], Awaitable[T]], *, delay: float | None = None
) -> T:
    """``write(message)``, traced: in a ``send`` span while tracing is on, the message carrying
    its context."""
    span = start_send(
        message.topic, message.id, reply_to=message.reply_to, delay=delay, headers=message.headers
    )
    if span is None:
        return await write(message)
    traced = attrs.evolve(message, headers=headers_with_context(span, message.headers))
    return await sent(span, write(traced))


def headers_with_context(span: Span, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` with ``span``'s context (``traceparent``, ``tracestate``, ``baggage``: what
    the propagator writes) in place of any they had: the span is the child of that one."""
    assert _api is not None
    carrier = dict(headers or {})
    _api.inject(carrier, context=_api.in_context(span, _parent(headers)))
    return carrier


async def sent(span: Span, write: Awaitable[T]) -> T:
    """Await ``write`` (the message going out) and end ``span``; an error, or a cancellation,
    fails the span."""
    try:
        return await write
    except BaseException as error:
        _fail(span, error)
        raise
    finally:
        span.end()


def sent_op(span: Span, op: Generator[Y, Any, T]) -> Generator[Y, Any, T]:
    """`sent` for a sans-I/O operation (`actionhub.client`): ``span`` ends with ``op`` (closed
    unfinished: its driver was cancelled). The span is never attached: a context must not
    outlive a ``yield``."""
    try:
        return (yield from op)
    except GeneratorExit:
        _fail(span, None)
        raise
    except BaseException as error:
        _fail(span, error)
        raise
    finally:
        span.end()


def _fail(span: Span, error: BaseException | None) -> None:
    """Fail ``span`` with ``error`` (None: it was cancelled)."""
    assert _api is not None
    kind = "cancelled" if error is None else type(error).__qualname__
    if error is not None:
        span.record_exception(error)
    span.set_attribute("error.type", kind)
    span.set_status(_api.status(_api.error, kind if error is None else f"{kind}: {error}"))


# ---------------------------------------------------------------------- consuming


class Processing:
    """The CONSUMER span of one run of an action: current while the action runs
    (`activate` .. `deactivate`), told the message's fate, ended by `end`."""

    __slots__ = ("_context", "_failed", "_token", "span")

    def __init__(self, span: Span, context: Context) -> None:
        self.span = span
        self._context = context
        self._token: object = None
        self._failed = False

    def activate(self) -> None:
        assert _api is not None
        self._token = _api.attach(self._context)

    def deactivate(self) -> None:
        if self._token is not None:
            assert _api is not None
            _api.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    def retry(self, delay: float, attempt: int) -> None:
        """The message runs again, as ``attempt``, in ``delay`` seconds."""
        self.span.add_event("retry", {"actionhub.retry.delay": delay, "actionhub.retry.attempt": attempt})

    def dead_letter(self, reason: str, outcome: str | None = None) -> None:
        """The message went to the dead letters: it will not run again. ``outcome``: the run's,
        when the action did not run."""
        if outcome is not None:
            self.outcome(outcome)
        self.span.add_event("dead_letter", {"actionhub.dead_letter.reason": reason})
        if not self._failed:  # a panic's status says more
            assert _api is not None
            self.span.set_attribute("error.type", "dead_letter")
            self.span.set_status(_api.status(_api.error, reason))

    def panic(self, error: BaseException) -> None:
        """The action raised (not `Retry`, not `Reject`)."""
        self._failed = True
        _fail(self.span, error)

    def timeout(self, seconds: float) -> None:
        """The action ran over its ``timeout`` of ``seconds``."""
        self.span.add_event("timeout", {"actionhub.timeout": seconds})

    def outcome(self, outcome: str) -> None:
        """How the run ended (`actionhub.supervision.runner.Outcome`, or ``dead_lettered`` or
        ``malformed`` when the action did not run)."""
        self.span.set_attribute("actionhub.outcome", outcome)

    def end(self) -> None:
        self.deactivate()
        self.span.end()


def start_process(message: Message, group: str, action: str) -> Processing | None:
    """The CONSUMER span of one run of ``action`` on ``message`` (for consumer group ``group``),
    child of the context in the message's headers (a root span if there is none, whatever is
    current in the worker); None while tracing is off."""
    found = tracer()
    if found is None:
        return None
    assert _api is not None
    headers = message.headers
    parent = _api.extract(headers, context=_api.root) if headers else _api.root
    span = found.start_span(
        f"process {message.topic}",
        context=parent,
        kind=_api.consumer,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": message.topic,
            "messaging.consumer.group.name": group,
            "messaging.message.id": message.id,
            "actionhub.action": action,
            "actionhub.attempt": message.attempt,
        },
    )
    return Processing(span, _api.in_context(span, parent))


def forget_span() -> None:
    """Drop the current span from this task's context, first thing in a long-lived task (a
    worker, a group's supervisor, a delayed publish) that whoever started it may have started
    from inside a run: the task copied that run's context, and would be part of its trace (its
    log lines, spans of its own) long after the run ended. Trio gives each task a copy of the
    context, so nobody else's changes."""
    if tracer() is None:
        return
    assert _api is not None
    if _api.trace.get_current_span().get_span_context().is_valid:
        _api.attach(_api.root)  # never detached: the task ends with it


# ---------------------------------------------------------------------- logs


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in W3C hex, or None without a valid span."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")

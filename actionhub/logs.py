"""Logging set-up for services: one line per event, with its structured fields.

actionhub logs through the standard `logging` module, with the event's fields passed as
``extra=`` (``hub``, ``group``, ``reason``, ...). `configure_logging` renders them either as text,
``2026-11-23T10:00:00.123Z WARNING actionhub.hub message  hub=a group=b``, or as one JSON object
per line (python-json-logger) for log shippers. A library should not configure logging: only
entry points (``actionhub run``, your service's main) call it.

With OpenTelemetry tracing on (`actionhub.tracing`), a record logged while a span is current
carries ``trace_id`` and ``span_id`` (W3C hex) as fields: `TraceContextFilter`, which
`configure_logging` installs on its handler; add it to a handler of your own with
``handler.addFilter(TraceContextFilter())``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Literal

from pythonjsonlogger.json import JsonFormatter

from .tracing import current_ids

#: Attributes every `logging.LogRecord` has; anything else on a record came in ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

_installed: logging.Handler | None = None


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields a record was given with ``extra=``."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (W3C hex) to each record logged while a valid span is
    current; lets every record through. Costs a dictionary look-up without opentelemetry."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger> <message>  key=value ...`` on one line (tracebacks follow)."""

    @staticmethod
    def converter(seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)  # log times in UTC, marked Z

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = fields_of(record)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # fields stay on the event's line
        pairs = " ".join(f"{key}={_quoted(value)}" for key, value in fields.items())
        return f"{head}  {pairs}{newline}{rest}"


def _quoted(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, the extra fields, exc_info."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure_logging(
    format: Literal["text", "json"] = "text", level: str | int = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as ``format`` lines.
    Calling it again replaces the handler it installed before. `ValueError` for an unknown level."""
    global _installed
    if isinstance(level, str) and not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(TextFormatter() if format == "text" else json_formatter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _installed = handler
    return handler

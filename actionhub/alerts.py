"""Escalation integrations, each usable as ``ActionHub(on_escalation=...)`` (alone or in a list).

* `log_escalation`: one structured log record per escalation (``actionhub.alerts`` logger).
* `EscalationStream`: appends each escalation to the bus's ``escalations`` stream (on Redis,
  ``XADD <prefix>escalations``, capped), which any alerting consumer in any language can read.
* `Webhook`: POSTs each escalation as JSON, with a timeout and retries; secrets in its URL never
  reach a log line.

Each sends `Escalation.as_dict`: hub, host, group, reason, error, error_type, traceback, the
protocols, restarts, at, the offending message and the ids of the messages handed back.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import httpx
import orjson
import trio

from .bus.url import redact
from .errors import ConfigurationError
from .supervision.escalation import Escalation
from .supervision.policy import Backoff

if TYPE_CHECKING:
    from .bus.base import Bus
    from .hub import ActionHub

log = logging.getLogger("actionhub.alerts")


def log_escalation(escalation: Escalation) -> None:
    """Log ``escalation`` as one ERROR record whose fields are its document (traceback included)."""
    document = escalation.as_dict()
    log.error(
        "escalation in group %s of hub %s: %s, %s",
        escalation.group,
        escalation.hub,
        escalation.reason,
        document["error"],
        extra={f"escalation_{key}": value for key, value in document.items()},
    )


class EscalationStream:
    """Append each escalation to ``stream`` on ``bus`` (default: the hub's own bus)."""

    def __init__(self, bus: Bus | None = None, *, stream: str = "escalations") -> None:
        self._bus = bus
        self._hub: ActionHub | None = None
        self.stream = stream

    def bind_hub(self, hub: ActionHub) -> None:
        """Called by the hub this is given to: without a bus of its own, the hub's is used."""
        self._hub = hub

    async def __call__(self, escalation: Escalation) -> None:
        bus = self._bus or (self._hub.bus if self._hub is not None else None)
        if bus is None:
            raise ConfigurationError("EscalationStream() without a bus must be given to an ActionHub")
        document = escalation.as_dict()
        await bus.record(
            self.stream,
            {
                "hub": escalation.hub,
                "group": escalation.group,
                "reason": escalation.reason,
                "error": str(document["error"] or ""),
                "at": repr(escalation.at),
                "document": orjson.dumps(document, default=repr).decode(),
            },
        )

    def __repr__(self) -> str:
        return f"EscalationStream(stream={self.stream!r})"


class Webhook:
    """POST each escalation's JSON document to ``url``.

    A transport error, a timeout, a 429 or a 5xx is retried up to ``retries`` times with
    ``backoff``; then the escalation is logged as undelivered. Give the callback enough time
    with the hub's ``escalation_timeout`` (default 30 s)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"a webhook URL must be http:// or https://, not {redact(url)!r}")
        if retries < 0 or timeout <= 0:
            raise ConfigurationError("a webhook needs retries >= 0 and timeout > 0")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff(min=0.5, max=5.0)
        self.headers = dict(headers or {})
        self._rng = random.Random()

    async def __call__(self, escalation: Escalation) -> None:
        body = orjson.dumps(escalation.as_dict(), default=repr)
        headers = {"content-type": "application/json", **self.headers}
        problem = ""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(1, self.retries + 2):
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as error:  # refused, reset, timed out: worth another try
                    problem = type(error).__name__
                else:
                    if response.is_success:
                        return
                    problem = f"HTTP {response.status_code}"
                    if response.status_code != 429 and response.status_code < 500:
                        break  # the receiver refuses this request: retrying will not help
                if attempt <= self.retries:
                    await trio.sleep(self.backoff.delay(attempt, self._rng))
        log.error(
            "webhook %s did not take the escalation of group %s: %s",
            redact(self.url),
            escalation.group,
            problem,
            extra={"webhook": redact(self.url), "group": escalation.group, "hub": escalation.hub},
        )

    def __repr__(self) -> str:
        return f"Webhook({redact(self.url)!r})"


__all__ = ["EscalationStream", "Webhook", "log_escalation"]

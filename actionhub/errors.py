"""Exceptions of actionhub: the ones actions raise on purpose, and the ones the hub raises."""

from __future__ import annotations


class ActionHubError(Exception):
    """Base class of every error actionhub raises itself."""


class ConfigurationError(ActionHubError, ValueError):
    """A hub, action or bus was configured with values that cannot work."""


class HubStopped(ActionHubError):
    """The hub is stopping or stopped: it accepts no more messages."""


class BusError(ActionHubError):
    """The transport could not do what was asked (the broker stayed unreachable, ...)."""


class Overloaded(ActionHubError):
    """A group's buffer stayed full for ``accept_wait`` seconds; the message was not accepted."""

    def __init__(self, group: str, accept_wait: float) -> None:
        super().__init__(f"group {group!r} is overloaded: its buffer stayed full for {accept_wait}s")
        self.group = group
        self.accept_wait = accept_wait


class MalformedMessage(ActionHubError, ValueError):
    """An envelope read from the wire is not a valid wire-format v1 message."""


class WorkerProcessDied(ActionHubError):
    """The OS process of an ``isolation="process"`` worker died while running a job: a signal, an
    exit, or its memory limit. ``exitcode`` is the process's (negative: the signal), if known."""

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


class ProcessActionError(ActionHubError):
    """The function of an ``isolation="process"`` action raised; the message carries the
    exception and traceback from its process (exceptions are not pickled across)."""


class Retry(Exception):
    """Raised by an action: try this message again later (after ``delay`` seconds, or the
    group's retry backoff). Not a panic; still bounded by ``max_attempts``."""

    def __init__(self, delay: float | None = None) -> None:
        super().__init__(delay)
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must be >= 0")
        self.delay = delay


class Reject(Exception):
    """Raised by an action: this message can never succeed; dead-letter it now. Not a panic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

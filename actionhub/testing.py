"""Helpers for testing code that uses actionhub (shipped in the package, like ``trio.testing``)."""

from __future__ import annotations

from .supervision.escalation import Escalation


class EscalationLog(list[Escalation]):
    """An escalation callback that records what it receives: ``ActionHub(on_escalation=log)``."""

    def __call__(self, escalation: Escalation) -> None:
        self.append(escalation)

    def reasons(self) -> list[str]:
        """The ``reason`` of each escalation received, in order."""
        return [e.reason for e in self]

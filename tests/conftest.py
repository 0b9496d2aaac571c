from __future__ import annotations

import pytest

from actionhub import Escalation


class EscalationLog(list[Escalation]):
    """Collects escalations; used as ``on_escalation=``."""

    def __call__(self, escalation: Escalation) -> None:
        self.append(escalation)

    def reasons(self) -> list[str]:
        return [e.reason for e in self]


@pytest.fixture
def escalations() -> EscalationLog:
    return EscalationLog()

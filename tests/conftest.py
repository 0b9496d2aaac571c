from __future__ import annotations

import pytest

from actionhub.testing import EscalationLog


@pytest.fixture
def escalations() -> EscalationLog:
    return EscalationLog()

"""The hub the dashboard's browser tests serve: ``actionhub run tests.dashboard_app:hub --bus URL``.

``DASHBOARD_APP_DIR`` is a directory: while ``broken`` exists in it, ``charge`` raises (its
messages end in the dead letters); each charge that went through appends ``charged <order>``
to ``charged`` there. ``render`` always raises an error made of its payload's ``note`` and
``attr``: markup, for the tests that it is shown as text.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from actionhub import ActionHub, Job
from actionhub.alerts import EscalationStream

hub = ActionHub(announce_interval=0.5, on_escalation=[EscalationStream()])
DIRECTORY = Path(os.environ.get("DASHBOARD_APP_DIR", "."))


@hub.action("work", max_workers=4)
async def work(job: Job) -> None:
    await trio.sleep(0.005)


@hub.action("charge", max_attempts=1, max_restarts=100)
async def charge(job: Job) -> None:
    order = job.payload["order"]
    if (DIRECTORY / "broken").exists():
        raise RuntimeError(f"card declined for order {order}")
    with open(DIRECTORY / "charged", "a") as charged:  # noqa: ASYNC230 - a line, in a test app
        charged.write(f"charged {order}\n")


@hub.action("render", max_attempts=1, max_restarts=100)
async def render(job: Job) -> None:
    raise RuntimeError(job.payload["note"] + job.payload["attr"])

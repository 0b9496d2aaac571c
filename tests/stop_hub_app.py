"""A hub whose ``fragile`` group stops it past its restart limit (``on_max_restarts="stop_hub"``),
for ``actionhub run tests.stop_hub_app:hub``: the process exits so that its supervisor restarts it."""

from __future__ import annotations

from actionhub import ActionHub, Job

hub = ActionHub(announce_interval=0.5)


@hub.action("fragile", max_restarts=0, on_max_restarts="stop_hub")
async def fragile(job: Job) -> None:
    raise ConnectionError(f"the database is gone ({job.payload})")


@hub.action("steady")
async def steady(job: Job) -> None:
    pass

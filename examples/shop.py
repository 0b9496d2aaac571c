"""The hub the README's CLI examples serve: ``actionhub run examples.shop:hub --bus redis://...``.

Three actions: ``orders.charge`` (a second of work per order), ``emails.send`` (replies to a
request) and ``invoices.render`` (raises on a negative total: a poison message that ends in the
dead letters). Escalations go to the log, to the Redis stream ``<prefix>escalations`` and, when
``SHOP_ALERT_WEBHOOK`` is set, to that URL.
"""

from __future__ import annotations

import os

import trio

from actionhub import ActionHub, Job
from actionhub.alerts import EscalationStream, Webhook
from actionhub.supervision.escalation import EscalationCallback

alerts: list[EscalationCallback] = [EscalationStream()]  # the hub logs every escalation itself
if os.environ.get("SHOP_ALERT_WEBHOOK"):
    alerts.append(Webhook(os.environ["SHOP_ALERT_WEBHOOK"]))

hub = ActionHub("redis://localhost:6379/0", on_escalation=alerts)


@hub.action("orders.charge", min_workers=1, max_workers=8)
async def charge(job: Job) -> None:
    await trio.sleep(1)  # the payment provider
    await job.reply({"charged": job.payload})  # answers a request (the Node example); else a no-op


@hub.action("emails.send", max_workers=4)
async def send_email(job: Job) -> None:
    await job.reply({"sent_to": job.payload["to"]})


@hub.action("invoices.render", max_attempts=2)
async def render_invoice(job: Job) -> None:
    if job.payload["total"] < 0:
        raise ValueError(f"negative total {job.payload['total']}")

"""Checked by mypy --strict in tests/test_payloads.py: typed jobs type-check end to end."""

from __future__ import annotations

import pydantic

from actionhub import ActionHub, Job
from actionhub.client import Client
from actionhub.message import JSON

hub = ActionHub()


class Charge(pydantic.BaseModel):
    order: int
    amount_cents: int


class Receipt(pydantic.BaseModel):
    charged: int


@hub.action("charge")
async def charge(job: Job[Charge]) -> None:
    cents: int = job.payload.amount_cents
    await job.reply(Receipt(charged=cents))


@hub.action("note")
async def note(job: Job) -> JSON:
    value: JSON = job.payload
    return value


def call(client: Client) -> int:
    receipt = client.request("charge", Charge(order=1, amount_cents=5), timeout=5, reply_type=Receipt)
    return receipt.charged

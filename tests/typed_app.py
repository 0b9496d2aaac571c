"""Typed actions for the payload tests and ``actionhub schema tests.typed_app:hub``."""

from __future__ import annotations

import dataclasses

import msgspec
import pydantic
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from actionhub import ActionHub, Job, SlaveTemplate

hub = ActionHub()
charged: list[Charge] = []


class Charge(pydantic.BaseModel):
    order: int
    amount_cents: int = pydantic.Field(gt=0)
    currency: str = "EUR"
    customer: str
    note: str | None = None


class Receipt(pydantic.BaseModel):
    order: int
    charged: int


class Shipment(msgspec.Struct):
    order: int
    address: str


@dataclasses.dataclass
class Refund:
    order: int
    cents: int


class Audit(TypedDict):
    who: str
    what: str


@hub.action("orders.charge", slaves=[SlaveTemplate("audit", lambda job: _audit(job), payload=Audit)])
async def charge(job: Job[Charge]) -> None:
    charged.append(job.payload)
    await job.reply(Receipt(order=job.payload.order, charged=job.payload.amount_cents))


async def _audit(job: Job[Audit]) -> None:
    pass


@hub.action("orders.ship")
async def ship(job: Job[Shipment]) -> None:
    pass


@hub.action("orders.refund", payload=Refund)
async def refund(job: Job[Refund]) -> None:
    pass


@hub.action("orders.note")
async def note(job: Job) -> None:  # untyped: any JSON
    pass

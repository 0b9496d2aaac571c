"""Checked by mypy --strict in tests/test_payloads.py: it must fail, on exactly these lines."""

from __future__ import annotations

import pydantic

from actionhub import Job


class Charge(pydantic.BaseModel):
    order: int


async def charge(job: Job[Charge]) -> str:
    print(job.payload.amount)  # error: "Charge" has no attribute "amount"
    name: str = job.payload.order  # error: incompatible types (int into str)
    return name

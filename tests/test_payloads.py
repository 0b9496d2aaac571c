"""Typed actions: payloads validated and decoded on delivery, invalid ones dead-lettered as
malformed (never run, never retried), model instances published and replied, ``reply_type``,
``actionhub schema``, and ``Job[T]`` under mypy --strict."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pydantic
import pytest
import trio

from actionhub import ActionHub, ConfigurationError, InvalidPayload, Job
from actionhub.client import TrioClient
from tests import typed_app
from tests.polling import wait_until
from tests.typed_app import Charge, Receipt, Refund, Shipment

ROOT = Path(__file__).parent.parent


async def test_a_valid_payload_arrives_as_the_model_and_an_invalid_one_is_dead_lettered(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = ActionHub()
    seen: list[Charge] = []

    @hub.action("charge")
    async def charge(job: Job[Charge]) -> None:
        seen.append(job.payload)

    async with hub.running():
        await hub.publish("charge", {"order": 1, "amount_cents": 250, "customer": "c-1"})
        await hub.publish("charge", Charge(order=2, amount_cents=99, customer="c-2"))  # a model
        await hub.publish("charge", {"order": "three", "amount_cents": -5, "customer": "c-3"})
        await trio.sleep(1)
        (letter,) = await hub.dead_letters("charge")
        stat = hub.group("charge").stats()
    assert seen == [
        Charge(order=1, amount_cents=250, customer="c-1"),
        Charge(order=2, amount_cents=99, customer="c-2"),
    ]
    assert letter.reason.startswith("malformed: invalid payload: order: Input should be a valid integer")
    assert "amount_cents: Input should be greater than 0" in letter.reason
    assert letter.message.payload == {"order": "three", "amount_cents": -5, "customer": "c-3"}
    assert (stat.total_malformed, stat.total_dead_lettered, stat.total_panics, stat.total_retried) == (
        1,
        1,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("payload_type", "good", "bad", "expected"),
    [
        (Shipment, {"order": 1, "address": "Main St"}, {"order": 1}, Shipment(1, "Main St")),
        (Refund, {"order": 1, "cents": 5}, {"order": 1, "cents": "five"}, Refund(1, 5)),
        (list[int], [1, 2, 3], [1, "two"], [1, 2, 3]),
    ],
    ids=["msgspec-struct", "dataclass", "list-of-int"],
)
async def test_other_payload_types(
    autojump_clock: trio.abc.Clock, payload_type: Any, good: Any, bad: Any, expected: Any
) -> None:
    hub = ActionHub()
    seen: list[Any] = []

    async def take(job: Job[Any]) -> None:
        seen.append(job.payload)

    hub.bind("take", take, payload=payload_type)
    async with hub.running():
        await hub.publish("take", good)
        await hub.publish("take", bad)
        await trio.sleep(1)
        (letter,) = await hub.dead_letters("take")
    assert seen == [expected]
    assert letter.reason.startswith("malformed: invalid payload: ")


async def test_replies_are_encoded_and_decoded_as_models(autojump_clock: trio.abc.Clock) -> None:
    hub = ActionHub()

    @hub.action("charge")
    async def charge(job: Job[Charge]) -> None:
        await job.reply(Receipt(order=job.payload.order, charged=job.payload.amount_cents))

    @hub.action("lie")
    async def lie(job: Job) -> None:
        await job.reply({"order": "not a number"})

    async with hub.running():
        order = Charge(order=7, amount_cents=1200, customer="c-7")
        receipt = await hub.request("charge", order, timeout=5, reply_type=Receipt)
        assert receipt == Receipt(order=7, charged=1200)
        raw = await hub.request("charge", order, timeout=5)  # without reply_type: the Message
        assert raw.payload == {"order": 7, "charged": 1200}
        with pytest.raises(InvalidPayload, match="charged: Field required"):
            await hub.request("lie", 1, timeout=5, reply_type=Receipt)


async def test_clients_publish_models_and_decode_replies(redis_url: str) -> None:
    hub = ActionHub(redis_url)
    seen: list[Charge] = []

    @hub.action("charge")
    async def charge(job: Job[Charge]) -> None:
        seen.append(job.payload)
        await job.reply(Receipt(order=job.payload.order, charged=job.payload.amount_cents))

    async with hub.running(), TrioClient(redis_url) as client:
        await client.publish("charge", Charge(order=1, amount_cents=5, customer="c"))
        receipt = await client.request(
            "charge", Charge(order=2, amount_cents=6, customer="c"), timeout=10, reply_type=Receipt
        )
        await wait_until(lambda: len(seen) == 2)
    assert receipt == Receipt(order=2, charged=6)
    assert [c.order for c in seen] == [1, 2]


def test_a_type_the_hub_cannot_resolve_or_use_is_refused_at_bind_time() -> None:
    hub = ActionHub()

    async def unresolvable(job: Job[NotDefinedAnywhere]) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(ConfigurationError, match="pass payload="):
        hub.bind("x", unresolvable)

    @dataclasses.dataclass
    class Local:
        n: int

    with pytest.raises(ConfigurationError, match="typed payloads are for actions in the hub's thread"):
        hub.bind("y", _process_job, payload=Local, isolation="process")
    with pytest.raises(ConfigurationError, match="pydantic cannot validate"):
        hub.bind("z", _process_job, payload=object())


def _process_job(payload: Any) -> None:
    pass


def test_actionhub_schema_prints_what_another_language_must_send() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("actionhub")), "schema", "tests.typed_app:hub"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    document = orjson.loads(result.stdout)
    charge = document["orders.charge"]
    assert charge["topic"] == "orders.charge"
    assert charge["payload"] == pydantic.TypeAdapter(Charge).json_schema()
    assert charge["slaves"]["orders.charge/slaves/audit"]["required"] == ["who", "what"]
    assert document["orders.ship"]["payload"] == msgspec.json.schema(Shipment)
    assert document["orders.refund"]["payload"]["properties"]["cents"] == {
        "title": "Cents",
        "type": "integer",
    }
    assert document["orders.note"]["payload"] is None  # untyped: any JSON
    assert typed_app.charged == []  # nothing ran


def test_typed_jobs_type_check_under_mypy_strict() -> None:
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--hide-error-context"]
    ok = subprocess.run([*mypy, "tests/typing_cases/typed_ok.py"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    bad = subprocess.run([*mypy, "tests/typing_cases/typed_bad.py"], cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in bad.stdout.splitlines() if ": error:" in line]
    assert bad.returncode == 1 and len(errors) == 2, bad.stdout
    assert '"Charge" has no attribute "amount"' in errors[0]
    assert 'expression has type "int", variable has type "str"' in errors[1]

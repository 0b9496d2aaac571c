"""Bad input at volume: hypothesis-generated documents, random bytes, missing fields, oversized and
deeply nested JSON, published with redis-py and with ``redis-cli --pipe`` among valid messages."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import orjson
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actionhub.errors import MalformedMessage
from actionhub.message import decode, json_schema
from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures, bus_url, scaled
from tests.chaos.harness import Hubs, Ledger, RedisView, envelope, percentile, wait_for

MAX_MESSAGE_BYTES = 8192

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
envelope_keys = st.sampled_from(["id", "payload", "headers", "reply_to", "created_at", "attempt"])
envelope_like = st.dictionaries(envelope_keys | st.text(max_size=6), json_values, max_size=6)
documents = (
    json_values.map(lambda value: json.dumps(value).encode())  # any int; Infinity, which orjson refuses
    | envelope_like.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
    | st.text(max_size=100).map(str.encode)
)


def generated(count: int) -> list[bytes]:
    """``count`` documents from hypothesis's strategies (valid ones included: the caller sorts)."""
    found: list[bytes] = []
    per_example = 100

    @settings(
        max_examples=-(-count // per_example),
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(documents, min_size=per_example, max_size=per_example))
    def collect(batch: list[bytes]) -> None:
        found.extend(batch)

    collect()
    return found[:count]


def is_malformed(raw: bytes) -> bool:
    """Whether the hub must dead-letter ``raw``; checked against the JSON Schema as well, so the
    schema users validate with and the decoder never disagree."""
    try:
        decode("work", raw, max_bytes=MAX_MESSAGE_BYTES)
        rejected = False
    except MalformedMessage:
        rejected = True
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        schema_valid = False
    else:
        schema_valid = jsonschema.Draft202012Validator(json_schema()).is_valid(document)
    if len(raw) <= MAX_MESSAGE_BYTES:
        assert rejected != schema_valid, f"decoder and schema disagree on {raw!r}"
    return rejected


def bad_entries(count: int, rng: random.Random) -> list[dict[bytes, bytes]]:
    """Stream entries (field -> value) that must all be dead-lettered."""
    entries = [{b"message": raw} for raw in generated(count) if is_malformed(raw)]
    while len(entries) < count:
        kind = rng.randrange(5)
        if kind == 0:
            entries.append({b"message": os.urandom(rng.randrange(200))})
        elif kind == 1:  # no 'message' field
            entries.append({rng.randbytes(rng.randrange(1, 10)).replace(b"group", b""): b"x"})
        elif kind == 2:  # over the size limit
            entries.append({b"message": b'{"payload": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'})
        elif kind == 3:  # nested deeper than the parser allows
            depth = rng.randrange(1100, 4000)
            entries.append({b"message": b'{"payload": ' + b"[" * depth + b"]" * depth + b"}"})
        else:
            entries.append({b"message": rng.choice([b"", b"null", b"[]", b'{"id": 1}', b"{"])})
    return entries[:count]


def resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def redis_cli_pipe(port: int, stream: str, entries: list[dict[bytes, bytes]]) -> None:
    """Publish with ``redis-cli --pipe``, as a shell script or another language's tool would."""
    commands = b"".join(
        resp(b"XADD", stream.encode(), b"*", *(part for item in fields.items() for part in item))
        for fields in entries
    )
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=commands, check=True, capture_output=True)


async def test_bad_input_at_volume(
    chaos_redis: RedisServer, hubs: Hubs, view: RedisView, figures: Figures
) -> None:
    """A clean phase (valid messages only) and a mixed phase (the same valid traffic plus the bad
    entries) through one hub, at a steady rate below its capacity: every valid message runs once,
    every bad one is dead-lettered with its reason and its bytes as received, and the valid
    messages' latency and the hub's memory are compared between the phases."""
    bad_total = scaled(10_000, 100_000)
    ticks = scaled(50, 200)
    valid_per_tick = 20
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    bad = bad_entries(bad_total, rng)
    url = bus_url(chaos_redis.url, max_message_bytes=MAX_MESSAGE_BYTES, max_dead_letters=10_000_000)
    hub = await hubs.start("hub", "--probe-every", "0.2", url=url)

    via_redis_cli = 0

    async def phase(first: int, bad_entries: list[dict[bytes, bytes]]) -> tuple[float, float]:
        """Publish the phase at a steady rate; its (start, end) in wall-clock time."""
        nonlocal via_redis_cli
        per_tick = -(-len(bad_entries) // ticks)
        started = time.time()
        for tick in range(ticks):
            ids = range(first + tick * valid_per_tick, first + (tick + 1) * valid_per_tick)
            batch = [{b"message": envelope(i)} for i in ids]
            batch += bad_entries[tick * per_tick : (tick + 1) * per_tick]
            rng.shuffle(batch)
            if tick % 4 == 0:
                await trio.to_thread.run_sync(redis_cli_pipe, chaos_redis.port, view.stream, batch)
                via_redis_cli += len(batch) - valid_per_tick
            else:
                await view.run(view.add_entries, batch)
            await trio.sleep(0.05)
        last = first + ticks * valid_per_tick

        async def done() -> bool:
            return not Ledger.read([hub.out]).missing(range(first, last))

        await wait_for(done, timeout=120, what="the valid messages")
        return started, time.time()

    clean = await phase(0, [])
    mixed = await phase(ticks * valid_per_tick, bad)
    valid_total = 2 * ticks * valid_per_tick

    async def all_dead_lettered() -> bool:
        return await view.run(view.client.xlen, view.dead) >= len(bad)

    await wait_for(all_dead_lettered, timeout=120, what="every bad entry in the dead letters")
    await wait_for(view.settled, timeout=30, what="no pending entries")
    ledger = Ledger.read([hub.out])
    assert not ledger.missing(range(valid_total)) and not ledger.duplicated()
    letters = await view.dead_letters()
    assert all(letter[b"reason"].startswith(b"malformed: ") for letter in letters)
    kept = collections.Counter(letter[b"message"] for letter in letters)
    sent = collections.Counter(
        entry.get(b"message", orjson.dumps({k.decode(errors="replace"): "x" for k in entry})) for entry in bad
    )
    assert kept == sent  # every bad entry kept as received (or, without 'message', its fields)
    reasons = collections.Counter(letter[b"reason"].decode().split(":")[1].strip() for letter in letters)

    listed = await trio.run_process(  # the operator's view of these letters works too
        [Path(sys.executable).with_name("actionhub"), "dead-letters", "list", "work", "--bus", url, "--json"],
        capture_stdout=True,
    )
    assert len(orjson.loads(listed.stdout)) == 100  # the CLI's default --limit

    clean_latency, mixed_latency = [], []
    for line in hub.out.read_bytes().splitlines():
        i, _, latency = line.split()
        (clean_latency if int(i) < ticks * valid_per_tick else mixed_latency).append(float(latency))
    samples = hub.probes()

    def peak_rss(window: tuple[float, float]) -> float:
        return max(s["rss"] for s in samples if window[0] <= s["t"] <= window[1]) / 2**20

    hub.signal(signal.SIGTERM)
    assert await hub.wait() == 0
    figures["seed"] = seed
    figures["valid messages (clean phase + mixed phase)"] = valid_total
    figures["bad entries"] = len(bad)
    figures["bad entries via redis-cli --pipe"] = via_redis_cli
    figures["dead-lettered with a reason"] = len(letters)
    figures["valid lost / run twice"] = (
        f"{len(ledger.missing(range(valid_total)))} / {len(ledger.duplicated())}"
    )
    figures["latency p50 clean / mixed (ms)"] = (
        f"{percentile(clean_latency, 50) * 1000:.2f} / {percentile(mixed_latency, 50) * 1000:.2f}"
    )
    figures["latency p99 clean / mixed (ms)"] = (
        f"{percentile(clean_latency, 99) * 1000:.2f} / {percentile(mixed_latency, 99) * 1000:.2f}"
    )
    figures["hub RSS peak clean / mixed (MiB)"] = f"{peak_rss(clean):.1f} / {peak_rss(mixed):.1f}"
    figures["most common reasons"] = ", ".join(f"{r} ({n})" for r, n in reasons.most_common(4))

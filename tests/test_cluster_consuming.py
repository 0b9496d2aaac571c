"""The consuming side on the cluster layout (a one-node cluster holding every slot, which refuses
what crosses slots as a cluster of many nodes does): the reader's tiers per slot, their doorbells,
lazy templates. What runs on both layouts is in the transport's own tests (``bus_url``)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import trio

from actionhub import ActionHub, Job, WorkerTemplateRegistry
from actionhub.bus.redis import scripts
from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.layout import ClusterKeys
from actionhub.bus.redis.scripts_slots import register, source
from tests.layouts import client_of, keys_of
from tests.polling import wait_until


async def test_topics_of_many_slots_are_waited_for_by_one_tier_per_slot(cluster_url: str) -> None:
    """A busy action is read by its own blocking XREADGROUP in its slot's tier; quiet ones of
    other slots (and of its own) wake meanwhile; every ring of every doorbell is acked."""
    keys = keys_of(cluster_url)
    assert isinstance(keys, ClusterKeys)
    quiet = [f"quiet.{n}" for n in range(12)]
    slots = {keys.slot_of(keys.stream(topic)) for topic in ["busy", *quiet]}
    assert len(slots) > 6  # the topics spread over the shards
    hub = ActionHub(f"{cluster_url}&block=0.5")
    ran: list[tuple[str, object]] = []

    def action(name: str) -> Any:
        async def run(job: Job) -> None:
            ran.append((name, job.payload))

        return run

    for name in ("busy", *quiet):
        hub.bind(name, action(name))
    async with hub.running():
        for n in range(36):
            await hub.publish("busy", n)
            if n % 3 == 2:  # a quiet topic wakes while the busy one is being read for
                await wait_until(lambda n=n: ("busy", n) in ran)
                await hub.publish(quiet[n // 3], n)
        await wait_until(lambda: len(ran) == 48)
        tiers = set(hub.bus.reader.tiers)  # type: ignore[attr-defined]
        client = client_of(cluster_url)
        doorbells = [key.decode() for key in client.scan_iter(f"{keys.prefix}{{*}}doorbell:*")]
        read_for = []
        for doorbell in doorbells:
            assert keys.slot_of(doorbell) in slots
            for group in client.xinfo_groups(doorbell):
                assert group["pending"] == 0, (doorbell, group)
                read_for.append(group["name"].decode())
    assert tiers == slots  # one tier per slot in use, not per topic, and no hot or cold
    assert "busy" in read_for  # its tier blocked in its XREADGROUP, with the doorbell's group
    assert sorted(p for name, p in ran if name == "busy") == list(range(36))
    assert sorted(p for name, p in ran if name != "busy") == list(range(2, 36, 3))


async def test_lazy_templates_start_on_a_backlog_and_on_a_first_keyed_message(cluster_url: str) -> None:
    registry = WorkerTemplateRegistry()
    ran: list[tuple[str, object]] = []

    @registry.action("backlog")
    async def backlog(job: Job) -> None:
        ran.append(("backlog", job.payload))

    @registry.action("keyed")
    async def keyed(job: Job) -> None:
        ran.append((job.key or "", job.payload))

    first = ActionHub(cluster_url, registry=registry)
    async with first.running():  # creates the templates' consumer groups, runs nothing
        pass
    async with ActionHub(cluster_url).running() as publisher:
        await publisher.publish("backlog", 0)
    hub = ActionHub(cluster_url, registry=registry)
    async with hub.running():
        await wait_until(lambda: ran == [("backlog", 0)])
        with trio.fail_after(10):
            await hub.publish("keyed", 1, key="k")  # the topic's partition streams appear now
        await wait_until(lambda: ran == [("backlog", 0), ("k", 1)])


def test_consuming_scripts_run_with_a_shebang_in_the_cluster_layout_only() -> None:
    """``#!lua`` makes Redis refuse an undeclared key (of another slot, say); the single layout
    keeps its scripts byte for byte."""
    single, cluster = Keys("app:"), ClusterKeys("app:")
    for script in (scripts.RENEW, scripts.TRIM, scripts.ABANDONED, scripts.CLAIM_LEASES, scripts.LIMIT):
        assert source(single, script) is script
        assert source(cluster, script).startswith("#!lua")
    assert source(cluster, scripts.TRIM).startswith("#!lua flags=allow-oom\n")  # trimming frees memory
    assert source(cluster, scripts.BACKLOG).startswith("#!lua flags=no-writes\n")
    assert source(cluster, scripts.HEARTBEAT).startswith("#!lua\n")


def test_a_shebang_script_refuses_an_undeclared_key_of_another_slot(cluster_url: str) -> None:
    keys = keys_of(cluster_url)
    stray = keys.stream("other")
    assert keys.slot_of(stray) != keys.slot_of(keys.members("orders", "g"))
    sneaky = register(client_of(cluster_url), keys, f"return redis.call('XLEN', '{stray}')")
    with pytest.raises(redis.ResponseError, match="same slot"):
        sneaky(keys=[keys.members("orders", "g")])

"""Partition routing, rendezvous assignment and partition leases (building blocks of ordering)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actionhub.bus.redis.keys import partition_of
from actionhub.bus.redis.ordered import PartitionLeases, assign
from tests.layouts import client_of, keys_of

members_st = st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=8)


def test_a_key_s_partition_is_crc32_so_any_language_can_compute_it() -> None:
    assert partition_of("123456789", 1 << 32) == 0xCBF43926  # the CRC-32 check value
    assert all(0 <= partition_of(f"order-{n}", 16) < 16 for n in range(1000))
    assert len({partition_of(f"order-{n}", 16) for n in range(1000)}) == 16


@given(members_st, st.integers(1, 64))
def test_assignment_is_total_and_the_same_whatever_the_order(members: set[str], partitions: int) -> None:
    owners = assign(members, partitions)
    assert set(owners) == set(range(partitions)) and set(owners.values()) <= members
    assert assign(sorted(members, reverse=True), partitions) == owners


@given(members_st, st.integers(1, 64))
def test_no_member_gets_more_than_its_even_share(members: set[str], partitions: int) -> None:
    loads = [list(assign(members, partitions).values()).count(m) for m in members]
    share, extra = divmod(partitions, len(members))
    assert sorted(loads) == [share] * (len(members) - extra) + [share + 1] * extra  # as even as it gets


@given(members_st, st.text(min_size=1, max_size=12), st.integers(1, 64))
def test_a_joining_member_gets_its_share(members: set[str], newcomer: str, partitions: int) -> None:
    after = assign(members | {newcomer}, partitions)
    if newcomer not in members:
        assert list(after.values()).count(newcomer) >= partitions // (len(members) + 1)


def test_a_join_moves_few_partitions_besides_the_newcomer_s() -> None:
    members = [f"hub-{n}" for n in range(4)]
    before = assign(members, 16)
    after = assign([*members, "hub-new"], 16)
    moved = [p for p in range(16) if before[p] != after[p]]
    taken = [p for p in moved if after[p] == "hub-new"]
    assert len(taken) >= 3 and len(moved) - len(taken) <= 3, (taken, moved)


@pytest.fixture
def leases(bus_url: str) -> PartitionLeases:
    """Leases of a group on either layout: in a cluster, every lease and the members of a group
    share the topic's slot (one script claims many)."""
    return PartitionLeases(client_of(bus_url), keys_of(bus_url), "orders", "g")


def test_members_lapse_by_the_redis_clock(leases: PartitionLeases) -> None:
    assert leases.heartbeat("hub-a", 30) == ["hub-a"]
    leases.client.zadd(leases.members_key, {"hub-dead": 0})  # lapsed long ago
    assert leases.heartbeat("hub-b", 30) == ["hub-a", "hub-b"]
    assert leases.client.zscore(leases.members_key, "hub-dead") is None


def test_a_lease_has_one_holder_who_alone_renews_or_releases_it(leases: PartitionLeases) -> None:
    assert leases.claim([3], "hub-a", 10) == {3}
    assert leases.claim([3], "hub-b", 10) == set()  # held
    assert leases.claim([3], "hub-a", 20) == {3}  # renewed
    assert 10_000 < leases.client.pttl(leases.lease_key(3)) <= 20_000
    assert leases.release([3], "hub-b") == 0  # not its lease
    assert leases.release([3], "hub-a") == 1
    assert leases.claim([3, 4], "hub-b", 10) == {3, 4}  # free again
    assert leases.claim([2, 3, 4, 5], "hub-a", 10) == {2, 5}  # only the free ones
    assert leases.claim([], "hub-a", 10) == set()


def test_a_member_that_leaves_gives_up_its_leases_and_its_membership(leases: PartitionLeases) -> None:
    leases.heartbeat("hub-a", 30)
    assert leases.heartbeat("hub-b", 30) == ["hub-a", "hub-b"]
    assert leases.claim([1, 2], "hub-a", 30) == {1, 2}
    leases.leave("hub-a", [1, 2])
    assert leases.heartbeat("hub-b", 30) == ["hub-b"]
    assert leases.claim([1, 2], "hub-b", 30) == {1, 2}

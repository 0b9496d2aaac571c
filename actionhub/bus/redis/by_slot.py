"""Grouping keys by cluster slot for the consuming side, sans I/O: in the cluster layout a
command, transaction or script may only touch keys of one slot (docs/design/cluster.md §6.3),
so what the single layout sends as one (an ``XREADGROUP`` over a group's streams, a script over
many streams) goes as one per slot, still in one round trip. In the single layout everything is
one group, in its order: nothing changes."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from .keys import Keys
from .layout import ClusterKeys

T = TypeVar("T")


def slot_key(keys: Keys) -> Callable[[str], Hashable]:
    """The key by which ``keys``' layout groups names: the slot in the cluster layout, else one
    for all."""
    if isinstance(keys, ClusterKeys):
        return keys.slot_of
    return lambda _: None


def by_slot(keys: Keys, items: Sequence[T], name: Callable[[T], str]) -> list[list[T]]:
    """``items`` grouped by the slot of their key ``name(item)`` (one group in the single layout),
    each group in the items' order, the groups in the order of their first item."""
    slot = slot_key(keys)
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(slot(name(item)), []).append(item)
    return list(groups.values())


def chunks_by_slot(keys: Keys, items: Sequence[T], name: Callable[[T], str], size: int) -> list[list[T]]:
    """`by_slot`, each group cut into chunks of at most ``size`` items."""
    return [
        group[start : start + size]
        for group in by_slot(keys, items, name)
        for start in range(0, len(group), size)
    ]


def same_slot(keys: Keys, a: str, b: str) -> bool:
    """Whether keys ``a`` and ``b`` may be touched together (always, in the single layout)."""
    slot = slot_key(keys)
    return slot(a) == slot(b)

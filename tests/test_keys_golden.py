"""The single-node key names, pinned byte for byte: every deployment's data lives under them, so
no change (the cluster layout included) may rename one. A new public `Keys` name must be added here."""

from __future__ import annotations

import re

import pytest

from actionhub.bus.redis.keys import Keys
from actionhub.errors import ConfigurationError
from actionhub.message import check_topic

#: (expression, name) for prefix ``app:``; the expressions read attributes of ``k``.
GOLDEN = [
    ("k.prefix", "app:"),
    ("k.stream('orders')", "app:orders"),
    ("k.partition('orders', 3)", "app:orders:p3"),
    ("k.partitions('orders')", "app:partitions:orders"),
    ("k.keyed_stream('orders', 'customer-7', 16)", "app:orders:p8"),
    ("k.dead('orders')", "app:dead:orders"),
    ("k.delayed", "app:delayed"),
    ("k.delayed_of('app:orders:p3')", "app:delayed"),
    ("k.delayed_sets()", ("app:delayed",)),
    ("k.progress('orders', 'billing', 'm-1')", "app:progress:orders:billing:m-1"),
    ("k.reply_prefix", "app:reply:"),
    ("k.hub('hub-a')", "app:hub:hub-a"),
    ("k.hubs", "app:hub:*"),
    ("k.control", "app:control"),
    ("k.events('escalations')", "app:escalations"),
    ("k.doorbell('hub-a@host:12:hot')", "app:doorbell:hub-a@host:12:hot"),
    ("k.doorbell('hub-a@host:12:hot', near='app:orders')", "app:doorbell:hub-a@host:12:hot"),
    ("k.members('orders', 'billing')", "app:members:orders:billing"),
    ("k.lease('orders', 'billing', 3)", "app:lease:orders:billing:3"),
    ("k.status('m-1')", "app:status:m-1"),
    ("k.status_bell('m-1')", "app:bell:m-1"),
    ("k.keeps_results('orders')", "app:keep:orders"),
    ("k.results_group('orders')", "app:keepgroup:orders"),
    ("k.dedupe('orders', 'invoice-42')", "app:dedupe:orders#invoice-42"),
    ("k.dedupe('orders', 'invoice-42', target='app:orders:p3')", "app:dedupe:orders#invoice-42"),
    ("k.durable_mark()", "app:#mark"),
    ("k.durable_mark('orders')", "app:#mark:orders"),
    ("k.durable_mark('orders', target='app:orders:p3')", "app:#mark:orders"),
    ("k.schedule('nightly')", "app:schedule:nightly"),
    ("k.schedule('nightly', topic='orders')", "app:schedule:nightly"),
    ("k.schedules", "app:schedule:*"),
    ("k.schedule_name('app:schedule:nightly')", "nightly"),
    (
        "k.limits('orders', 'billing')",
        tuple(f"app:limit:orders:billing:{n}" for n in ("rate", "slots", "waiting", "spec")),
    ),
    ("k.limit_reply('orders', 'billing', 'hub-a')", "app:limit:orders:billing:reply:hub-a"),
    ("k.layout", "app:layout"),
]


def test_single_node_names_are_pinned() -> None:
    k = Keys("app:")
    for expression, name in GOLDEN:
        assert eval(expression, {"k": k}) == name, expression


def test_the_default_prefix() -> None:
    assert Keys().stream("orders") == "actionhub:orders"
    assert Keys().delayed == "actionhub:delayed"


def test_reply_lists_are_fresh_names_under_the_reply_prefix() -> None:
    k = Keys("app:")
    first, second = k.new_reply(), k.new_reply()
    assert re.fullmatch(r"app:reply:[0-9a-f]{24}", first) and first != second


def test_no_mark_is_a_topics_stream() -> None:
    """A mark's ``SET`` must never replace a stream: ``#`` is in no topic."""
    k = Keys("app:")
    with pytest.raises(ConfigurationError):
        check_topic(k.durable_mark("orders")[len("app:") :])
    with pytest.raises(ConfigurationError):
        check_topic(k.durable_mark()[len("app:") :])


def test_every_public_name_is_pinned() -> None:
    public = {name for name in dir(Keys) if not name.startswith("_")} - {"new_reply"}
    pinned = {re.match(r"k\.(\w+)", expression)[1] for expression, _ in GOLDEN}  # type: ignore[index]
    assert public == pinned

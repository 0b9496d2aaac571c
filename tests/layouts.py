"""Tests that run on both key layouts (the ``bus_url`` fixture): the names and a client of the
bus a URL names, whichever layout and server it has."""

from __future__ import annotations

from typing import Any

import pytest

from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.layout import keys_for
from actionhub.bus.redis.options import connect, split_url
from tests import cluster_stopgap


def keys_of(url: str) -> Keys:
    """The key names of the bus at ``url``: `Keys`, or `ClusterKeys` in the cluster layout."""
    return keys_for(split_url(url)[1])


def client_of(url: str) -> Any:
    """A redis-py client of the bus at ``url`` (a `RedisCluster` for a ``redis+cluster://`` one)."""
    return connect(*split_url(url))


@pytest.fixture(name="layouts")
def layouts_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test on the cluster layout needs until the publish side is merged (cluster_stopgap)."""
    monkeypatch.setattr(cluster_stopgap.RedisBusBase, "_move_due", cluster_stopgap._move_due)

"""Tests that run on both key layouts (the ``bus_url`` fixture): the names and a client of the
bus a URL names, whichever layout and server it has, for assertions on Redis."""

from __future__ import annotations

from typing import Any

import attrs

from actionhub.bus.redis.keys import Keys
from actionhub.bus.redis.layout import keys_for
from actionhub.bus.redis.options import connect, split_url


@attrs.frozen
class OnRedis:
    """``client`` (redis-py: `redis.Redis` or `RedisCluster`) and ``keys`` of one bus URL."""

    client: Any
    keys: Keys


def on_redis(url: str) -> OnRedis:
    """The client and key names of bus URL ``url`` (close ``client`` when done)."""
    redis_url, options = split_url(url)
    return OnRedis(connect(redis_url, options), keys_for(options))


def keys_of(url: str) -> Keys:
    """The key names of the bus at ``url``: `Keys`, or `ClusterKeys` in the cluster layout."""
    return keys_for(split_url(url)[1])


def client_of(url: str) -> Any:
    """A redis-py client of the bus at ``url`` (a `RedisCluster` for a ``redis+cluster://`` one)."""
    return connect(*split_url(url))

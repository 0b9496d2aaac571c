"""A test's view of the keys of a bus URL in either layout (single node or cluster): a redis-py
client of the URL's servers and the URL's key names (`keys_for`), for assertions on Redis."""

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

"""One pub/sub channel subscription of a Redis bus, read from a thread (the control channel and
``mode=pubsub``'s groups). On a Redis Cluster redis-py's `ClusterPubSub` stays bound to the node
it chose: once that node dies it fails for good, so a subscription whose connection failed is
made again (after a refresh of the slot map) on its next read. A single node's `PubSub`
reconnects and subscribes again by itself."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
import redis.cluster


class Channel:
    """A subscription to ``channel`` on ``client`` (blocking calls: run them in a thread)."""

    def __init__(self, client: Any, channel: str) -> None:
        self.channel = channel
        self._client = client
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._pubsub: Any = None
        self._broken = False

    def subscribe(self) -> None:
        """Subscribe (once; again after a cluster node failed it, or when retried after a
        failure: the previous subscription is closed first)."""
        self._drop()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self.channel)

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message or None (`PubSub.get_message`)."""
        if self._broken:
            self._renew()
        try:
            item: dict[str, Any] | None = self._pubsub.get_message(timeout=timeout)
        except (redis.ConnectionError, redis.TimeoutError):
            self._broken = self._cluster
            raise
        return item

    def _drop(self) -> None:
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                old.close()

    def _renew(self) -> None:
        self._drop()
        self._client.nodes_manager.initialize()  # where the channel's node went (a failover)
        self.subscribe()
        self._broken = False

    def close(self) -> None:
        """Unsubscribe and let the connection go."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            pubsub.close()

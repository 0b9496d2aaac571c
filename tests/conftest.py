from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from actionhub.testing import EscalationLog, RedisCluster, RedisServer
from tests.servers import private_cluster, private_redis


@pytest.fixture
def escalations() -> EscalationLog:
    return EscalationLog()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session."""
    with private_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL with a key prefix of this test's own: no test sees another's keys."""
    return f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One private Redis Cluster for the session: one node holding every slot, which refuses
    what crosses slots (CROSSSLOT) as a cluster of many nodes does, at a fraction of the cost."""
    with private_cluster(primaries=1, replicas=0) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The session cluster's ``redis+cluster://`` URL with a key prefix of this test's own."""
    return f"{redis_cluster.url}?prefix=test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["redis", "cluster"])
def bus_url(request: pytest.FixtureRequest) -> str:
    """A test's bus URL, once on the session's single node and once on its cluster: a test that
    takes it proves a feature on both layouts."""
    fixture = "redis_url" if request.param == "redis" else "cluster_url"
    return str(request.getfixturevalue(fixture))

"""Fixtures of the chaos suite: a private redis-server per scenario (scenarios restart, pause and
kill it), hub processes, and the figures each scenario reports.

``ACTIONHUB_CHAOS=long`` runs the long version (the figures of docs/reliability.md);
``ACTIONHUB_CHAOS_REPORT=FILE`` also writes the figures there as JSON.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actionhub.testing import RedisServer
from tests.chaos.harness import Hubs, RedisView
from tests.servers import private_redis

LONG = os.environ.get("ACTIONHUB_CHAOS") == "long"
PREFIX = "chaos:"
_FIGURES: dict[str, dict[str, Any]] = {}


def scaled(short: Any, long: Any) -> Any:
    """The short (CI) or the long (by hand) size of a scenario."""
    return long if LONG else short


class Figures:
    """What one scenario measured; printed at the end of the run."""

    def __init__(self, scenario: str) -> None:
        self.values = _FIGURES.setdefault(scenario, {})

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = round(value, 3) if isinstance(value, float) else value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    chaos = Path(__file__).parent
    for item in items:
        if chaos in Path(item.path).parents:
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"chaos figures ({'long' if LONG else 'short'} version)")
    for scenario, values in _FIGURES.items():
        terminalreporter.write_line(f"{scenario}:")
        for name, value in values.items():
            terminalreporter.write_line(f"    {name:<44} {value}")
    report = os.environ.get("ACTIONHUB_CHAOS_REPORT")
    if report:
        Path(report).write_bytes(
            orjson.dumps({"long": LONG, "figures": _FIGURES}, option=orjson.OPT_INDENT_2)
        )


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name.removeprefix("test_"))


@pytest.fixture
def chaos_redis() -> Iterator[RedisServer]:
    """A redis-server of this scenario alone, append-only with fsync always."""
    with private_redis(appendonly=True) as server:
        yield server


def bus_url(base: str, visibility_timeout: float = 3.0, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    url = f"{base}?prefix={PREFIX}&visibility_timeout={visibility_timeout}&block=0.5"
    return f"{url}&{query}" if query else url


@pytest.fixture
def view(chaos_redis: RedisServer) -> Iterator[RedisView]:
    redis_view = RedisView(chaos_redis.url, PREFIX)
    yield redis_view
    redis_view.close()


@pytest.fixture
def hubs(chaos_redis: RedisServer, tmp_path: Path) -> Iterator[Hubs]:
    started = Hubs(bus_url(chaos_redis.url), tmp_path)
    yield started
    started.close()

"""``examples/publish_from_node.js`` beside ``actionhub run examples.shop:hub``, as the README
shows them: Node's ``redis`` package publishes a command and gets the action's reply."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actionhub.testing import RedisServer
from tests.polling import wait_until
from tests.servers import private_redis

ROOT = Path(__file__).parent.parent
ACTIONHUB = str(Path(sys.executable).with_name("actionhub"))


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("ACTIONHUB_REQUIRE_NODE") == "1":
            pytest.fail("node and npm are required here (ACTIONHUB_REQUIRE_NODE=1)", pytrace=False)
        pytest.skip("node and npm are not installed")
    return node, npm


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Node's redis package, installed from the npm registry into a directory of this session."""
    _, npm = _tools()
    prefix = tmp_path_factory.mktemp("node")
    subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel",
            "error",
            "--prefix",
            str(prefix),
            "redis@4",
        ],
        check=True,
        timeout=300,
    )
    return prefix / "node_modules"


@pytest.fixture
def shop_redis() -> Iterator[RedisServer]:
    with private_redis(appendonly=False) as server:  # the shop uses the default key prefix
        yield server


async def test_the_node_example_gets_its_reply_from_the_shop_hub(
    shop_redis: RedisServer, node_modules: Path, tmp_path: Path
) -> None:
    node, _ = _tools()
    log = tmp_path / "shop.log"
    with log.open("wb") as log_file:
        hub = await trio.lowlevel.open_process(
            [ACTIONHUB, "run", "examples.shop:hub", "--bus", shop_redis.url, "--name", "shop"],
            cwd=ROOT,
            stderr=log_file,
        )
        try:
            await wait_until(lambda: "hub shop ready" in log.read_text() or hub.poll() is not None)
            assert hub.returncode is None, log.read_text()
            env = {**os.environ, "REDIS_URL": shop_redis.url, "NODE_PATH": str(node_modules)}
            result = await trio.run_process(
                [node, "examples/publish_from_node.js"], cwd=ROOT, env=env, capture_stdout=True, check=False
            )
        finally:
            hub.kill()
            await hub.wait()
    out = result.stdout.decode()
    assert result.returncode == 0, out
    published, reply = out.splitlines()
    assert published.startswith("published ")
    assert reply.startswith("reply { charged: { id: 7, amount: 12.5 } } to "), out

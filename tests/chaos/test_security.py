"""The surface: a Redis ACL user with only what actionhub needs, wrong credentials, size and depth
limits, and input that would do harm if anything from the wire were evaluated."""

from __future__ import annotations

import base64
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import trio

from actionhub import ActionHub, Job
from actionhub.dashboard import app
from actionhub.errors import BusError
from actionhub.testing import RedisServer
from tests.chaos.conftest import Figures
from tests.polling import wait_until

ACTIONHUB = str(Path(sys.executable).with_name("actionhub"))
README = Path(__file__).parents[2] / "README.md"


def acl_rule() -> str:
    """The ACL rule the README gives operators, taken from the README itself."""
    found = re.search(r"^ACL SETUSER actionhub (.+)$", README.read_text(), re.MULTILINE)
    assert found, "the README shows no ACL SETUSER line"
    return found.group(1)


class Evil:
    """Unpickling this would create a file: a pickle payload that must stay inert bytes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


async def _cli(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process([ACTIONHUB, *args], capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_a_least_privilege_acl_user_runs_everything(
    chaos_redis: RedisServer, tmp_path: Path, figures: Figures
) -> None:
    """The README's ACL user (its commands only, keys and channels under the prefix only) runs a
    hub through work, retries, checkpoints, dead letters, replies, trimming, announcements,
    operator commands, limits, kept results, deduplicated publishes, schedules, the CLI and the
    dashboard; Redis's ACL log records no refusal."""
    admin = redis.Redis.from_url(chaos_redis.url)
    rule = acl_rule().replace("<password>", "s3cret")
    admin.execute_command("ACL", "SETUSER", "actionhub", *rule.split())
    url = f"redis://actionhub:s3cret@127.0.0.1:{chaos_redis.port}/0?visibility_timeout=2&block=0.5&trim_interval=1"
    done: list[Any] = []
    hub = ActionHub(url, name="least-privilege")

    @hub.action("work", max_workers=4)
    async def work(job: Job) -> None:
        done.append(job.payload)
        await job.reply({"ok": job.payload})

    @hub.action("fail", max_attempts=2, retry_backoff=(0.05, 0.1))
    async def fail(job: Job) -> None:
        await job.checkpoint({"attempt": job.attempt})  # saved, loaded on the retry, then cleared
        raise ValueError("no")

    ticks: list[Any] = []

    @hub.schedule("tick", every=1)
    @hub.action("ticked", keep_result=60, rate_limit="100/s", concurrency_limit=2)
    async def ticked(job: Job) -> str:
        ticks.append(job.payload)
        return "kept"

    async with hub.running():
        for i in range(20):
            await hub.publish("work", i)
        first = await hub.publish("ticked", "once", dedupe_key="k", dedupe_for=60)
        assert await hub.publish("ticked", "twice", dedupe_key="k", dedupe_for=60) == first
        assert await hub.result(first, timeout=10) == "kept"
        await wait_until(lambda: len(ticks) >= 2, timeout=20)  # the schedule fired too
        await hub.publish("fail", "x")
        await hub.publish("work", "later", delay=0.2)
        reply = await hub.request("work", "ask", timeout=10)
        assert reply.payload == {"ok": "ask"}
        await wait_until(lambda: len(done) == 22, timeout=20)
        await wait_until(lambda: hub.stats()[1].total_dead_lettered == 1, timeout=20)
        await trio.sleep(1.5)  # one trim and one lease renewal at least
        code, out, err = await _cli("stats", "--bus", url, "--json")
        assert code == 0, err
        assert "least-privilege" in out
        code, out, err = await _cli("scale", "work", "--min", "1", "--max", "6", "--bus", url)
        assert code == 0, err
        code, out, err = await _cli("schedules", "--bus", url)
        assert code == 0 and "tick" in out, err
        code, out, err = await _cli("status", first, "--bus", url)
        assert code == 0 and "done" in out, err
        code, out, err = await _cli("publish", "work", '"from the cli"', "--bus", url)
        assert code == 0, err
        code, out, err = await _cli("dead-letters", "requeue", "fail", "--bus", url)
        assert code == 0, err
        await wait_until(lambda: "from the cli" in done, timeout=20)
        dashboard = app(url)  # every page's reads, as that user
        async with dashboard.running():
            transport = httpx.ASGITransport(app=dashboard)
            async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as http:
                for path in [
                    "/api/overview",
                    "/api/group?name=work",
                    "/api/topic?name=work",
                    "/api/topic/messages?name=work",
                    "/api/dead-letters?topic=fail",
                    "/api/escalations",
                ]:
                    answer = await http.get(path)
                    assert answer.status_code == 200, (path, answer.text)
    refusals = admin.execute_command("ACL", "LOG")
    assert refusals == [], refusals
    figures["ACL user"] = "actionhub " + " ".join(part for part in rule.split() if not part.startswith(">"))
    figures["refusals in ACL LOG"] = len(refusals)


async def test_wrong_credentials_fail_clearly(chaos_redis: RedisServer, figures: Figures) -> None:
    admin = redis.Redis.from_url(chaos_redis.url)
    admin.execute_command("ACL", "SETUSER", "actionhub", "on", ">right", "~*", "&*", "+@all")
    url = f"redis://actionhub:wrong-password@127.0.0.1:{chaos_redis.port}/0"
    code, out, err = await _cli("stats", "--bus", url)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "wrong-password" not in err  # the URL is redacted
    assert "WRONGPASS" in err or "invalid username-password" in err
    hub = ActionHub(url)
    with pytest.raises(BusError, match="redis refused connect"):
        async with hub.running():
            pass  # pragma: no cover - never started
    figures["CLI with a wrong password"] = f"exit {code}: {err.strip()}"


async def test_limits_and_nothing_evaluated(
    chaos_redis: RedisServer, tmp_path: Path, figures: Figures
) -> None:
    """Oversized and too deeply nested documents are refused on publish and dead-lettered when
    written by others; pickles, code and Lua in payloads and headers stay inert strings; a reply
    address outside the prefix is refused (a reply is an LPUSH and an EXPIRE on that key)."""
    admin = redis.Redis.from_url(chaos_redis.url)
    admin.set("victim:key", "still here")
    admin.lpush("victim:list", "theirs")
    url = f"{chaos_redis.url}?max_message_bytes=4096"
    marker = tmp_path / "evaluated"
    evil_pickle = pickle.dumps(Evil(str(marker)))
    inert = [
        base64.b64encode(evil_pickle).decode(),
        evil_pickle.decode("latin-1"),
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        "'); redis.call('FLUSHALL') --",
        "{{7*7}} ${7*7} `touch " + str(marker) + "`",
    ]
    seen: list[Any] = []
    hub = ActionHub(url)

    @hub.action("inert")
    async def record(job: Job) -> None:
        seen.append((job.payload, job.headers))
        await job.reply("answer")

    stream = "actionhub:inert"
    nested = b'{"payload": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    async with hub.running():
        with pytest.raises(ValueError, match="over the limit of 4096"):
            await hub.publish("inert", "x" * 5000)
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            deep: list[Any] = []
            for _ in range(2000):
                deep = [deep]
            await hub.publish("inert", deep)
        for value in inert:
            await hub.publish("inert", value, headers={"h": value})
        admin.xadd(stream, {"message": nested})
        admin.xadd(stream, {"message": b'{"payload": "' + b"y" * 5000 + b'"}'})
        admin.xadd(stream, {"message": orjson.dumps({"payload": 1, "reply_to": "victim:list"})})
        admin.xadd(stream, {"message": orjson.dumps({"payload": 2, "reply_to": "victim:key"})})
        await wait_until(lambda: len(seen) == len(inert), timeout=20)
        await wait_until(lambda: admin.xlen("actionhub:dead:inert") == 4, timeout=20)
    assert seen == [(value, {"h": value}) for value in inert]
    assert not marker.exists()
    assert admin.get("victim:key") == b"still here" and admin.ttl("victim:key") == -1
    assert admin.lrange("victim:list", 0, -1) == [b"theirs"] and admin.ttl("victim:list") == -1
    reasons = [fields[b"reason"].decode() for _, fields in admin.xrange("actionhub:dead:inert")]
    assert reasons[0].startswith("malformed: not JSON: depth limit exceeded")
    assert reasons[1] == "malformed: message is 5015 bytes, over the limit of 4096"
    assert reasons[2:] == ["malformed: 'reply_to' must be a key under actionhub:reply:"] * 2
    figures["inert payloads and headers run as plain strings"] = len(inert)
    figures["dead-lettered: too deep, too big, foreign reply_to x2"] = len(reasons)

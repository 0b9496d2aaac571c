"""The dashboard's server: its JSON API over live hubs, its guard on changes, what it reads of
topics, and its sampler's rates (the pages themselves: tests/test_dashboard_browser.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import orjson
import pytest
import redis
import trio
from starlette.applications import Starlette
from starlette.routing import Mount

from actionhub import ActionHub, ConfigurationError, Job, MemoryBus, Reject
from actionhub.alerts import EscalationStream
from actionhub.dashboard import Dashboard, Sampler, app
from actionhub.inspect import HubSnapshot
from actionhub.testing import worker_stat
from tests.polling import wait_until
from tests.servers import private_redis

TOKEN = "s3cret-token-of-the-tests"
PAUSE = {"command": "pause", "group": "work"}
Http = httpx.AsyncClient
BASE = "http://dash.test"


def two_hubs(bus: MemoryBus) -> list[ActionHub]:
    hubs = []
    for name in ("hub-a", "hub-b"):
        hub = ActionHub(bus, name=name, announce_interval=0.05, on_escalation=[EscalationStream()])

        @hub.action("work", max_workers=2)
        async def work(job: Job) -> None:
            await trio.lowlevel.checkpoint()

        @hub.action("charge", max_attempts=1, max_restarts=100)
        async def charge(job: Job) -> None:
            raise RuntimeError(f"card {job.payload} declined")

        hubs.append(hub)
    return hubs


@asynccontextmanager
async def serving(dashboard: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as http:
        yield http


@asynccontextmanager
async def live_dashboard(
    token: str | None = TOKEN,
) -> AsyncIterator[tuple[list[ActionHub], httpx.AsyncClient]]:
    """Two hubs on one memory bus, and a dashboard of it (sampling 20 times a second)."""
    bus = MemoryBus()
    hubs = two_hubs(bus)
    dashboard = app(bus, token=token, interval=0.05)
    async with hubs[0].running(), hubs[1].running(), serving(dashboard) as http:
        yield hubs, http


async def poll(http: httpx.AsyncClient, path: str, ready: Callable[[Any], bool], timeout: float = 10) -> Any:
    """The document at ``path`` once ``ready`` says so."""
    with trio.fail_after(timeout):
        while True:
            document = (await http.get(path)).json()
            if ready(document):
                return document
            await trio.sleep(0.02)


def change(token: str | None = TOKEN, origin: str | None = BASE, **extra: str) -> dict[str, str]:
    headers = {"content-type": "application/json", **extra}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["origin"] = origin
    return headers


# --------------------------------------------------------------------------- reading


async def test_the_overview_shows_every_hub_and_group_with_counts_that_rise() -> None:
    async with live_dashboard() as (hubs, http):
        for i in range(20):
            await hubs[i % 2].publish("work", i)

        def processed_all(document: Any) -> bool:
            groups = {g["group"]: g for g in document["groups"]}
            return "work" in groups and groups["work"]["processed"] == 20

        overview = await poll(http, "/api/overview", processed_all)
    assert [h["hub"] for h in overview["hubs"]] == ["hub-a", "hub-b"]
    assert {g["group"] for h in overview["hubs"] for g in h["groups"]} == {"work", "charge"}
    work = next(g for g in overview["groups"] if g["group"] == "work")
    assert work["hubs"] == 2 and work["states"] == ["running"] and work["max_workers"] == 4
    per_hub = [g["processed"] for h in overview["hubs"] for g in h["groups"] if g["group"] == "work"]
    assert sum(per_hub) == 20 and overview["read_only"] is False


async def test_a_hub_that_stops_drops_out_of_the_overview() -> None:
    bus = MemoryBus()
    hubs = two_hubs(bus)
    async with hubs[0].running(), serving(app(bus, interval=0.05)) as http:
        async with hubs[1].running():
            await poll(http, "/api/overview", lambda d: len(d["hubs"]) == 2)
        overview = await poll(http, "/api/overview", lambda d: len(d["hubs"]) == 1)
    assert overview["hubs"][0]["hub"] == "hub-a"


async def test_the_group_page_lists_the_hubs_that_run_it() -> None:
    async with live_dashboard() as (_, http):
        group = await poll(http, "/api/group?name=work", lambda d: len(d["hubs"]) == 2)
        missing = (await http.get("/api/group?name=nothing")).json()
    assert group["topic"] == "work" and {h["hub"] for h in group["hubs"]} == {"hub-a", "hub-b"}
    assert set(group["history"]) == {"at", "processed", "failed", "workers", "buffered"}
    assert missing["hubs"] == [] and missing["topic"] is None


async def test_dead_letters_are_listed_requeued_and_purged() -> None:
    async with live_dashboard() as (hubs, http):
        for card in range(3):
            await hubs[0].publish("charge", card)
        listing = await poll(http, "/api/dead-letters?topic=charge", lambda d: len(d["letters"]) == 3)
        letter = listing["letters"][0]
        assert "declined" in letter["error"] and "Traceback" in letter["traceback"]
        assert letter["attempts"] == 1 and letter["envelope"]["payload"] in (0, 1, 2)
        ids = [d["id"] for d in listing["letters"]]
        purged = await http.post(
            "/api/dead-letters/purge", json={"topic": "charge", "ids": ids[:1]}, headers=change()
        )
        assert purged.json() == {"count": 1}
        requeued = await http.post(
            "/api/dead-letters/requeue", json={"topic": "charge", "ids": None}, headers=change()
        )
        assert requeued.json() == {"count": 2}
        # they run again (and fail again: back in the dead letters, with new ids)
        again = await poll(http, "/api/dead-letters?topic=charge", lambda d: len(d["letters"]) == 2)
    assert not {d["id"] for d in again["letters"]} & set(ids)


async def test_escalations_come_newest_first_with_traceback_and_message() -> None:
    async with live_dashboard() as (hubs, http):
        for card in range(3):
            await hubs[0].publish("charge", card)
            await poll(http, "/api/escalations", lambda d, seen=card + 1: len(d["escalations"]) == seen)
        document = (await http.get("/api/escalations")).json()
    escalations = document["escalations"]
    assert [e["offending_message"]["payload"] for e in escalations] == [2, 1, 0]
    first = escalations[0]
    assert first["group"] == "charge" and first["reason"] == "panic" and "card 2 declined" in first["error"]
    assert "RuntimeError" in first["traceback"] and first["hub"] == "hub-a"


async def test_the_topic_page_on_memory_counts_pending_and_delayed() -> None:
    bus = MemoryBus()
    hub = ActionHub(bus, name="h")
    release = trio.Event()

    @hub.action("slow", max_workers=1, buffer=5)
    async def slow(job: Job) -> None:
        await release.wait()

    async with hub.running(), serving(app(bus, interval=0.05)) as http:
        for i in range(3):
            await hub.publish("slow", i)
        await hub.publish("slow", 99, delay=60)
        document = await poll(http, "/api/topic?name=slow", lambda d: d["info"]["groups"][0]["pending"] == 3)
        messages = (await http.get("/api/topic/messages?name=slow")).json()
        release.set()
    info = document["info"]
    assert info["delayed"] == 1 and info["delayed_due"] == 0 and 50 < info["next_due_in"] <= 60
    assert info["groups"][0]["name"] == "slow" and info["groups"][0]["consumers"] == 1
    assert messages == {"keeps_history": False, "messages": [], "next": None}


async def test_the_topic_page_on_redis_reads_groups_lag_delays_and_history(redis_url: str) -> None:
    hub = ActionHub(redis_url, name="h")
    release = trio.Event()

    @hub.action("slow", max_workers=1, buffer=2)
    async def slow(job: Job) -> None:
        await release.wait()

    @hub.action("rejects")
    async def rejects(job: Job) -> None:
        raise Reject("no")

    async with hub.running():
        for i in range(10):
            await hub.publish("slow", {"n": i})
        await hub.publish("slow", {"n": "later"}, delay=60)
        await hub.publish("rejects", 1)
        dashboard = app(redis_url, interval=0.05)
        async with dashboard.running(), serving(dashboard) as http:
            document = await poll(
                http, "/api/topic?name=slow", lambda d: sum(g["pending"] for g in d["info"]["groups"]) == 3
            )
            await poll(http, "/api/topic?name=rejects", lambda d: d["info"]["dead_letters"] == 1)
            first = (await http.get("/api/topic/messages?name=slow&count=4")).json()
            second = (
                await http.get("/api/topic/messages", params={"name": "slow", "from": first["next"]})
            ).json()
        release.set()
    info = document["info"]
    assert info["length"] == 10 and info["partitions"] == 0 and info["delayed"] == 1
    (group,) = info["groups"]
    assert group["name"] == "slow" and group["consumers"] == 1 and group["lag"] == 7
    assert group["oldest_pending_age"] is not None and group["oldest_pending_age"] >= 0
    assert [m["envelope"]["payload"]["n"] for m in first["messages"]] == [0, 1, 2, 3]
    assert [m["envelope"]["payload"]["n"] for m in second["messages"]] == [4, 5, 6, 7, 8, 9]
    assert second["next"] is None


async def test_an_ordered_topic_sums_its_partitions(redis_url: str) -> None:
    hub = ActionHub(redis_url, name="h")
    release = trio.Event()

    @hub.action("keyed", ordered=True, partitions=4)
    async def keyed(job: Job) -> None:
        await release.wait()

    async with hub.running():
        for key in "abcdef":
            await hub.publish("keyed", key, key=key)
        dashboard = app(redis_url)
        async with dashboard.running(), serving(dashboard) as http:
            document = await poll(
                http, "/api/topic?name=keyed", lambda d: sum(g["pending"] for g in d["info"]["groups"]) == 6
            )
        release.set()
    info = document["info"]
    assert (
        info["partitions"] == 4 and info["length"] == 6 and [g["name"] for g in info["groups"]] == ["keyed"]
    )


async def test_an_unreachable_bus_is_a_503_that_says_so() -> None:
    with private_redis() as server:
        dashboard = app(server.url, timeout=1)
        async with dashboard.running(), serving(dashboard) as http:
            assert (await http.get("/api/overview")).status_code == 200
            server.stop()
            with trio.fail_after(10):
                answer = await http.get("/api/dead-letters?topic=work")
    assert answer.status_code == 503 and "did not answer within 1 s" in answer.json()["error"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/topic?name=a%20b", "invalid topic 'a b'"),
        ("/api/topic", "name a topic"),
        ("/api/dead-letters?topic=work&limit=many", "not a whole number: 'many'"),
        ("/api/topic/messages?name=work&from=yesterday", "not a stream entry id: 'yesterday'"),
    ],
)
async def test_bad_input_is_a_400_that_says_why(path: str, message: str) -> None:
    async with live_dashboard() as (_, http):
        answer = await http.get(path)
    assert answer.status_code == 400 and message in answer.json()["error"]


# --------------------------------------------------------------------------- changing


async def test_a_command_reaches_every_hub_and_each_answer_is_shown() -> None:
    async with live_dashboard() as (hubs, http):
        await poll(http, "/api/overview", lambda d: len(d["hubs"]) == 2)
        paused = await http.post("/api/command", json=PAUSE, headers=change())
        assert [hub.group("work").stats().state.value for hub in hubs] == ["paused", "paused"]
        scaled = await http.post(
            "/api/command",
            json={"command": "scale", "group": "work", "min_workers": 0, "max_workers": 5},
            headers=change(),
        )
        assert [hub.group("work").config.max_workers for hub in hubs] == [5, 5]
    assert paused.status_code == 200
    assert [(a["hub"], a["outcome"]) for a in paused.json()["answers"]] == [
        ("hub-a", "applied"),
        ("hub-b", "applied"),
    ]
    assert all("scaled work to 0..5" in a["detail"] for a in scaled.json()["answers"])


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (change(token=None), PAUSE, 401, "wrong or missing token"),
        (change(token="guess"), PAUSE, 401, "wrong or missing token"),
        (change(origin="https://evil.example"), PAUSE, 403, "another origin"),
        (
            change(**{"sec-fetch-site": "cross-site"}),
            PAUSE,
            403,
            "cross-site",
        ),
        (
            change(**{"content-type": "text/plain"}),
            PAUSE,
            415,
            "application/json",
        ),
        (change(), {"command": "explode", "group": "work"}, 400, "need a group and a command"),
        (
            change(),
            {"command": "scale", "group": "work", "min_workers": 3, "max_workers": 1},
            400,
            "0 <= min",
        ),
    ],
)
async def test_a_change_without_the_token_from_elsewhere_or_malformed_is_refused(
    headers: dict[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    async with live_dashboard() as (hubs, http):
        answer = await http.post("/api/command", json=body, headers=headers)
        states = [hub.group("work").stats().state.value for hub in hubs]
    assert answer.status_code == status and message in answer.json()["error"]
    assert states == ["running", "running"]


async def test_a_dashboard_without_a_token_is_read_only() -> None:
    async with live_dashboard(token=None) as (hubs, http):
        overview = (await http.get("/api/overview")).json()
        answer = await http.post("/api/command", json=PAUSE, headers=change(token=""))
        purge = await http.post("/api/dead-letters/purge", json={"topic": "charge"}, headers=change(token=""))
        assert hubs[0].group("work").stats().state.value == "running"
    assert overview["read_only"] is True
    assert answer.status_code == purge.status_code == 403 and "read-only" in answer.json()["error"]


async def test_changes_only_take_post() -> None:
    async with live_dashboard() as (_, http):
        assert (await http.get("/api/command")).status_code == 405
        assert (await http.options("/api/command")).status_code == 405  # no CORS preflight is answered


# --------------------------------------------------------------------------- the pages


async def test_every_page_and_file_is_served_with_a_strict_policy() -> None:
    async with live_dashboard() as (_, http):
        for path in ("/", "/group?name=work", "/topic?name=work", "/dead-letters", "/escalations"):
            page = await http.get(path)
            assert page.status_code == 200 and 'src="static/dashboard.js"' in page.text
        script = await http.get("/static/dashboard.js")
        style = await http.get("/static/dashboard.css")
        answer = await http.get("/api/overview")
    for response in (page, script, style, answer):
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert script.headers["content-type"].startswith("text/javascript")
    # bus data is put on the page as text only: nothing in the script writes markup
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in script.text


async def test_it_mounts_under_a_prefix_in_another_trio_service() -> None:
    bus = MemoryBus()
    hub = two_hubs(bus)[0]
    dashboard = app(bus)
    service = Starlette(routes=[Mount("/ops/dashboard", app=dashboard)])
    async with hub.running(), dashboard.running():
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            bare = await http.get("/ops/dashboard")
            page = await http.get("/ops/dashboard/")
            overview = await poll(http, "/ops/dashboard/api/overview", lambda d: len(d["hubs"]) == 1)
    assert bare.status_code == 307 and bare.headers["location"].endswith("/ops/dashboard/")
    assert page.status_code == 200 and overview["hubs"][0]["hub"] == "hub-a"


def test_it_refuses_to_run_under_asyncio() -> None:
    dashboard = app(MemoryBus())

    async def run() -> None:
        async with dashboard.running():
            pass

    with pytest.raises(RuntimeError, match="runs under trio"):
        asyncio.run(run())


# --------------------------------------------------------------------------- the sampler


def snapshot(hub: str, at: float, groups: dict[str, tuple[int, int]], workers: int = 2) -> HubSnapshot:
    stats = tuple(
        worker_stat(
            name,
            total_message_processed=processed,
            total_failed=failed,
            total_current_workers=workers,
            buffered=1,
        )
        for name, (processed, failed) in groups.items()
    )
    return HubSnapshot(hub=hub, host="host", pid=1, bus="memory://", started_at=0.0, at=at, groups=stats)


def test_rates_come_from_the_hubs_own_counters_and_clocks() -> None:
    sampler = Sampler(MemoryBus(), interval=2.0, window=60.0, points=30)
    sampler.take([snapshot("a", 100.0, {"g": (0, 0)}), snapshot("b", 100.5, {"g": (50, 0)})], now=101)
    assert sampler.rates[("a", "g")].processed == 0  # nothing to compare with yet
    sampler.take([snapshot("a", 102.0, {"g": (100, 4)}), snapshot("b", 102.5, {"g": (90, 0)})], now=103)
    assert attrs.astuple(sampler.rates[("a", "g")]) == (50.0, 2.0)
    assert attrs.astuple(sampler.rates[("b", "g")]) == (20.0, 0.0)
    # the same announcement read again keeps its rate; a restarted hub counts from zero
    sampler.take([snapshot("a", 102.0, {"g": (100, 4)}), snapshot("b", 104.5, {"g": (10, 0)})], now=105)
    assert sampler.rates[("a", "g")].processed == 50.0 and sampler.rates[("b", "g")].processed == 5.0


def test_the_history_keeps_a_window_of_mean_rates_and_forgets_groups_gone_for_one() -> None:
    sampler = Sampler(MemoryBus(), interval=2.0, window=20.0, points=5)  # a point every 4 s
    assert sampler.step == 4.0
    processed = 0
    for tick in range(8):  # 10 msg/s for 16 s
        now = 1000.0 + 2 * tick
        sampler.take([snapshot("a", now, {"g": (processed, 0)})], now)
        processed += 20
    points = sampler.history("g")
    assert len(points) == 3 and all(p.processed == 10.0 for p in points[1:]) and points[-1].workers == 2
    assert sampler.history() == [attrs.evolve(p) for p in points]  # one group: all groups is the same
    # the hub goes away: the group gets points of nothing, then is forgotten after a window
    for tick in range(8, 20):
        now = 1000.0 + 2 * tick
        sampler.take([], now)
        if tick == 12:
            assert sampler.history("g")[-1].processed == 0 and sampler.history("g")[-1].workers == 0
    assert sampler.history("g") == [] and len(sampler.history()) == 5


# --------------------------------------------------------------------------- the review's cases


async def test_a_host_name_it_is_not_served_under_is_refused() -> None:
    """DNS rebinding: another site's name resolving to this address is not this dashboard."""
    bus = MemoryBus()
    dashboard = app(bus, allowed_hosts=["127.0.0.1", "localhost"])
    async with serving(dashboard) as http:
        elsewhere = await http.get("/api/overview")
        here = await http.get("/api/overview", headers={"host": "127.0.0.1:8080"})
    assert elsewhere.status_code == 421 and "host name" in elsewhere.json()["error"]
    assert elsewhere.headers["x-frame-options"] == "DENY" and here.status_code == 200


async def test_a_silent_hub_is_shown_silent_within_the_requests_deadline() -> None:
    bus = MemoryBus()
    hub = two_hubs(bus)[0]
    async with hub.running():
        ghost = HubSnapshot(hub="ghost", host="h", pid=1, bus="memory://", started_at=0, at=0, groups=())
        await bus.announce("ghost", ghost.to_json(), ttl=60)  # announced, then died
        async with serving(app(bus, token=TOKEN, timeout=1)) as http:
            answer = await http.post("/api/command", json=PAUSE, headers=change())
    outcomes = {a["hub"]: a["outcome"] for a in answer.json()["answers"]}
    assert answer.status_code == 200 and outcomes == {"ghost": "silent", "hub-a": "applied"}


async def test_what_redis_refuses_is_a_json_error_not_a_crash(redis_url: str) -> None:
    prefix = redis_url.split("prefix=", 1)[1]
    dashboard = app(redis_url)
    async with dashboard.running(), serving(dashboard) as http:
        raw = redis.Redis.from_url(redis_url.split("?", 1)[0])
        raw.set(f"{prefix}work", "not a stream")
        raw.set(f"{prefix}dead:work", "not a stream either")
        browsed = await http.get("/api/topic/messages?name=work")
        letters = await http.get("/api/dead-letters?topic=work")
        huge = await http.get("/api/topic/messages?name=work&from=99999999999999999999")
        garbage = await http.post("/api/dead-letters/purge", json={"topic": "work", "ids": ["garbage"]})
        overview = await http.get("/api/overview")
    assert browsed.status_code == letters.status_code == 502
    assert "WRONGTYPE" in browsed.json()["error"] and "WRONGTYPE" in letters.json()["error"]
    assert huge.status_code == 400 and garbage.status_code in (400, 403)
    assert overview.status_code == 200  # the dashboard lives on


async def test_the_message_browser_pages_past_retries_and_malformed_entries(redis_url: str) -> None:
    prefix = redis_url.split("prefix=", 1)[1]
    raw = redis.Redis.from_url(redis_url.split("?", 1)[0])
    stream = f"{prefix}work"
    for n in range(10):
        raw.xadd(stream, {"message": orjson.dumps({"payload": n})})
        if n % 3 == 0:  # a retry meant for one group, and an entry that is not JSON
            raw.xadd(stream, {"message": orjson.dumps({"payload": "retry"}), "group": "g"})
            raw.xadd(stream, {"message": b"not json"})
    dashboard = app(redis_url)
    async with dashboard.running(), serving(dashboard) as http:
        pages, start = [], "-"
        while start is not None:
            page = (
                await http.get("/api/topic/messages", params={"name": "work", "from": start, "count": 4})
            ).json()
            pages.append([m["envelope"]["payload"] for m in page["messages"]])
            start = page["next"]
    assert pages[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_requeueing_thousands_of_dead_letters_takes_few_round_trips(redis_url: str) -> None:
    hub = ActionHub(redis_url, name="h")

    @hub.action("refuse", max_restarts=10_000)
    async def refuse(job: Job) -> None:
        raise Reject("no")

    async with hub.running():
        await hub.publish_many("refuse", range(2500))
        await wait_until(lambda: hub.group("refuse").stats().total_dead_lettered == 2500, timeout=60)
    dashboard = app(redis_url, token=TOKEN)
    async with dashboard.running(), serving(dashboard) as http:
        answer = await http.post(
            "/api/dead-letters/requeue", json={"topic": "refuse", "ids": None}, headers=change()
        )
        info = (await http.get("/api/topic?name=refuse")).json()["info"]
    assert answer.status_code == 200 and answer.json() == {"count": 2500}
    assert info["dead_letters"] == 0 and info["length"] >= 5000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**PAUSE, "command": "scale", "min_workers": True, "max_workers": True}, "whole numbers"),
        ({**PAUSE, "command": "scale", "min_workers": 0, "max_workers": 10**9}, "<= 10000"),
    ],
)
async def test_scale_takes_sane_whole_numbers_only(body: dict[str, Any], message: str) -> None:
    async with live_dashboard() as (_, http):
        answer = await http.post("/api/command", json=body, headers=change())
    assert answer.status_code == 400 and message in answer.json()["error"]


async def test_more_bad_input() -> None:
    async with live_dashboard() as (_, http):
        nameless = await http.get("/api/group")
        ids = await http.post(
            "/api/dead-letters/purge", json={"topic": "charge", "ids": ["x"]}, headers=change()
        )
        bare = await http.post("/api/command", json=PAUSE, headers={**change(), "authorization": TOKEN})
        proxied = await http.post("/api/command", json=PAUSE, headers=change(origin="https://dash.test"))
    assert nameless.status_code == 400 and "name a group" in nameless.json()["error"]
    assert ids.status_code == 400 and "dead-letter ids" in ids.json()["error"]
    assert bare.status_code == 401  # the token alone, without "Bearer": refused
    assert proxied.status_code == 200  # behind a proxy that ends TLS the scheme differs, the host not


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="16 characters at least"):
        app(MemoryBus(), token="hunter2")


async def test_mounted_with_a_root_path_the_bare_prefix_redirects_to_itself() -> None:
    dashboard = app(MemoryBus())
    transport = httpx.ASGITransport(app=dashboard, root_path="/ops/dashboard")
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        answer = await http.get("/ops/dashboard")
    assert answer.status_code == 307 and answer.headers["location"] == "/ops/dashboard/"
    assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_the_history_spans_the_window_even_when_steps_run_late() -> None:
    sampler = Sampler(MemoryBus(), interval=2.0, window=20.0, points=5)  # a point every 4 s
    for tick in range(40):
        now = 1000.0 + 6 * tick  # each read late: steps of 6 s, not 4
        sampler.take([snapshot("a", now, {"g": (tick, 0)})], now)
    points = sampler.history("g")
    assert points[-1].at - points[0].at < 20.0

"""The dashboard in a real browser: Debian's chromium driven by Playwright (``executable_path``:
no browser download), against two live hubs (``actionhub run``) and ``actionhub dashboard`` on
a private Redis. Without chromium these tests skip, unless ACTIONHUB_REQUIRE_BROWSER=1 (CI sets
it): then they fail. ``ACTIONHUB_SCREENSHOT=PATH`` keeps the demo's overview there
(``make screenshot``: the README's picture)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from actionhub.client import Client
from actionhub.testing import RedisServer
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
ACTIONHUB = str(Path(sys.executable).with_name("actionhub"))
TOKEN = "browser-test-token"
MARKUP = {
    "note": "<script>alert(1)</script>",
    "attr": '"><img src=x onerror="window.pwned=1;alert(2)">',
}


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    """``predicate()`` once it is truthy (it reads another process or Redis: only observable)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def chromium() -> str:
    path = (
        os.environ.get("ACTIONHUB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path is None:
        message = "no chromium: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("ACTIONHUB_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as driver:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@attrs.define
class Watched:
    """A page, and what it did that it must not: dialogs it opened, errors its script threw."""

    page: Page
    dialogs: list[str]
    errors: list[str]
    accept_dialogs: bool = False


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    seen = Watched(page, [], [])

    def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        if seen.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    yield seen
    context.close()
    assert seen.errors == [], f"the page's script failed: {seen.errors}"


@attrs.define
class Stack:
    url: str
    base: str
    directory: Path
    client: Client

    def states(self, group: str) -> dict[str, str]:
        return {s.hub: g.state.value for s in self.client.hubs() for g in s.groups if g.addr == group}

    def states_after(self, moment: float, group: str) -> dict[str, str]:
        """The group's state in each hub, as announced after ``moment`` (epoch seconds)."""

        def fresh() -> list[Any] | None:
            snapshots = self.client.hubs()
            return snapshots if len(snapshots) == 2 and all(s.at > moment for s in snapshots) else None

        snapshots = wait_for(fresh, what="fresh snapshots of both hubs")
        return {s.hub: g.state.value for s in snapshots for g in s.groups if g.addr == group}


def _started(process: subprocess.Popen[bytes], log: Path, line: str) -> str:
    def ready() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited {process.returncode}: {log.read_text()}")
        found = [text for text in log.read_text().splitlines() if line in text]
        return found[0] if found else None

    text: str = wait_for(ready, what=line)
    return text


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two hubs serving tests.dashboard_app and a dashboard (with a token) of their bus."""
    directory = tmp_path_factory.mktemp("dashboard")
    url = f"{redis_server.url}?prefix=browser-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "DASHBOARD_APP_DIR": str(directory)}
    processes = []
    try:
        for name in ("hub-a", "hub-b"):
            log = directory / f"{name}.log"
            command = [ACTIONHUB, "run", "tests.dashboard_app:hub", "--bus", url, "--name", name]
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=log.open("wb")))
            _started(processes[-1], log, f"hub {name} ready")
        log = directory / "dashboard.log"
        command = [ACTIONHUB, "dashboard", "--bus", url, "--port", str(free_port()), "--token", TOKEN]
        processes.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        )
        line = _started(processes[-1], log, "dashboard of")
        base = line.split(" on ", 1)[1].split(",", 1)[0].rstrip("/")
        with Client(url) as client:
            wait_for(lambda: len(client.hubs()) == 2, what="both hubs announced")
            yield Stack(url, base, directory, client)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def use_token(page: Page, token: str = TOKEN) -> None:
    page.fill("#token", token)
    page.click("#token-form button")
    expect(page.locator("#mode")).to_have_text("token set")


def processed(page: Page, selector: str) -> int:
    return int(page.locator(selector).inner_text())


# --------------------------------------------------------------------------- the pages


def test_the_overview_shows_both_hubs_and_counts_that_rise_without_a_reload(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    page.goto(stack.base + "/")
    for hub in ("hub-a", "hub-b"):
        expect(page.locator(f'[data-hub="{hub}"] tr[data-group="work"]')).to_be_visible()
        expect(page.locator(f'[data-hub="{hub}"] tr[data-group="charge"]')).to_be_visible()
    cell = '#groups tr[data-group="work"] td.processed'
    expect(page.locator('#groups tr[data-group="work"] td.hubs')).to_have_text("2")
    before = processed(page, cell)
    page.evaluate("window.notReloaded = true")
    stack.client.publish_many("work", range(200))
    wait_for(lambda: processed(page, cell) >= before + 200, what="the processed count to rise on the page")
    assert page.evaluate("window.notReloaded") is True
    assert processed(page, '[data-hub="hub-a"] tr[data-group="work"] td.processed') > 0
    assert processed(page, '[data-hub="hub-b"] tr[data-group="work"] td.processed') > 0
    expect(page.locator("#rates svg.plot")).to_have_count(1)


def test_pausing_a_group_from_the_page_pauses_it_in_both_hubs(stack: Stack, watched: Watched) -> None:
    page = watched.page
    page.goto(stack.base + "/group?name=work")
    expect(page.locator('#group-hubs tr[data-hub="hub-a"]')).to_be_visible()
    use_token(page)
    page.click("#pause")
    for hub in ("hub-a", "hub-b"):
        expect(page.locator(f'#answers tr[data-hub="{hub}"] td.outcome')).to_have_text("applied")
    assert stack.states_after(time.time(), "work") == {"hub-a": "paused", "hub-b": "paused"}
    expect(page.locator('#group-hubs tr[data-hub="hub-b"] td.state')).to_have_text("paused")
    page.click("#resume")
    expect(page.locator('#answers tr[data-hub="hub-a"] td.text').last).to_have_text("resumed work")
    assert stack.states_after(time.time(), "work") == {"hub-a": "running", "hub-b": "running"}


def test_a_dead_letter_is_requeued_from_the_page_and_runs(stack: Stack, watched: Watched) -> None:
    page = watched.page
    broken = stack.directory / "broken"
    broken.touch()
    try:
        stack.client.publish("charge", {"order": 7})
        (letter,) = wait_for(lambda: stack.client.dead_letters("charge"), what="the dead letter")
    finally:
        broken.unlink()
    page.goto(stack.base + "/dead-letters?topic=charge")
    row = page.locator(f'tr[data-id="{letter.id}"]')
    expect(row.locator("td.error")).to_contain_text("card declined for order 7")
    use_token(page)
    row.locator("button.requeue").click()
    expect(page.locator("#result")).to_contain_text("requeued 1 dead letter(s)")
    charged = stack.directory / "charged"
    wait_for(
        lambda: charged.exists() and "charged 7" in charged.read_text(), what="the requeued charge to run"
    )
    expect(page.locator("#letters")).to_contain_text("no dead letter")


def test_dead_letters_are_purged_selected_or_all_from_the_page(stack: Stack, watched: Watched) -> None:
    page = watched.page
    broken = stack.directory / "broken"
    broken.touch()
    try:
        stack.client.publish_many("charge", [{"order": 100 + i} for i in range(3)])
        wait_for(lambda: len(stack.client.dead_letters("charge")) == 3, what="three dead letters")
    finally:
        broken.unlink()
    page.goto(stack.base + "/dead-letters?topic=charge")
    expect(page.locator("#letters tr[data-id]")).to_have_count(3)
    use_token(page)
    picks = page.locator("#letters input.pick")
    picks.nth(0).check()
    picks.nth(2).check()
    kept = page.locator("#letters tr[data-id]").nth(1).get_attribute("data-id")
    page.click("#purge-selected")
    expect(page.locator("#result")).to_contain_text("purged 2 dead letter(s)")
    expect(page.locator("#letters tr[data-id]")).to_have_count(1)
    assert [letter.id for letter in stack.client.dead_letters("charge")] == [kept]
    page.click("#purge-all")  # asks first: dismissed, nothing is purged
    wait_for(lambda: watched.dialogs, what="the question")
    assert watched.dialogs == ["Purge every dead letter of charge?"]
    assert len(stack.client.dead_letters("charge")) == 1
    watched.accept_dialogs = True
    page.click("#purge-all")
    expect(page.locator("#result")).to_contain_text("purged 1 dead letter(s)")
    expect(page.locator("#letters")).to_contain_text("no dead letter")
    assert stack.client.dead_letters("charge") == []


def test_markup_from_the_bus_is_shown_as_text_and_never_runs(stack: Stack, watched: Watched) -> None:
    page = watched.page
    stack.client.publish("render", MARKUP, headers={"x-note": "<img src=x onerror=alert(3)>"})
    wait_for(lambda: stack.client.dead_letters("render"), what="the dead letter")

    def nothing_ran() -> None:
        assert page.evaluate("document.querySelectorAll('img, [onerror], iframe, object').length") == 0
        assert page.evaluate("document.querySelectorAll('script').length") == 1  # the dashboard's own
        assert page.evaluate("window.pwned") is None
        assert watched.dialogs == []

    page.goto(stack.base + "/dead-letters?topic=render")
    message = page.locator("#letters td.message pre").first
    expect(message).to_contain_text(MARKUP["note"])
    expect(message).to_contain_text("<img src=x onerror=")
    expect(page.locator("#letters td.error").first).to_contain_text(MARKUP["note"] + MARKUP["attr"])
    page.locator("#letters details summary").first.click()  # the traceback holds the markup too
    expect(page.locator("#letters pre.traceback").first).to_contain_text("<script>")
    nothing_ran()

    page.goto(stack.base + "/escalations")
    expect(page.locator("#escalations td.error").first).to_contain_text(MARKUP["note"] + MARKUP["attr"])
    for summary in page.locator("#escalations details summary").all()[:2]:
        summary.click()
    nothing_ran()

    page.goto(stack.base + "/topic?name=render")
    envelope = page.locator("#messages td.envelope pre").last
    expect(envelope).to_contain_text("<img src=x onerror=alert(3)>")
    expect(envelope).to_contain_text(MARKUP["note"])
    nothing_ran()


def test_a_change_without_the_token_or_from_another_origin_is_refused(
    stack: Stack, watched: Watched, tmp_path: Path
) -> None:
    page = watched.page
    page.goto(stack.base + "/group?name=work")
    expect(page.locator("#mode")).to_have_text("token needed")
    page.click("#pause")
    expect(page.locator("#result")).to_contain_text("wrong or missing token")

    # another site's page tries both ways a page can send a POST to the dashboard
    (tmp_path / "index.html").write_text(
        "<!doctype html><title>elsewhere</title><script>\n"
        f"const target = {stack.base!r} + '/api/command';\n"
        "const body = JSON.stringify({command: 'pause', group: 'work'});\n"
        "window.attempts = Promise.allSettled([\n"
        "  fetch(target, {method: 'POST', mode: 'no-cors', headers: {'content-type': 'text/plain'}, body}),\n"
        f"  fetch(target, {{method: 'POST', headers: {{'content-type': 'application/json',\n"
        f"    authorization: 'Bearer {TOKEN}'}}, body}}),\n"
        "]).then((results) => results.map((r) => r.status));\n"
        "</script>"
    )
    port = free_port()
    elsewhere = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), what="the other site")
        page.goto(f"http://127.0.0.1:{port}/")
        # the simple request reaches the dashboard (and is refused: its answer stays opaque);
        # the one with the token needs a preflight, which the dashboard does not answer
        assert page.evaluate("window.attempts") == ["fulfilled", "rejected"]
        sent_at = time.time()
    finally:
        elsewhere.terminate()
        elsewhere.wait()
    assert stack.states_after(sent_at, "work") == {"hub-a": "running", "hub-b": "running"}
    assert "another origin" in _refusal(stack.base)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _refusal(base: str) -> str:
    import httpx

    answer = httpx.post(
        base + "/api/command",
        json={"command": "pause", "group": "work"},
        headers={"origin": "http://127.0.0.1:1", "authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 403
    error: str = answer.json()["error"]
    return error


# --------------------------------------------------------------------------- the README's picture


def test_the_demo_overview_screenshot(browser: Browser, tmp_path: Path) -> None:
    """The demo (two hubs on memory://, steady traffic, failures) on the overview, as the README
    shows it: kept at ACTIONHUB_SCREENSHOT when that is set."""
    port = free_port()
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.dashboard_demo",
            "--port",
            str(port),
            "--interval",
            "0.5",
            "--window",
            "60",
        ],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _started(demo, log, "dashboard on")
        context = browser.new_context(viewport={"width": 1400, "height": 860}, device_scale_factor=1)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#groups tbody tr")).to_have_count(4)
        wait_for(
            lambda: (
                page.evaluate("document.querySelector('#rates polyline.processed')?.points.length ?? 0") >= 30
            ),
            what="half a minute of history",
        )
        expect(page.locator('#groups tr[data-group="invoices.render"] td.dead')).not_to_have_text("0")
        target = Path(os.environ.get("ACTIONHUB_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(target))
        context.close()
    finally:
        demo.terminate()
        demo.wait(timeout=20)
    assert target.stat().st_size > 10_000

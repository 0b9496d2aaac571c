"""The dashboard's ASGI app: a page shell, its script and style, and a JSON API over the bus.

Everything from the bus leaves here as JSON and is put on the page as text by the script (never
as markup), under a Content-Security-Policy that runs no script but the dashboard's own. Changes
(operator commands, dead-letter requeues and purges) need the token, as a bearer token in a JSON
POST from the dashboard's own origin: a cross-site page can neither read the token nor send such
a request without a CORS preflight, which nothing here answers.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import attrs
import orjson
import sniffio
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..bus.base import Bus
from ..bus.url import open_bus, redact
from ..errors import ActionHubError, ConfigurationError
from ..inspect import COMMANDS, send_command
from ..message import check_topic
from ._documents import escalation_document, group_row, letter_document, overview_document, series
from ._sampler import Sampler

log = logging.getLogger("actionhub.dashboard")

TOKEN_VARIABLE = "ACTIONHUB_DASHBOARD_TOKEN"
#: the shortest token accepted: a guessable one would make the token pointless
MIN_TOKEN_LENGTH = 16
#: the most workers a scale from the page may ask for
MAX_WORKERS = 10_000

_STATIC = resources.files(__package__).joinpath("static")
_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_PAGES = ("/", "/group", "/topic", "/dead-letters", "/escalations")


class Refused(Exception):
    """A request that gets ``status`` and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Dashboard:
    """The dashboard of the hubs on ``bus`` (a URL, or a `Bus` the caller keeps open) as an
    ASGI app. Read-only without a ``token``; with one, every change needs it. It reads the hubs'
    snapshots every ``interval`` seconds, charts the last ``window`` seconds, and answers 503
    when the bus does not answer within ``timeout`` seconds. ``allowed_hosts``: the host names
    (or addresses) it answers under, any other ``Host`` is refused (DNS rebinding); None: any.

    Under a server that sends lifespan events it opens its bus (when given a URL) and samples
    the hubs on its own; otherwise use `running` around serving it. It runs under trio
    (``actionhub dashboard``, hypercorn's trio worker)."""

    def __init__(
        self,
        bus: str | Bus,
        *,
        token: str | None = None,
        interval: float = 2.0,
        window: float = 900.0,
        timeout: float = 5.0,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self._owns_bus = isinstance(bus, str)
        self.bus = open_bus(bus) if isinstance(bus, str) else bus
        if token and len(token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"a dashboard token needs {MIN_TOKEN_LENGTH} characters at least (say, openssl rand -hex 16)"
            )
        self.token = token or None
        self.timeout = timeout
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.sampler = Sampler(self.bus, interval=interval, window=window)
        self._topic_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._running = False
        routes = [Route(path, self._page) for path in _PAGES]
        routes.append(Route("/favicon.ico", lambda _: Response(status_code=204)))
        routes += [Route(f"/static/{name}", self._static) for name in _FILES]
        reads = {
            "overview": self._overview,
            "group": self._group,
            "topic": self._topic,
            "topic/messages": self._messages,
            "dead-letters": self._dead_letters,
            "escalations": self._escalations,
        }
        changes = {
            "command": self._command,
            "dead-letters/requeue": self._requeue,
            "dead-letters/purge": self._purge,
        }
        routes += [Route(f"/api/{path}", _endpoint(read, timeout)) for path, read in reads.items()]
        for path, change in changes.items():
            # requeueing every dead letter takes a round trip per thousand: it gets longer
            deadline = timeout if path == "command" else 6 * timeout
            routes.append(Route(f"/api/{path}", _endpoint(change, deadline), methods=["POST"]))
        self._app = Starlette(routes=routes, lifespan=lambda _: self.running())

    @property
    def read_only(self) -> bool:
        return self.token is None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the bus (if the dashboard was given a URL) and sample the hubs every interval,
        so that the charts have no gaps, until the block ends."""
        if sniffio.current_async_library() != "trio":
            raise RuntimeError(
                "actionhub's dashboard runs under trio: serve it with `actionhub dashboard`, "
                "or with hypercorn's trio worker (--worker-class trio)"
            )
        if self._running:  # say, `serve_dashboard` around a server that sends lifespan events too
            yield
            return
        opened: AbstractAsyncContextManager[None] = (
            self.bus.open(f"dashboard-{os.getpid()}", connect_timeout=self.timeout, serving=False)
            if self._owns_bus
            else _nothing()
        )
        async with opened, trio.open_nursery() as nursery:
            await nursery.start(self.sampler.run)
            self._running = True
            try:
                yield
            finally:
                self._running = False
                nursery.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secure(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()),
                ]
            await send(message)

        if scope["type"] == "http" and not self._host_allowed(scope):
            refusal = _json({"error": "refused: this dashboard is not served under that host name"}, 421)
            await refusal(scope, receive, secure)  # type: ignore[arg-type]
            return
        root = scope.get("root_path", "").rstrip("/")
        if scope["type"] == "http" and root and scope["path"] == root:
            # mounted at /prefix: the page's relative links need /prefix/ (one leading slash,
            # never //host: the location stays on this site)
            redirect = Response(status_code=307, headers={"location": "/" + root.lstrip("/") + "/"})
            await redirect(scope, receive, secure)  # type: ignore[arg-type]
            return
        await self._app(scope, receive, secure)  # type: ignore[arg-type]

    def _host_allowed(self, scope: Scope) -> bool:
        """Whether the request's Host is one the dashboard is served under: a page of another
        site whose name was made to resolve to this address (DNS rebinding) is not."""
        if self.allowed_hosts is None:
            return True
        host = next((value for name, value in scope["headers"] if name == b"host"), b"").decode("latin-1")
        try:
            name = urlsplit("//" + host).hostname
        except ValueError:
            return False
        return name is not None and name.lower() in self.allowed_hosts

    # ------------------------------------------------------------------ files

    async def _page(self, request: Request) -> Response:
        return Response(_STATIC.joinpath("index.html").read_bytes(), media_type="text/html; charset=utf-8")

    async def _static(self, request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[-1]
        return Response(_STATIC.joinpath(name).read_bytes(), media_type=_FILES[name])

    # ------------------------------------------------------------------ reading

    async def _overview(self, request: Request) -> dict[str, Any]:
        await self.sampler.refresh()
        return overview_document(self.sampler, read_only=self.read_only, bus=redact(self.bus.url))

    async def _group(self, request: Request) -> dict[str, Any]:
        name = request.query_params.get("name", "")
        if not name:
            raise Refused(400, "name a group")
        await self.sampler.refresh()
        running = self.sampler.stats_of(name)
        return {
            "group": name,
            "read_only": self.read_only,
            "window": self.sampler.window,
            "topic": running[0][1].topic if running else None,
            "hubs": [
                {
                    **group_row(stat, self.sampler.rates.get((s.hub, name))),
                    "hub": s.hub,
                    "host": s.host,
                    "pid": s.pid,
                }
                for s, stat in running
            ],
            "history": series(self.sampler.history(name)),
        }

    async def _topic(self, request: Request) -> dict[str, Any]:
        info = await self._topic_info(_valid_topic(request.query_params.get("name", "")))
        return {"info": info, "read_only": self.read_only}

    async def _messages(self, request: Request) -> dict[str, Any]:
        """A page of the topic's retained messages (the replay range), oldest first."""
        topic = _valid_topic(request.query_params.get("name", ""))
        count = _count(request.query_params.get("count"), 50, 500)
        first = _entry_id(request.query_params.get("from") or "-")
        last = _entry_id(request.query_params.get("to") or "+")
        messages: list[dict[str, Any]] = []
        if self.bus.keeps_history:
            page = await self.bus.history(topic, first=first, last=last, count=count)
            messages = [{"id": entry_id, "envelope": message.envelope()} for entry_id, message in page]
        return {
            "keeps_history": self.bus.keeps_history,
            "messages": messages,
            "next": "(" + messages[-1]["id"] if len(messages) == count else None,
        }

    async def _topic_info(self, topic: str) -> dict[str, Any]:
        """The topic's state, read at most once per half interval whoever asks."""
        cached = self._topic_cache.get(topic)
        if cached is not None and trio.current_time() - cached[0] < self.sampler.interval / 2:
            return cached[1]
        document: dict[str, Any] = attrs.asdict(await self.bus.topic_info(topic))
        if len(self._topic_cache) > 1000:
            self._topic_cache.clear()
        self._topic_cache[topic] = (trio.current_time(), document)
        return document

    async def _dead_letters(self, request: Request) -> dict[str, Any]:
        topic = _valid_topic(request.query_params.get("topic", ""))
        limit = _count(request.query_params.get("limit"), 100, 1000)
        letters = await self.bus.dead_letters(topic, limit=limit)
        total = (await self._topic_info(topic))["dead_letters"]
        return {
            "topic": topic,
            "read_only": self.read_only,
            "total": total,
            "letters": [letter_document(d) for d in letters],
        }

    async def _escalations(self, request: Request) -> dict[str, Any]:
        limit = _count(request.query_params.get("limit"), 50, 1000)
        events = await self.bus.events("escalations", limit=limit, newest=True)
        return {"read_only": self.read_only, "escalations": [escalation_document(event) for event in events]}

    # ------------------------------------------------------------------ changing

    async def _command(self, request: Request) -> dict[str, Any]:
        body = await self._authorized(request)
        command, group = body.get("command"), body.get("group")
        if command not in COMMANDS or not isinstance(group, str) or not group:
            raise Refused(400, f"need a group and a command of {', '.join(COMMANDS)}")
        arguments: dict[str, int] = {}
        if command == "scale":
            low, high = body.get("min_workers"), body.get("max_workers")
            if not (_whole(low) and _whole(high) and 0 <= low <= high <= MAX_WORKERS):
                raise Refused(
                    400, f"scale needs whole numbers 0 <= min_workers <= max_workers <= {MAX_WORKERS}"
                )
            arguments = {"min_workers": low, "max_workers": high}
        # the answers must come before the request's own deadline, so that silent hubs are shown
        answers = await send_command(self.bus, command, group, timeout=self.timeout * 0.6, **arguments)
        return {"answers": [attrs.asdict(answer) for answer in answers]}

    async def _requeue(self, request: Request) -> dict[str, Any]:
        topic, ids = await self._letters_asked(request)
        return {"count": await self.bus.requeue_dead_letters(topic, ids)}

    async def _purge(self, request: Request) -> dict[str, Any]:
        topic, ids = await self._letters_asked(request)
        return {"count": await self.bus.purge_dead_letters(topic, ids)}

    async def _letters_asked(self, request: Request) -> tuple[str, list[str] | None]:
        """The topic and dead-letter ids (None: all) a change request names."""
        body = await self._authorized(request)
        topic = _valid_topic(body.get("topic"))
        ids = body.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(_is_entry_id(i, exact=True) for i in ids)):
            raise Refused(400, "ids must be a list of dead-letter ids, or null for all of them")
        return topic, ids

    async def _authorized(self, request: Request) -> dict[str, Any]:
        """The JSON body of a change request, once it passed every check."""
        origin = request.headers.get("origin")
        # by host and port only: behind a proxy that ends TLS, the page is https and this is http
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise Refused(403, f"refused: a request from another origin ({origin})")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise Refused(403, "refused: a cross-site request")
        if self.token is None:
            raise Refused(
                403, f"read-only: start the dashboard with --token or ${TOKEN_VARIABLE} to change things"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Refused(401, "refused: a wrong or missing token")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "send the change as application/json")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            raise Refused(400, f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object")
        return body


#: ``actionhub.dashboard.app(bus, token=...)``: the ASGI app to serve or mount
app = Dashboard


# --------------------------------------------------------------------------- plumbing


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


def _endpoint(handler: Handler, timeout: float) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering ``handler``'s document as JSON, and a refusal or a failure of the
    bus (no answer within ``timeout`` seconds, say) as ``{"error": ...}`` with its status."""

    async def endpoint(request: Request) -> Response:
        try:
            with trio.fail_after(timeout):
                document = await handler(request)
        except Refused as refused:
            return _json({"error": str(refused)}, refused.status)
        except ConfigurationError as error:
            return _json({"error": str(error)}, 400)
        except ActionHubError as error:  # the bus refused
            return _json({"error": f"the bus failed: {error}"}, 503)
        except trio.TooSlowError:  # the bus is unreachable, and being reconnected to
            return _json({"error": f"the bus did not answer within {timeout:g} s"}, 503)
        except Exception as error:  # say, Redis refused a command (a key of another type, BUSY)
            log.exception("dashboard: %s failed", request.url.path)
            return _json({"error": f"the bus failed: {type(error).__name__}: {error}"}, 502)
        return _json(document)

    return endpoint


def _json(document: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(document), status, media_type="application/json")


def _valid_topic(topic: object) -> str:
    if not isinstance(topic, str) or not topic:
        raise Refused(400, "name a topic")
    try:
        return check_topic(topic)
    except ConfigurationError as error:
        raise Refused(400, str(error)) from None


_ENTRY_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_U64 = 2**64 - 1


def _is_entry_id(text: object, *, exact: bool = False) -> bool:
    """A stream entry id (``ms`` or ``ms-seq``); unless ``exact``, also ``-``, ``+`` or ``(id``."""
    if not isinstance(text, str):
        return False
    if not exact:
        if text in ("-", "+"):
            return True
        text = text.removeprefix("(")
    found = _ENTRY_ID.fullmatch(text)
    return found is not None and all(int(part or 0) <= _U64 for part in found.groups())


def _entry_id(text: str) -> str:
    if not _is_entry_id(text):
        raise Refused(
            400, f"not a stream entry id: {text!r} (like 1700000000000-0, (1700000000000-0, - or +)"
        )
    return text


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(text: str | None, default: int, most: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Refused(400, f"not a whole number: {text!r}") from None
    return min(max(value, 1), most)


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield

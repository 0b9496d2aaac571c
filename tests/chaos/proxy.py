"""A TCP proxy between hubs and Redis that the test controls: it cuts, stalls, delays and refuses
connections, as a flaky network or a partition would."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio


class ChaosProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_port``. Run `serve` in a nursery."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0  # seconds added before each forwarded chunk
        self.refusing = False  # new connections are closed at once (nothing listens)
        self.accepted = 0
        self.replies_lost = 0
        self.requests_dropped = 0
        self._drop_request_to: bytes | None = None
        self._lose_reply_to: bytes | None = None
        self._flowing = trio.Event()
        self._flowing.set()
        self._connections: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def url(self, path: str = "/0") -> str:
        return f"redis://127.0.0.1:{self.port}{path}"

    def cut(self) -> int:
        """Reset every open connection (RST, as a dropped NAT entry or a crashed peer). How many."""
        scopes = list(self._connections)
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    def stall(self) -> None:
        """Stop forwarding without closing anything: bytes sent meanwhile are held (a partition)."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def lose_reply_to(self, marker: bytes) -> None:
        """Once: forward the next request holding ``marker`` to Redis, then reset its connection
        when Redis answers, instead of passing the answer on (the command ran; its caller never
        learns so). `replies_lost` counts the replies lost."""
        self._lose_reply_to = marker

    def drop_request_to(self, marker: bytes) -> None:
        """Once: reset the connection of the next request holding ``marker`` instead of forwarding
        it (the command never reaches Redis; its caller cannot tell). `requests_dropped` counts them."""
        self._drop_request_to = marker

    def heal(self) -> None:
        """Forward again what a `stall` held, if its connection is still there."""
        self._flowing.set()

    async def _handle(self, client: trio.SocketStream) -> None:
        # every close is an RST: the hub sees a connection reset, not a polite end
        with contextlib.suppress(OSError):
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.refusing:
            await client.aclose()
            return
        self.accepted += 1
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                asked: list[bool] = []  # the marked request went out on this connection
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server, scope, asked, True)
                    nursery.start_soon(self._pump, server, client, scope, asked, False)
            finally:
                self._connections.discard(scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        scope: trio.CancelScope,
        asked: list[bool],
        requests: bool,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await self._flowing.wait()
                if self.delay:
                    await trio.sleep(self.delay)
                dropped = self._drop_request_to
                if requests and dropped is not None and dropped in data:
                    self._drop_request_to = None
                    self.requests_dropped += 1
                    break  # the request goes with the connection
                marker = self._lose_reply_to
                if requests and marker is not None and marker in data:
                    self._lose_reply_to = None
                    asked.append(True)
                elif not requests and asked:
                    self.replies_lost += 1
                    break  # the answer is dropped with the connection
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side is gone: so is the connection

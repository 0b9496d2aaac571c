"""Job: what an action receives for one message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .message import JSON, Message

if TYPE_CHECKING:
    from .hub import ActionHub


class Job:
    """One message being handled by one action."""

    __slots__ = ("_replied", "action", "hub", "message")

    def __init__(self, message: Message, action: str, hub: ActionHub) -> None:
        self.message = message
        self.action = action
        self.hub = hub
        self._replied = False

    @property
    def payload(self) -> JSON:
        """The decoded JSON payload."""
        return self.message.payload

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def attempt(self) -> int:
        """1 on the first delivery, 2 on the first retry, and so on."""
        return self.message.attempt

    @property
    def headers(self) -> dict[str, str]:
        return self.message.headers

    async def reply(self, payload: JSON, *, headers: dict[str, str] | None = None) -> bool:
        """Answer the requester (see `ActionHub.request`). Returns False when the message asked
        for no reply. Each job replies at most once; a second call raises `RuntimeError`."""
        if self.message.reply_to is None:
            return False
        if self._replied:
            raise RuntimeError("this job has already replied")
        self._replied = True
        await self.hub._send_reply(self.message, payload, headers or {})
        return True

    def __repr__(self) -> str:
        return f"<Job {self.action} {self.message.topic}:{self.message.id} attempt={self.attempt}>"

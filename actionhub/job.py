"""Job: what an action receives for one message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

import orjson
from typing_extensions import TypeVar

from .message import JSON, Message
from .payloads import to_json

if TYPE_CHECKING:
    from .bus.base import Subscription
    from .hub import ActionHub

#: the largest checkpoint state, as JSON: a checkpoint is a bookmark, not a result store
MAX_CHECKPOINT_BYTES = 64 * 1024

#: what `Job.payload` is: the decoded JSON, or the action's payload type (``Job[Charge]``)
P = TypeVar("P", default=JSON)


class Job(Generic[P]):
    """One message being handled by one action. ``Job[Charge]`` in an action's signature (or
    ``payload=Charge`` on the action) makes `payload` a validated ``Charge``
    (`actionhub.payloads`)."""

    __slots__ = (
        "_payload",
        "_progress",
        "_replied",
        "_subscription",
        "action",
        "checkpointed",
        "hub",
        "message",
    )

    def __init__(
        self,
        message: Message,
        action: str,
        hub: ActionHub,
        *,
        subscription: Subscription | None = None,
        progress: JSON | None = None,
        payload: Any = None,
        typed: bool = False,
    ) -> None:
        """``typed``: ``payload`` is the message's payload decoded as the action's type."""
        self.message = message
        self._payload = payload if typed else message.payload
        self.action = action
        self.hub = hub
        self._subscription = subscription
        self._progress = progress
        self._replied = False
        self.checkpointed = False  # whether this run saved a checkpoint

    @property
    def progress(self) -> JSON | None:
        """The last state `checkpoint` saved for this message, by this run or by an earlier
        delivery (one that crashed, timed out or asked for a retry); None if there is none."""
        return self._progress

    async def checkpoint(self, state: JSON) -> None:
        """Save ``state`` (JSON, at most 64 KiB) as this message's progress. If the message is
        delivered again (its hub died, the action raised or timed out), the next run finds it
        in `progress` and can resume. Forgotten once the message is acked or dead-lettered."""
        if self._subscription is None:
            raise RuntimeError("this job is not attached to a bus: nothing to checkpoint to")
        try:
            raw = orjson.dumps(state)
        except TypeError as exc:
            raise TypeError(f"a checkpoint must be JSON: {exc}") from None
        if len(raw) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes of JSON, not {len(raw)}")
        await self._subscription.save_progress(self.message.id, raw)
        self._progress = orjson.loads(raw)
        self.checkpointed = True

    @property
    def payload(self) -> P:
        """The payload: decoded JSON, or an instance of the action's payload type."""
        return self._payload  # type: ignore[no-any-return]

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def attempt(self) -> int:
        """1 on the first delivery, 2 on the first retry, and so on."""
        return self.message.attempt

    @property
    def key(self) -> str | None:
        """The message's ordering key, if it was published with one."""
        return self.message.key

    @property
    def headers(self) -> dict[str, str]:
        return self.message.headers

    async def reply(self, payload: object, *, headers: dict[str, str] | None = None) -> bool:
        """Answer the requester (see `ActionHub.request`). Returns False when the message asked
        for no reply. Each job replies at most once; a second call raises `RuntimeError`."""
        if self.message.reply_to is None:
            return False
        if self._replied:
            raise RuntimeError("this job has already replied")
        self._replied = True
        await self.hub._send_reply(self.message, to_json(payload), headers or {})
        return True

    def __repr__(self) -> str:
        return f"<Job {self.action} {self.message.topic}:{self.message.id} attempt={self.attempt}>"

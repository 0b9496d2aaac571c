"""Redis errors as the library's own: one clear `BusError` each."""

from __future__ import annotations

import redis

from ..bus.redis.durable import NotReplicated
from ..bus.redis.options import describe, is_transient
from ..bus.url import redact
from ..errors import BusError


def bus_error(error: redis.RedisError, what: str, url: str) -> BusError:
    """``error`` met doing ``what`` on the bus at ``url`` (redacted)."""
    if isinstance(error, NotReplicated):
        return BusError(
            f"{what} may not be durable: {error}; a failover now could undo it (bus {redact(url)})"
        )
    if is_transient(error):
        return BusError(f"redis unreachable for {what}: {describe(error)} (bus {redact(url)})")
    return BusError(f"redis refused {what}: {error} (bus {redact(url)})")

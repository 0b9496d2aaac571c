"""A connection of its own to the node owning one slot of a Redis Cluster, for blocking reads
(``XREAD BLOCK``, ...), that follows the slot when it moves: `ClusterWire.dedicated`."""

from __future__ import annotations

from typing import Any

from redis.exceptions import AskError, ClusterError, MovedError

from .cluster_wire import LOST, MAX_HOPS, ClusterWire
from .slots import Address
from .wire import Command, Connection, WireConnection


class DedicatedWire:
    """One connection for blocking reads of one slot (`ClusterWire.dedicated`), with
    `WireConnection.execute`'s contract: its commands go to the slot's owner, following MOVED
    (to the new owner, from then on) and ASK (this call only); a connection lost raises
    ConnectionError and has the map refreshed, so the next call goes where the slot is then."""

    def __init__(self, cluster: ClusterWire, slot: int | None) -> None:
        self._cluster = cluster
        self.slot = slot
        self._wire: WireConnection | None = None
        self._address: Address | None = None

    @property
    def connection(self) -> Connection | None:
        """As `WireConnection.connection`."""
        return None if self._wire is None else self._wire.connection

    async def execute(self, *commands: Command, timeout: float | None = None) -> list[Any]:
        """As `WireConnection.execute`, on the slot's owner."""
        ask: Address | None = None
        for _ in range(MAX_HOPS + 1):
            address = ask or await self._cluster.owner(self.slot)
            wire = self._to(address)
            self._cluster._dedicated.add(self)
            batch = [("ASKING",), *commands] if ask else list(commands)
            try:
                got = await wire.execute(*batch, timeout=timeout, errors_in_place=True)
            except LOST:
                self._cluster.refresh_soon()
                raise
            replies = got[1:] if ask else got
            error = next((reply for reply in replies if isinstance(reply, Exception)), None)
            if not isinstance(error, AskError):
                if error is not None:
                    raise error
                return replies
            ask = (error.host or address[0], error.port)
            if isinstance(error, MovedError):
                if (slot_map := self._cluster.slot_map) is not None:
                    slot_map.moved(error.slot_id, ask)
                self._cluster.refresh_soon()
                ask = None
        raise ClusterError(f"too many redirections ({MAX_HOPS}) for slot {self.slot}")

    def _to(self, address: Address) -> WireConnection:
        if self._wire is None or self._address != address:
            if self._wire is not None:
                self._wire.close()
            self._wire, self._address = self._cluster.new_wire(address), address
        return self._wire

    def close(self) -> None:
        """Drop the connection; a call blocked on it gets ConnectionError. It can be used again."""
        if self._wire is not None:
            self._wire.close()
            self._wire = self._address = None
        self._cluster._dedicated.discard(self)

"""Calling actionhub from any Python service: one method set in three flavours.

``Client`` (blocking: Django, Flask, scripts, Celery tasks), ``AsyncClient`` (asyncio: FastAPI,
aiohttp, Starlette) and ``TrioClient`` (trio services that run no actions) publish, publish many,
request a reply, manage dead letters and operate live hubs, writing exactly what a hub writes
(`actionhub.bus.redis.keys`, `.scripts` and `.entries`; `actionhub.message`): keyed messages go
to the partition the hubs compute, delayed ones to the same delayed set and mover.
"""

from ._asyncio import AsyncClient
from ._sync import Client
from ._trio import TrioClient

__all__ = ["AsyncClient", "Client", "TrioClient"]

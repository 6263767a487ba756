"""ASGI middleware that names the replica in every answer (``X-Served-By``), so that an operator (or a test)
behind a load balancer sees which replica answered. The name is ``SHOPREC_REPLICA`` (features/settings.py),
else the host name."""
from __future__ import annotations

import socket

HEADER = b"x-served-by"


class ServedBy:
    """Mounted first (outermost of ours), so that refusals by the other middlewares (401, 403, 413, 415,
    429) carry the header too."""

    def __init__(self, app, name: str | None = None):
        from features.settings import Settings

        self.app = app
        self.name = (name or Settings().replica or socket.gethostname()).encode("latin-1", "replace")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named_send(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, self.name)]}
            await send(message)

        return await self.app(scope, receive, named_send)

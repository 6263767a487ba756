"""ASGI middleware that refuses request bodies over a size limit (BentoML sets none), and one
that keeps BentoML's concurrency limit working for async endpoints."""
from __future__ import annotations

import asyncio
import json

DEFAULT_MAX_BODY = 64 * 1024


class BodySizeLimit:
    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            return await self.app(scope, limited_receive, send)
        except _TooLarge:
            return await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps({"error": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class CountTowardsConcurrency:
    """Yields to the event loop once before each request's work. BentoML's ``max_concurrency``
    counts the requests that have started; an async endpoint whose body is already read runs
    start to end without yielding, so a burst would queue on the event loop, never reaching the
    limit, instead of being refused with 429. Added after (inside) BentoML's traffic middleware."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await asyncio.sleep(0)
        return await self.app(scope, receive, send)

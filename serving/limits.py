"""ASGI middleware that refuses request bodies over a size limit (BentoML sets none), and one
that keeps BentoML's concurrency limit working for async endpoints."""
from __future__ import annotations

import asyncio
import json

DEFAULT_MAX_BODY = 64 * 1024


class BodySizeLimit:
    """A declared length over the limit is refused before reading; any other body (chunked ones too) is read here,
    up to the limit, and handed on whole, so that one over it is a 413 from here, not an error inside the app (it
    was a 500 with a traceback in the log, without a key on the sign-in form)."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: tell the app so
                pending = [message]
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body"):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay():
            return pending.pop(0) if pending else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send):
        body = json.dumps({"error": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


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

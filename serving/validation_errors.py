"""ASGI middleware that words BentoML's request-validation errors for the caller.

BentoML answers a body that fails its pydantic model with 400 and
``{"error": "1 validation error for ChurnRiskRequestIODescriptor", "detail": [{"type", "loc", "msg", "url"}]}``:
the headline names an internal class and not the field, and each entry links to pydantic's site. The same answer
becomes ``{"error": "invalid request: min_probability: Input should be a valid number", "detail": [{"type", "loc",
"msg"}]}``: the fields and reasons in the headline (as every other 400 of the service words it), the entries kept
for programs, without the links. Every other answer passes through untouched.
"""
from __future__ import annotations

import json
import re

from serving.schemas import ID_PATTERN

_HEADLINE = re.compile(r"^\d+ validation errors? for \w+$")
_ID_MISMATCH = f"String should match pattern '{ID_PATTERN}'"


def reworded(body: bytes) -> bytes | None:
    """The caller's wording of a BentoML validation answer, or None for any other body."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(answer, dict) and isinstance(answer.get("error"), str) and _HEADLINE.match(answer["error"])
            and isinstance(answer.get("detail"), list) and answer["detail"]):
        return None
    detail = [{k: v for k, v in entry.items() if k != "url"} for entry in answer["detail"] if isinstance(entry, dict)]
    for e in detail:  # a model's own check (a ValueError) comes back as "Value error, <our words>"
        e["msg"] = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e["msg"] == _ID_MISMATCH:  # the id rule in words, not its 400-character pattern
            e["msg"] = "an id must not start or end with whitespace, nor hold control characters"
    reasons = "; ".join(f"{'.'.join(map(str, e.get('loc') or [])) or 'body'}: {e['msg']}" for e in detail)
    return json.dumps({"error": f"invalid request: {reasons}", "detail": detail}).encode()


class ReadableValidationErrors:
    """Buffers only 400 JSON answers (small) and rewords BentoML's validation ones."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def wording_send(message):
            if message["type"] == "http.response.start" and message["status"] == 400 and any(
                    k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in message.get("headers", [])):
                held["start"], held["body"] = message, b""
                return
            if message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = reworded(held["body"]) or held["body"]
                headers = [(k, v) for k, v in held.pop("start")["headers"] if k.lower() != b"content-length"]
                await send({"type": "http.response.start", "status": 400,
                            "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
            await send(message)

        return await self.app(scope, receive, wording_send)

"""Corrections to the OpenAPI document BentoML serves at ``/docs.json``, so that it says what
the server does (a schemathesis run checks every answer against it, tests/test_fuzz.py):

- a 400's ``detail`` is the list of pydantic field errors, not the string BentoML documents;
- exclusive bounds (pydantic's ``gt``) in OpenAPI 3.0's spelling;
- request bodies with required fields are required (BentoML marks every body optional);
- optional fields (default null) are nullable, as they are (BentoML drops the null);
- the statuses of our own refusals are documented: 401 (no valid key), 403 (key of another scope),
  409 (model refused, same body as 200; an experiment name in use), 404 (no experiment of that name), 413 (body too large), 415 (not JSON), 429 (overload or rate
  limit), 503 (no model, or feature disabled), 504;
- each keyed operation says its scope and that it takes ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from serving.auth import ROUTE_SCOPES

DOC_PATHS = {"/docs.json"}
ERROR = {"type": "object", "title": "Error", "required": ["error"],
         "properties": {"error": {"type": "string", "title": "Message"}, "detail": {"title": "Error Detail"}}}
FIELD_ERRORS = {"title": "Error Detail", "anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "object", "properties": {
        "loc": {"type": "array"}, "msg": {"type": "string"}, "type": {"type": "string"}}}}]}
REFUSALS = {
    "413": "Request body too large", "415": "Content-Type is not application/json",
    "429": "Too many requests in flight (overload), or over the key's rate limit: retry later (Retry-After)",
    "503": "No model loaded yet, or the feature is not configured", "504": "Not answered within the timeout",
}
BEARER = {"type": "http", "scheme": "bearer", "description": "an API key of the operation's scope "
                                                              "(`shoprec keys create --scope S`)"}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shoprec")
    except PackageNotFoundError:
        return "unknown"


# the experiments' own refusals (serving/experiments_api.py)
NAMED = {"/admin/experiments/create": ("409", "An experiment of that name exists (names are never reused)"),
         "/admin/experiments/stop": ("404", "No experiment of that name"),
         "/experiments/report": ("404", "No experiment of that name")}


def corrected(spec: dict) -> dict:
    info = spec.setdefault("info", {})
    if info.get("version") in (None, "None", ""):  # served from the project, not a built Bento: our package's version
        info["version"] = _package_version()
    _nullable_defaults(spec)
    _exclusive_bounds(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    if "InvalidArgument" in schemas:
        schemas["InvalidArgument"].setdefault("properties", {})["detail"] = FIELD_ERRORS
    schemas["Error"] = ERROR
    spec["components"].setdefault("securitySchemes", {})["bearer"] = BEARER
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, item in spec.get("paths", {}).items():
        post = item.get("post")
        if post is None:
            continue
        body = post.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if body.get("required"):
            post["requestBody"]["required"] = True
        responses = post.setdefault("responses", {})
        for status, description in REFUSALS.items():
            responses.setdefault(status, {"description": description, **error})
        if (scope := ROUTE_SCOPES.get(path)) is not None:
            post["security"] = [{"bearer": []}]
            post["description"] = f"{post.get('description', '')}\n\nScope: `{scope}` key.".lstrip()
            responses.setdefault("401", {"description": "Missing or invalid key", **error})
            responses.setdefault("403", {"description": f"A key of another scope (this one needs {scope})", **error})
        if path in NAMED:
            status, description = NAMED[path]
            responses.setdefault(status, {"description": description, **error})
        if path == "/admin/reload" and "200" in responses:
            responses.setdefault("409", {**responses["200"], "description": "Model refused; the old one keeps serving"})
    return spec


def _nullable_defaults(node) -> None:
    """OpenAPI 3.0 spelling of ``Optional[X] = None`` fields, which BentoML flattens to plain X (an
    enumeration must list null itself to allow it)."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None and "type" in node:
            node["nullable"] = True
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"].append(None)
        for value in node.values():
            _nullable_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_defaults(value)


def _exclusive_bounds(node) -> None:
    """OpenAPI 3.0 spelling of pydantic's ``gt``/``lt`` (JSON Schema 2020-12 writes the bound itself as
    ``exclusiveMinimum``; 3.0 wants ``minimum`` and ``exclusiveMinimum: true``)."""
    if isinstance(node, dict):
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = node.get(bound)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                node[limit], node[bound] = value, True
        for value in node.values():
            _exclusive_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exclusive_bounds(value)


INDEX_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"


@functools.cache
def index_page() -> bytes:
    """BentoML's API page at ``/`` (Swagger UI on /docs.json, served from BentoML's own static files) without the
    Google Tag Manager it ships: a third-party script on a keyed service that promises to load nothing from
    elsewhere. A plain page linking /docs.json where that page is not found or still names the tag manager."""
    import re

    import _bentoml_impl.server as bento_server

    plain = (b"<!DOCTYPE html><html lang='en'><head><meta charset='UTF-8'><title>shoprec API</title></head><body>"
             b"<p>The OpenAPI document: <a href='./docs.json'>/docs.json</a></p></body></html>")
    try:
        html = (Path(bento_server.__file__).parent / "main-openapi.html").read_text()
    except OSError:
        return plain
    html = re.sub(r"<!-- Google Tag Manager( \(noscript\))? -->.*?<!-- End Google Tag Manager( \(noscript\))? -->", "", html,
                  flags=re.S).replace("BentoML Prediction Service", "shoprec API")
    return plain if "googletagmanager" in html.lower() else html.encode()


class OpenAPIFixes:
    """ASGI middleware: rewrites the ``/docs.json`` answer with ``corrected`` and answers ``/`` with ``index_page``;
    passes everything else."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") == "/" and scope.get("method") in ("GET", "HEAD"):
            body = index_page()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"content-security-policy", INDEX_CSP.encode()), (b"x-content-type-options", b"nosniff")]})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return
        if scope["type"] != "http" or scope.get("path") not in DOC_PATHS:
            return await self.app(scope, receive, send)
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await flush()
            else:
                await send(message)

        async def flush():
            body = b"".join(chunks)
            if start.get("status") == 200:
                try:
                    body = json.dumps(corrected(json.loads(body))).encode()
                except ValueError:
                    pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, capture)

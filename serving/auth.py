"""Who may call what: scoped keys checked by an ASGI middleware before a request's body is read.

Each route has one scope (``ROUTE_SCOPES``): ``storefront`` (recommendations and events),
``marketing`` (propensity, churn risk; the marketers' page checks its own sign-in) and ``admin``.
Health, metrics and the API documentation are public; any other path needs an admin key, so a route
added without a scope is closed, not open. The key comes in ``Authorization: Bearer <key>`` (or the
older ``X-API-Key`` / ``X-Admin-Key`` headers). No valid key: 401; a key of another scope: 403;
too many requests for the key: 429 with ``Retry-After``; a JSON endpoint called with another media
type: 415 (400 when the header is malformed). Every marketing- and admin-scope call is recorded in
the access log with the number of customers its answer held (``count_customers``).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Callable

from features.access_log import AccessLog
from features.key_store import KeyRing, KeyStore, Principal, key_of
from features.settings import ENV_KEY_SCOPES, Settings
from serving.admin import request_notes
from serving.marketing_sessions import SessionStore
from serving.rate_limits import RateLimits

ROUTE_SCOPES = {
    "/recommend": "storefront", "/similar_items": "storefront", "/bought_together": "storefront",
    "/session": "storefront", "/rerank": "storefront", "/events": "storefront",
    "/propensity": "marketing", "/churn_risk": "marketing", "/customer_value": "marketing",
    "/admin/reload": "admin", "/admin/forget": "admin",
    "/admin/experiments/create": "admin", "/admin/experiments/stop": "admin",  # serving/experiments_api.py
    "/experiments": "marketing", "/experiments/report": "marketing",
}
PUBLIC = {"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/"}
PUBLIC_PREFIXES = ("/static_content/",)  # the API docs page's own files
PAGE_PREFIX = "/marketing"  # the marketers' page: sign-in form and session (serving/marketing_page.py)
CLOSED_SCOPE = "admin"  # any other path
RECORDED_SCOPES = ("marketing", "admin")
KEY_HEADERS = (b"x-api-key", b"x-admin-key")  # kept for callers from before Authorization: Bearer
STATE = "shoprec_access"
log = logging.getLogger("shoprec.auth")

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^\s*({_TOKEN})/({_TOKEN})\s*((?:;\s*{_TOKEN}=(?:{_TOKEN}|\"(?:[^\"\\]|\\.)*\")\s*)*);?\s*$")
_PARAM = re.compile(rf";\s*({_TOKEN})=({_TOKEN}|\"(?:[^\"\\]|\\.)*\")")


@dataclass
class AccessControl:
    """The running server's keys, rate limits and access log (one per worker)."""

    keys: KeyRing
    limits: RateLimits
    log: AccessLog
    sessions: SessionStore  # the marketers' page sign-ins

    @classmethod
    def from_settings(cls, settings: Settings) -> "AccessControl":
        env_keys = {f"SHOPREC_{field.upper()}": (scope, key) for field, scope in ENV_KEY_SCOPES.items()
                    if (key := settings.env_key(field))}
        keys = KeyRing(KeyStore(settings.keys_file), env_keys, settings.keys_refresh_s)
        return cls(keys, RateLimits(settings), AccessLog(settings.access_log), SessionStore(settings.sessions_file))


@dataclass
class CallRecord:
    """Put in the request's state by the middleware; the endpoint sets ``customers``."""

    principal: Principal
    customers: int = 0


def count_customers(request, n: int) -> None:
    """Record how many customers an answer held (for the access log); no-op outside the middleware."""
    record = getattr(request.state, STATE, None)
    if record is not None:
        record.customers = n


def key_name(request) -> str:
    """The name of the key that made this request (set by the middleware)."""
    return getattr(request.state, STATE).principal.name


def required_scope(path: str) -> str | None:
    """The scope a path needs; None for public paths and for the marketers' page (it checks itself)."""
    if path in PUBLIC or path.startswith(PUBLIC_PREFIXES) or path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/"):
        return None
    return ROUTE_SCOPES.get(path, CLOSED_SCOPE)


def given_key(headers) -> tuple[str | None, bool]:
    """(the key the request carries, whether an Authorization header was malformed). ``headers``:
    the ASGI list of (name, value) byte pairs, or a mapping of lower-case names to str."""
    get = _getter(headers)
    if isinstance(headers, list):
        names = [k.lower() for k, _ in headers if k.lower() in (b"authorization", *KEY_HEADERS)]
        if len(names) != len(set(names)):
            return None, True  # one header twice (a gateway adding its own?): which one counts would be a guess
    auth = get(b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            return None, True
        return token, False
    for name in KEY_HEADERS:
        if (value := get(name)) is not None and value.strip():
            return value.strip(), False
    return None, False


def _getter(headers) -> Callable[[bytes], str | None]:
    if isinstance(headers, list):
        found = {}
        for k, v in headers:
            found.setdefault(k.lower(), v)
        return lambda name: found[name].decode("latin-1") if name in found else None
    return lambda name: headers.get(name.decode())


def media_type_problem(value: str | None) -> tuple[int, str] | None:
    """(status, message) when a JSON endpoint may not take a body declared as ``value``; None when it may.
    No Content-Type is taken as JSON (as BentoML does)."""
    if value is None:
        return None
    match = _MEDIA_TYPE.match(value)
    if not match:
        return 400, "malformed Content-Type header (expected application/json)"
    if (match.group(1).lower(), match.group(2).lower()) != ("application", "json"):
        return 415, f"unsupported Content-Type {match.group(1)}/{match.group(2)}: this endpoint takes application/json"
    for name, param in _PARAM.findall(match.group(3)):
        if name.lower() == "charset" and param.strip('"').lower() not in ("utf-8", "utf8"):
            return 415, "unsupported charset: send application/json in UTF-8"
    return None


def service_control() -> AccessControl:
    import bentoml

    return bentoml.get_current_service().access


MAX_LOGGED_PATH = 200  # a made-up path of 60 KB is logged by its start and length


class ScopedKeys:
    """ASGI middleware (mounted on the BentoML service): the checks above, then the request goes on;
    afterwards, marketing- and admin-scope calls are recorded."""

    def __init__(self, app, control: Callable[[], AccessControl] = service_control):
        self.app = app
        self.control = control

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (needed := required_scope(scope["path"])) is None:
            return await self.app(scope, receive, send)
        control = self.control()
        headers = scope.get("headers") or []
        key, malformed = given_key(headers)
        principal = control.keys.lookup(key)
        path = scope["path"]
        shown = path if len(path) <= MAX_LOGGED_PATH else f"{path[:MAX_LOGGED_PATH]}... ({len(path):,} characters)"
        if principal is None:
            why = "malformed Authorization header" if malformed else ("unknown or revoked key" if key else "no key")
            log.info("401 %s %s: %s", scope.get("method"), shown, why)
            return await _json(send, 401, "missing or invalid API key: send Authorization: Bearer <key>",
                               [(b"www-authenticate", b'Bearer realm="shoprec"')])
        if principal.scope != needed:
            log.info("403 %s %s: key %s has scope %s", scope.get("method"), shown, principal.name, principal.scope)
            return await _json(send, 403, f"this key may not call {path}: it needs {key_of(needed)}")
        if (wait := control.limits.key_request(principal.name)) is not None:
            log.info("429 %s %s: key %s over its request rate", scope.get("method"), shown, principal.name)
            return await _json(send, 429, f"too many requests for this key: retry after {wait} s",
                               [(b"retry-after", str(wait).encode())])
        if scope.get("method") == "POST" and path in ROUTE_SCOPES:
            content_type = _getter(headers)(b"content-type")
            if (problem := media_type_problem(content_type)) is not None:
                log.info("%d POST %s: Content-Type %r", problem[0], path, (content_type or "")[:80])
                return await _json(send, *problem)
        record = CallRecord(principal)
        scope.setdefault("state", {})[STATE] = record
        if principal.scope not in RECORDED_SCOPES:
            with request_notes():  # the privacy note goes on the access log line (serving/admin.py)
                return await self.app(scope, receive, send)
        status = 500
        recorded, held, refused = False, None, False

        def write_record() -> bool:
            nonlocal recorded
            if recorded:
                return True
            recorded = True
            return control.log.record(principal.name, principal.scope, path, status,
                                      record.customers if status < 300 else 0) is not None

        async def watch(message):
            nonlocal status, held, refused
            if refused:
                return
            if message["type"] == "http.response.start":
                status, held = message["status"], message  # sent with the body, once the call is on record
                return
            if message["type"] == "http.response.body" and held is not None:
                # with the first part of the body, before the caller can have any of its answer: whoever reads the
                # log next sees this call. The handler has counted the customers by now. No record, no data.
                if not write_record() and status < 300:
                    refused = True
                    log.error("refused %s %s for key %s: the access record cannot be written", scope.get("method"),
                              shown, principal.name)
                    return await _json(send, 503, "this call cannot be put on record (the access log cannot be "
                                                  "written), so no customer data is sent: tell the operator")
                await send(held)
                held = None
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            write_record()  # no complete answer (an error, a disconnect): recorded all the same


async def _json(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})

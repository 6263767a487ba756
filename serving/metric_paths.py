"""Bounded ``endpoint`` labels for BentoML's request metrics.

BentoML's traffic middleware (outermost, before any key is checked) labels every request's series with its raw
path: each new path a caller makes up, refused with 401 or not, added about 20 series to ``/metrics`` for good (200
requests with 60 KB paths took the worker from 832 MB to 1.29 GB and ``/metrics`` to 243 MB). ``install()``, called
when the service module loads (before BentoML builds its middleware stack), swaps in a subclass that labels a path
the service does not serve as ``UNMATCHED``; the request itself goes on with its own path, so routing, keys and
answers are unchanged.
"""
from __future__ import annotations

UNMATCHED = "/{unmatched}"
_ORIGINAL = "shoprec.path"
PAGE_PREFIXES = ("/marketing",)  # mounted apps: their own routes are listed by ``known_paths``
STATIC_PREFIX = "/static_content/"  # BentoML's files for the API page at /


def known_paths() -> frozenset[str]:
    """Every path the service answers: its API routes, health, metrics, docs, the API page and the mounted pages."""
    from bentoml._internal.context import server_context

    from serving.marketing_page import app as marketing_page

    fixed = {"/", "/docs.json", "/livez", "/readyz", "/healthz", "/metrics"}
    pages = {PAGE_PREFIXES[0] + getattr(route, "path", "") for route in marketing_page.routes} | {PAGE_PREFIXES[0]}
    return frozenset(fixed | set(server_context.service_routes) | pages)


def label(path: str, known: frozenset[str]) -> str:
    if path in known:
        return path
    if path.startswith(STATIC_PREFIX):
        return STATIC_PREFIX + "{file}"
    return UNMATCHED


class _OwnPath:
    """Inside the metrics middleware: the request continues with the path it came with."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if _ORIGINAL in scope:
            scope = {k: v for k, v in scope.items() if k != _ORIGINAL} | {"path": scope[_ORIGINAL]}
        return await self.app(scope, receive, send)


def bounded(base: type) -> type:
    """``base`` (a BentoML traffic-metrics middleware) with the endpoint label bounded to the served paths."""

    class BoundedPathMetrics(base):
        def __init__(self, app, *args, **kwargs):
            super().__init__(_OwnPath(app), *args, **kwargs)
            self._known: frozenset[str] | None = None

        async def __call__(self, scope, receive, send):
            path = scope.get("path")
            if scope.get("type", "").startswith("http") and isinstance(path, str) and path != "/metrics":
                if self._known is None:
                    self._known = known_paths()
                if (shown := label(path, self._known)) != path:
                    scope = {**scope, "path": shown, _ORIGINAL: path}
            return await super().__call__(scope, receive, send)

    BoundedPathMetrics.__name__ = BoundedPathMetrics.__qualname__ = f"Bounded{base.__name__}"
    return BoundedPathMetrics


def install() -> None:
    """Replace BentoML's traffic-metrics middlewares by their bounded versions (idempotent)."""
    from bentoml._internal.server.http import instruments

    for name in ("RunnerTrafficMetricsMiddleware", "HTTPTrafficMetricsMiddleware"):
        cls = getattr(instruments, name)
        if not cls.__name__.startswith("Bounded"):
            setattr(instruments, name, bounded(cls))

"""The marketers' page: the churn-risk list as a web page, mounted on the BentoML service.

    Shoprec.mount_asgi_app(app, path="/marketing")   # in serving/service.py

    GET  /marketing/                    the list with filters (segment, min probability, min value), reasons,
                                        segment sizes as an inline SVG chart, paging
    GET  /marketing/churn_risk.csv      the rows on screen for the same query, as CSV
    POST /marketing/login, /logout      API key form -> HttpOnly session cookie, and back

Behind the same API key as ``/churn_risk`` (``serving.propensity``): the ``X-API-Key`` header,
or the login form, which sets a cookie holding an expiring HMAC of the key (never the key
itself). Keys and tokens are compared in constant time and never logged. Filters, paging and
the CSV columns come from ``PropensityApi.churn_risk`` and ``PropensityBundle.to_csv``, so the
page, the API and ``shoprec churn-list`` agree.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from serving import marketing_views as views
from serving.propensity import KEY_HEADER, AtRiskCustomer, ChurnRiskAnswer, ChurnRiskRequest, PropensityApi, key_matches

COOKIE = "shoprec_marketing"
SESSION_SECONDS = 12 * 3600
HEADERS = {  # personal data: never cached, never framed, no script, nothing loaded from elsewhere
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NO_KEY = "the marketers' page is disabled: the server has no API key (set SHOPREC_API_KEY or SHOPREC_API_KEY_FILE)"


@dataclass
class Backend:
    """What the page reads: the service's propensity answers and its API key."""

    api: PropensityApi
    key: bytes | None


def service_backend() -> Backend:
    """The running Shoprec service's own objects (one bundle in memory, one key, as ``/churn_risk``)."""
    import bentoml

    svc = bentoml.get_current_service()
    return Backend(svc.propensity_api, svc.api_key)


def session_token(key: bytes, issued: int) -> str:
    """``<issued>.<hex HMAC-SHA256(key, issued)>``: proves the key was given, without holding it."""
    return f"{issued}.{hmac.new(key, f'shoprec-marketing:{issued}'.encode(), hashlib.sha256).hexdigest()}"


def session_valid(key: bytes | None, token: str | None, now: float) -> bool:
    if not key or not token:
        return False
    issued, _, _ = token.partition(".")
    if not issued.isdigit() or not 0 <= now - int(issued) <= SESSION_SECONDS:
        return False
    return hmac.compare_digest(session_token(key, int(issued)).encode(), token.encode())


def _authorized(request: Request, key: bytes | None) -> bool:
    return key_matches(key, request.headers.get(KEY_HEADER)) or session_valid(key, request.cookies.get(COOKIE), time.time())


def _base(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _request(params) -> ChurnRiskRequest:
    """Filters from the query string; empty fields mean the default."""
    fields = ("segment", "min_probability", "min_value", "page", "page_size")
    # query strings are text: validate them lax (the JSON API's models are strict, serving/schemas.py)
    return ChurnRiskRequest.model_validate({f: params[f] for f in fields if params.get(f, "").strip()}, strict=False)


def _invalid(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())


def csv_text(api: PropensityApi, answer: ChurnRiskAnswer) -> str:
    """The answer's rows in the CSV layout of ``shoprec churn-list`` (``PropensityBundle.to_csv``)."""
    frame = pd.DataFrame([c.model_dump() for c in answer.customers], columns=list(AtRiskCustomer.model_fields))
    frame = frame.rename(columns={"days_since_last_order": "recency_days", "orders": "frequency", "total_spend": "monetary"})
    out = io.StringIO()
    api.bundle.to_csv(frame, out)
    return out.getvalue()


def segment_sizes(api: PropensityApi, min_probability: float = 0.0, min_value: float = 0.0) -> dict[str, int]:
    """Customers per segment passing the probability and value filters (forgotten shoppers left out, as in the list)."""
    rows = api.bundle.at_risk(min_probability, min_value)
    if api.hidden is not None:
        rows = rows[[not gone for gone in api.hidden(rows["user_id"].tolist())]]
    return rows["segment"].value_counts().to_dict()


def create_app(backend: Callable[[], Backend] = service_backend) -> Starlette:
    """The page as a Starlette app; ``backend`` is called per request (tests pass their own)."""

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            b = backend()
            if b.key is None:
                return _html(views.message_page("disabled", NO_KEY), 503)
            if not _authorized(request, b.key):
                return _html(views.login_page(_base(request)), 401)
            if b.api.bundle is None:
                return _html(views.message_page("no propensity scores", b.api.missing), 503)
            try:
                req = _request(request.query_params)
            except ValidationError as e:
                return _html(views.message_page("bad filter", _invalid(e)), 400)
            return handler(request, b.api, req)
        return endpoint

    def page(request: Request, api: PropensityApi, req: ChurnRiskRequest) -> Response:
        answer = api.churn_risk(req)
        chart = views.segment_chart(segment_sizes(api), segment_sizes(api, req.min_probability, req.min_value), req.segment)
        return _html(views.list_page(_base(request), req, answer, chart))

    def download(request: Request, api: PropensityApi, req: ChurnRiskRequest) -> Response:
        name = "_".join(["churn_risk", req.segment or "all", f"p{req.min_probability:g}", f"v{req.min_value:g}",
                         f"page{req.page}"])
        return Response(csv_text(api, api.churn_risk(req)), media_type="text/csv; charset=utf-8",
                        headers=HEADERS | {"Content-Disposition": f'attachment; filename="{name}.csv"'})

    async def login(request: Request) -> Response:
        b = backend()
        if b.key is None:
            return _html(views.message_page("disabled", NO_KEY), 503)
        given = (await request.form()).get("key")
        if not isinstance(given, str) or not key_matches(b.key, given.strip()):
            return _html(views.login_page(_base(request), "That is not the API key."), 401)
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=HEADERS)
        response.set_cookie(COOKIE, session_token(b.key, int(time.time())), max_age=SESSION_SECONDS,
                            path=_base(request) or "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=_base(request) or "/", httponly=True, samesite="strict")
        return response

    return Starlette(routes=[
        Route("/", guarded(page), methods=["GET"]),
        Route("/churn_risk.csv", guarded(download), methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ])


app = create_app()

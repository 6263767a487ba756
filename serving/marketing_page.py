"""The marketers' page: the churn-risk list as a web page, mounted on the BentoML service.

    Shoprec.mount_asgi_app(app, path="/marketing")   # in serving/service.py

    GET  /marketing/                    the list with filters (segment, lifecycle stage, min probability, min value), reasons,
                                        segment sizes as an inline SVG chart, paging
    GET  /marketing/churn_risk.csv      the rows on screen for the same query, as CSV
    GET  /marketing/dashboard           cohort retention, funnel, stage flows, CLV by segment/persona/stage
                                        (serving/marketing_dashboard.py; aggregates, no customer listed)
    GET  /marketing/login               the sign-in form (where the page sends a browser that is not signed in)
    POST /marketing/login, /logout      sign in with a marketing key (its name and the key), sign out

Who may see it: a marketing-scope key (serving/auth.py), sent as ``Authorization: Bearer <key>`` or
``X-API-Key`` by scripts, or a sign-in session (serving/marketing_sessions.py): a random token in an
HttpOnly, SameSite=Strict cookie (Secure over HTTPS), kept server-side, ended by signing out or by
revoking the key. Failed sign-ins are throttled per account and per client address (5 failures in 15
minutes, then 429 for wrong keys; serving/rate_limits.py); the right key always signs in, so others who know
an account's name cannot lock its owner out. Every form carries a CSRF token that must match a
cookie of the same name (403 otherwise). Each view and download is recorded in the access log with
the number of customers shown. Filters, paging and the CSV columns come from
``PropensityApi.churn_risk`` and ``PropensityBundle.to_csv``, so the page, the API and
``shoprec churn-list`` agree.
"""
from __future__ import annotations

import hmac
import io
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from features.key_store import Principal, digest
from serving import marketing_views as views
from serving.auth import AccessControl, given_key
from serving.experiments_page import Reports, experiments_page, service_experiment_log
from serving.marketing_dashboard import DashboardRequest, dashboard_page, visible_scores
from serving.marketing_sessions import SESSION_SECONDS
from serving.propensity import AtRiskCustomer, ChurnRiskAnswer, ChurnRiskRequest, PropensityApi

COOKIE = "shoprec_marketing"
CSRF_COOKIE = "shoprec_csrf"
SCOPE = "marketing"
HEADERS = {  # personal data: never cached, never framed, no script, nothing loaded from elsewhere
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
log = logging.getLogger("shoprec.marketing")


@dataclass
class Backend:
    """What the page reads: the service's propensity answers and its access control (keys, sessions,
    sign-in throttling, access log)."""

    api: PropensityApi
    access: AccessControl


def service_backend() -> Backend:
    """The running Shoprec service's own objects (one bundle in memory, the same keys as the API)."""
    import bentoml

    svc = bentoml.get_current_service()
    return Backend(svc.propensity_api, svc.access)


def caller(request: Request, access: AccessControl) -> tuple[Principal | None, int]:
    """(who, 200) for a marketing key in the headers or a live session; (None, 401) without either,
    (None, 403) for a key of another scope."""
    key, malformed = given_key(request.headers)
    if key is not None or malformed:
        principal = access.keys.lookup(key)
        if principal is None:
            return None, 401
        return (principal, 200) if principal.scope == SCOPE else (None, 403)
    session = access.sessions.get(request.cookies.get(COOKIE))
    if session is not None and (principal := access.keys.by_digest(session.key_sha256)) is not None:
        return principal, 200  # a session is only ever made for a marketing key
    return None, 401


def _csrf_ok(request: Request, form) -> bool:
    cookie, field = request.cookies.get(CSRF_COOKIE), form.get("csrf")
    return bool(cookie) and isinstance(field, str) and hmac.compare_digest(cookie.encode(), field.encode())


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _base(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _html(text: str, status: int = 200, headers: dict | None = None) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS | (headers or {}))


def _browser(request: Request) -> bool:
    """A browser's navigation asks for HTML; a script (curl, requests: */*) does not."""
    return "text/html" in request.headers.get("accept", "")


def _refusal(request: Request, title: str, text: str, status: int) -> Response:
    """A page for a browser; for a script the API's JSON error (``{"error": ...}``), not HTML to scrape."""
    if _browser(request):
        return _html(views.message_page(title, text, back=_base(request) if status == 400 else None), status)
    return JSONResponse({"error": f"{title}: {text}"}, status_code=status, headers=HEADERS)


def _loggable(account: str, keys) -> str:
    """An account name as the log may show it: a key typed into the name field (anything that is a key, or looks
    like one or like no key's name) is never written."""
    if keys.lookup(account) is not None or account.startswith("sk_") or \
            not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", account):
        return "<not a key name>"
    return account


def _csrf_token(request: Request) -> str:
    """The token the page's forms carry: the CSRF cookie's value, or a new one (``_with_csrf`` sets it)."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def _with_csrf(request: Request, response: Response, token: str) -> Response:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, path=_base(request) or "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


FILTER_FIELDS = ("segment", "stage", "min_probability", "min_value", "page", "page_size")


def _request(params) -> ChurnRiskRequest:
    """Filters from the query string; empty fields mean the default."""
    fields = FILTER_FIELDS
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


def segment_sizes(api: PropensityApi, min_probability: float = 0.0, min_value: float = 0.0,
                  stage: str | None = None) -> dict[str, int]:
    """Customers per segment passing the probability, value and stage filters (forgotten shoppers left out, as in the
    list); {} when none passes."""
    rows = api.bundle.at_risk(min_probability, min_value, stage=stage)
    if api.hidden is not None and len(rows):
        rows = rows[np.array([not gone for gone in api.hidden(rows["user_id"].tolist())], dtype=bool)]
    return {str(k): int(v) for k, v in rows["segment"].value_counts().items()}


def create_app(backend: Callable[[], Backend] = service_backend, experiment_log: Callable = service_experiment_log) -> Starlette:
    """The page as a Starlette app; ``backend`` (and ``experiment_log``) are called per request (tests pass their own)."""
    reports = Reports()

    def sign_in_page(request: Request, status: int, message: str = "", headers: dict | None = None) -> Response:
        token = _csrf_token(request)
        return _with_csrf(request, _html(views.login_page(_base(request), token, message), status, headers), token)

    def admit(request: Request, scores: bool = True) -> tuple[Backend, Principal | None, Response | None]:
        """(backend, who, None) for a marketing key or session with scores to show; else the refusal."""
        b = backend()
        principal, status = caller(request, b.access)
        if status == 403:
            return b, None, _refusal(request, "not allowed", "This key may not open the marketers' page: it needs a "
                                                             "marketing key.", 403)
        nothing_given = given_key(request.headers) == (None, False)
        if principal is None and nothing_given and _browser(request):  # a browser: to the sign-in form
            return b, None, RedirectResponse(f"{_base(request)}/login", status_code=303, headers=HEADERS)
        if principal is None:  # a script without a key or with a bad one
            return b, None, _refusal(request, "not signed in", "Missing or invalid API key (send Authorization: "
                                                               "Bearer <a marketing key>).", 401)
        if scores and b.api.bundle is None:
            return b, None, _refusal(request, "no propensity scores", b.api.missing, 503)
        return b, principal, None

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            b, principal, refusal = admit(request)
            if refusal is not None:
                return refusal
            if unknown := sorted(set(request.query_params) - set(FILTER_FIELDS)):  # a typo must not show everyone
                return _refusal(request, "bad filter", f"unknown filter {', '.join(unknown)}: the filters are "
                                                       f"{', '.join(FILTER_FIELDS)}", 400)
            try:
                req = _request(request.query_params)
            except ValidationError as e:
                return _refusal(request, "bad filter", _invalid(e), 400)
            if why := b.api.stage_problem(req.stage):
                return _refusal(request, "bad filter", why, 400)
            answer = b.api.churn_risk(req)
            if b.access.log.record(principal.name, SCOPE, request.url.path, 200, len(answer.customers)) is None:
                return _refusal(request, "not recorded", "This view cannot be put on record (the access log cannot be "
                                                         "written), so no customer is shown: tell the operator.", 503)
            return handler(request, b.api, req, answer)
        return endpoint

    def page(request: Request, api: PropensityApi, req: ChurnRiskRequest, answer: ChurnRiskAnswer) -> Response:
        chart = views.segment_chart(segment_sizes(api), segment_sizes(api, req.min_probability, req.min_value, req.stage), req.segment)
        token = _csrf_token(request)
        return _with_csrf(request, _html(views.list_page(_base(request), req, answer, chart, token, api.bundle.stages)),
                          token)

    def download(request: Request, api: PropensityApi, req: ChurnRiskRequest, answer: ChurnRiskAnswer) -> Response:
        name = "_".join(["churn_risk", req.segment or "all", *([req.stage] if req.stage else []),
                         f"p{req.min_probability:g}", f"v{req.min_value:g}", f"page{req.page}"])
        return Response(csv_text(api, answer), media_type="text/csv; charset=utf-8",
                        headers=HEADERS | {"Content-Disposition": f'attachment; filename="{name}.csv"'})

    async def dashboard(request: Request) -> Response:
        """Cohorts, funnel, stage flows and CLV by group (serving/marketing_dashboard.py): aggregates only."""
        b, principal, refusal = admit(request)
        if refusal is not None:
            return refusal
        if (report := b.api.bundle.meta.get("value")) is None:
            return _html(views.message_page("no customer value", "The published propensity bundle has no customer "
                                            "value: train again (`shoprec train` with orders) and publish."), 503)
        fields = ("segment", "clv_by")
        try:
            req = DashboardRequest.model_validate({f: request.query_params[f] for f in fields
                                                   if request.query_params.get(f, "").strip()})
        except ValidationError as e:
            return _html(views.message_page("bad filter", _invalid(e), back=_base(request)), 400)
        b.access.log.record(principal.name, SCOPE, request.url.path, 200, 0)  # no customer is shown, only groups
        token = _csrf_token(request)
        html = dashboard_page(_base(request), req, report, visible_scores(b.api.bundle.scores, b.api.hidden),
                              b.api.version, token)
        return _with_csrf(request, _html(html), token)

    async def experiments(request: Request) -> Response:
        """A/B tests: SRM check, variants, lifts, decision (serving/experiments_page.py); aggregates only."""
        b, principal, refusal = admit(request, scores=False)
        if refusal is not None:
            return refusal
        import anyio

        reps = await anyio.to_thread.run_sync(lambda: reports(experiment_log()))  # stopped ones kept between loads
        b.access.log.record(principal.name, SCOPE, request.url.path, 200, 0)  # no customer is shown, only groups
        token = _csrf_token(request)
        return _with_csrf(request, _html(experiments_page(_base(request), reps, token)), token)

    async def login_form(request: Request) -> Response:
        return sign_in_page(request, 200)

    async def login(request: Request) -> Response:
        b = backend()
        form = await request.form()
        if not _csrf_ok(request, form):
            return _html(views.message_page("form expired", "This form is not from this page or has expired: "
                                                            "reload the page and try again."), 403)
        account = str(form.get("account") or "").strip()[:64]
        address = _client(request)
        key = form.get("key")
        principal = b.access.keys.lookup(key.strip()) if isinstance(key, str) else None
        if principal is None or principal.scope != SCOPE or principal.name != account:
            # a right key always gets in (256 random bits cannot be guessed, so failures by others, who only need
            # the account's name, must not lock its owner out); wrong ones are throttled per account and address
            shown = _loggable(account, b.access.keys)
            if (wait := b.access.limits.login_blocked(account, address)) is not None:
                log.warning("sign-in refused (too many failures) for account %r from %s", shown, address)
                return sign_in_page(request, 429, f"Too many failed sign-ins: try again in {-(-wait // 60)} minute(s).",
                                    {"Retry-After": str(wait)})
            b.access.limits.login_failed(account, address)
            log.info("failed sign-in for account %r from %s", shown, address)
            return sign_in_page(request, 401, "That name and key do not match a marketing key.")
        token = b.access.sessions.create(principal.name, digest(key.strip()))
        log.info("sign-in: key %s from %s", principal.name, address)
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=HEADERS)
        response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, path=_base(request) or "/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        b = backend()
        form = await request.form()
        if not _csrf_ok(request, form):
            return _html(views.message_page("form expired", "This form is not from this page or has expired: "
                                                            "reload the page and try again."), 403)
        b.access.sessions.end(request.cookies.get(COOKIE))  # the token is dead everywhere, not only in this browser
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=_base(request) or "/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    return Starlette(routes=[
        Route("/", guarded(page), methods=["GET"]),
        Route("/churn_risk.csv", guarded(download), methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/experiments", experiments, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ])


app = create_app()

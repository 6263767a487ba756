"""The shoprec BentoML service: storefront recommendations from the published champion.

Loads the bundle from the BentoML model store (``SHOPREC_MODEL``, default
``shoprec-recommender:latest``); MLflow is never touched on the request path. Real-time
events go to the event store (``SHOPREC_EVENTS_URL``, default ``sqlite:///data/events.db``).
A new model is swapped in without a restart (``POST /admin/reload`` or polling, serving/reload.py);
the admin endpoints and forgetting a shopper are in serving/admin.py.
"""
from __future__ import annotations

import datetime as dt
import gc
import os

import anyio
import bentoml
from starlette.responses import Response

from features.event_store import open_event_store
from features.settings import Settings
from serving import accept_share, collector, experiments_api, metric_paths
from serving.admin import ForgetAnswer, ForgetRequest, ReloadAnswer, ReloadRequest, ServicePrivacy, configure_logging
from serving.auth import AccessControl, ScopedKeys, count_customers, key_name
from serving.event_intake import EventIntake
from serving.experiments import ServiceExperiments
from serving.limits import BodySizeLimit, CountTowardsConcurrency
from serving.monitoring import LiveMonitor
from serving.openapi import OpenAPIFixes
from serving.served_by import ServedBy
from serving.turns import WorkTurns
from serving.validation_errors import ReadableValidationErrors
from serving.marketing_page import app as marketing_page
from serving.customer_value import CustomerValueAnswer, CustomerValueRequest, customer_value, missing_value
from serving.propensity import ChurnRiskAnswer, ChurnRiskRequest, PropensityAnswer, PropensityApi, PropensityRequest
from serving.schemas import (BoughtTogetherRequest, EventsAck, EventsRequest, FilterFields, Recommendations,
                             RecommendRequest, ReplyLabels, RerankRequest, SessionRequest, SimilarItemsRequest,
                             Viewer, recommendations_json)
from serving.reload import ANONYMOUS, POLL_ENV, ModelSlot, Served
from training.storefront import Answer, Filters

MODEL_TAG_ENV = "SHOPREC_MODEL"
DEFAULT_MODEL_TAG = "shoprec-recommender:latest"
NOT_READY = "no model loaded yet: publish one (`shoprec publish`), then POST /admin/reload; /readyz turns 200 when one serves"


WORKERS_ENV = "SHOPREC_WORKERS"
WORKERS = Settings().workers  # one per core; the model's arrays are memory-mapped, so shared
accept_share.install(WORKERS)  # new connections shared out between the workers (serving/accept_share.py)


def reload_poll_seconds(environ) -> float:
    """How often to look for a new champion. With several workers, ``POST /admin/reload`` reaches
    only the one that answers it: the others poll (every 10 s unless set), so all swap."""
    if environ.get(POLL_ENV):
        return float(environ[POLL_ENV])
    return 10.0 if int(environ.get(WORKERS_ENV) or 1) > 1 else 0.0


def _filters(r: FilterFields) -> Filters:
    return Filters(r.category, r.in_stock, r.min_price, r.max_price)


def _unfilterable(m: Served, r: FilterFields) -> str:
    """Why the request's filters cannot apply to the served model (it was trained without an item catalogue), or ''.
    They used to be dropped silently: a category page got the unfiltered list, postage included."""
    if m.store.bundle.catalog is not None or not _filters(r).active():
        return ""
    given = [f for f in ("category", "in_stock", "min_price", "max_price") if getattr(r, f) is not None]
    return (f"{', '.join(given)}: this shop's model was trained without an item catalogue, so there is no category, "
            "stock or price to filter on (train with --items FILE)")


# Overload: beyond 64 requests in flight the server answers 429 at once instead of queueing (one worker,
# ~3 ms a request: at most ~0.2 s of queue); a request still unanswered after 10 s gets 504.
# Override per deployment: BENTOML_CONFIG_OPTIONS="services.shoprec.traffic.max_concurrency=N".
@bentoml.service(name="shoprec", traffic={"timeout": 10, "max_concurrency": 64}, workers=WORKERS)
class Shoprec:
    def __init__(self) -> None:
        configure_logging()  # shopper ids in logs only as keyed hashes (serving/admin.py)
        self.models = ModelSlot.from_env()  # swapped whole by /admin/reload or polling (serving/reload.py)
        self.models.reload()  # a missing or broken model: the server starts, /readyz says 503
        self.models.start_polling(reload_poll_seconds(os.environ))
        self.privacy = ServicePrivacy.from_env()
        # the newest churn bundle of this service's shop (never another shop's); none: the endpoints answer 503
        self.propensity_api = PropensityApi.from_store(self.models.shop)
        self.settings = Settings()
        self.access = AccessControl.from_settings(self.settings)  # keys, rate limits, access log (serving/auth.py)
        self.intake = EventIntake(self.access.limits, self.settings.clock_skew_s)  # what /events accepts
        self.loaded_at = dt.datetime.now(dt.timezone.utc).timestamp()
        self.events = open_event_store(self.settings.events_url)
        self.experiments = ServiceExperiments(self.settings.events_url, self.models)  # A/B tests (serving/experiments.py)
        self.propensity_api.hidden = self.privacy.hide  # forgotten shoppers leave the churn list at once
        self.monitor = LiveMonitor.from_settings(self.settings)  # drift of live traffic (serving/monitoring.py)
        self.monitor.start()
        self.turns = WorkTurns()  # the storefront work of one loop turn, back to back (serving/turns.py)
        collector.tune()  # fewer young-generation collections per request (serving/collector.py)
        gc.freeze()  # the loaded model's objects leave the collector's generations: shorter GC pauses per request

    def __is_ready__(self) -> bool:
        return self.models.ready

    def _reply(self, m: Served, answer: Answer) -> Response:
        """The answer as ``Recommendations`` JSON, written at once (serving/schemas.py); under an A/B test with
        request_id, experiment and variant."""
        return Response(recommendations_json(answer, self.experiments.label(ReplyLabels(m.version), answer)),
                        media_type="application/json")

    def _recent(self, m: Served, user_id: str) -> list[tuple[str, str]]:
        trained = m.store.bundle.meta.get("trained_at")
        since = dt.datetime.fromisoformat(trained.replace("Z", "+00:00")).timestamp() if trained else 0.0
        return self.events.recent(user_id, since=since)

    def _shopper(self, m: Served, user_id: str) -> tuple[str, list[tuple[str, str]]]:
        """The id and recent events to personalise with; a forgotten shopper is anonymous (fallback only)."""
        if self.privacy.is_forgotten(user_id):
            return ANONYMOUS, []
        return user_id, self._recent(m, user_id)

    async def _viewed(self, endpoint: str, r: Viewer, m: Served, call) -> Answer:
        """An item page's answer (``call`` on a store), from the arm of the endpoint's A/B test that the viewer is in:
        by user id, else by session id; a forgotten shopper counts as anonymous (their session id only)."""
        user_id = r.user_id if r.user_id is not None and not self.privacy.is_forgotten(r.user_id) else ANONYMOUS
        answer = await self.turns.run(lambda: self.experiments.run(endpoint, user_id or r.session_id or "", user_id,
                                                                   m, call))
        if r.user_id is not None:
            self.privacy.log_request(endpoint, r.user_id, answer.source, len(answer.item_ids))
        return answer

    # The storefront endpoints are async: their work (numpy, one indexed SQLite read) runs on the event loop,
    # which saves the thread hand-off per request (~40% more requests/s on 2 busy cores), grouped with the other
    # requests of the same loop turn (serving/turns.py). /events stays in a thread: its commit waits for fsync.
    @bentoml.api(input_spec=RecommendRequest, route="/recommend")
    async def recommend(self, ctx: bentoml.Context, **req) -> Recommendations:
        """Top-k items for a shopper, with filters; their latest events are folded in; unknown shoppers get the fallback."""
        r = RecommendRequest.model_construct(**req)  # validated by BentoML (input_spec): not again
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)
        if why := _unfilterable(m, r):
            return _error(ctx, 400, why)

        def work() -> Answer:
            user_id, events = self._shopper(m, r.user_id)
            return self.experiments.run("recommend", user_id, user_id, m, lambda store: store.recommend(
                user_id, r.k, r.exclude_bought, r.exclude, _filters(r), events=events))  # the A/B test's arm, if any
        answer = await self.turns.run(work)
        self.privacy.log_request("recommend", r.user_id, answer.source, len(answer.item_ids))
        self.monitor.recommend(m, answer)
        return self._reply(m, answer)

    @bentoml.api(input_spec=SimilarItemsRequest, route="/similar_items")
    async def similar_items(self, ctx: bentoml.Context, **req) -> Recommendations:
        """Items like an item (product page); an unknown item gets popular items, labelled as fallback."""
        r = SimilarItemsRequest.model_construct(**req)
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)
        if why := _unfilterable(m, r):
            return _error(ctx, 400, why)
        return self._reply(m, await self._viewed("similar_items", r, m,
                                                 lambda store: store.similar_items(r.item_id, r.k, _filters(r))))

    @bentoml.api(input_spec=BoughtTogetherRequest, route="/bought_together")
    async def bought_together(self, ctx: bentoml.Context, **req) -> Recommendations:
        """Complements for a basket (cart page): co-purchase rules blended with item similarity."""
        r = BoughtTogetherRequest.model_construct(**req)
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)
        if why := _unfilterable(m, r):
            return _error(ctx, 400, why)
        return self._reply(m, await self._viewed("bought_together", r, m,
                                                 lambda store: store.bought_together(r.items, r.k, filters=_filters(r))))

    @bentoml.api(input_spec=SessionRequest, route="/session")
    async def session(self, ctx: bentoml.Context, **req) -> Recommendations:
        """Anonymous shopper: recommendations from the items viewed in the session, no user id."""
        r = SessionRequest.model_construct(**req)
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)
        if why := _unfilterable(m, r):
            return _error(ctx, 400, why)
        return self._reply(m, await self.turns.run(lambda: self.experiments.run(
            "session", r.session_id or "", "", m, lambda store: store.session(r.items, r.k, _filters(r)))))

    @bentoml.api(input_spec=RerankRequest, route="/rerank")
    async def rerank(self, ctx: bentoml.Context, **req) -> Recommendations:
        """The caller's candidates (up to 500) in personal order; unknown ids keep their order at the end."""
        r = RerankRequest.model_construct(**req)
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)

        def work() -> Answer:
            user_id, events = self._shopper(m, r.user_id)
            return self.experiments.run("rerank", user_id, user_id, m,
                                        lambda store: store.rerank(user_id, r.items, events=events))
        answer = await self.turns.run(work)
        self.privacy.log_request("rerank", r.user_id, answer.source, len(answer.item_ids))
        return self._reply(m, answer)

    @bentoml.api(input_spec=EventsRequest, route="/events")
    def events_in(self, ctx: bentoml.Context, **req) -> EventsAck:
        """Store a shopper's new views, cart adds and purchases durably; the next recommend reflects them.
        Events in the future, before the model's data, or of unknown items: 400, nothing stored; too many: 429."""
        r = EventsRequest(**req)
        if (m := self.models.current) is None:
            return _error(ctx, 503, NOT_READY)
        self.monitor.events(m, r.events)  # what shoppers do, stored or not
        events = self.intake.accept(r, m.store, key_name(ctx.request),
                                    self.privacy.pseudonym(r.user_id))
        if not isinstance(events, list):  # the refusal (serving/event_intake.py)
            ctx.response.status_code = events.status_code
            return events
        if self.privacy.is_forgotten(r.user_id):  # forgotten: nothing of theirs is stored
            return EventsAck(stored=0)
        stored = self.events.append(r.user_id, events)
        self.experiments.record_outcomes(r.user_id, events, r.events)  # purchases and clicks, for A/B tests
        return EventsAck(stored=stored)

    @bentoml.api(input_spec=PropensityRequest, route="/propensity")
    async def propensity(self, ctx: bentoml.Context, **req) -> PropensityAnswer:
        """Churn and conversion probabilities and segment per customer; unknown customers answered as unknown."""
        if self.propensity_api.bundle is None:
            return _error(ctx, 503, self.propensity_api.missing)
        answer = self.propensity_api.propensity(PropensityRequest(**req))
        self.monitor.propensity(self.propensity_api, answer)
        count_customers(ctx.request, sum(u.known for u in answer.users))  # for the access log (serving/auth.py)
        return answer

    @bentoml.api(input_spec=ChurnRiskRequest, route="/churn_risk")
    def churn_risk(self, ctx: bentoml.Context, **req) -> ChurnRiskAnswer:
        """The ranked at-risk list (value at risk = churn probability x expected spend), filtered and paged."""
        if self.propensity_api.bundle is None:
            return _error(ctx, 503, self.propensity_api.missing)
        if why := self.propensity_api.stage_problem(req.get("stage")):
            return _error(ctx, 400, why)
        answer = self.propensity_api.churn_risk(ChurnRiskRequest(**req))
        count_customers(ctx.request, len(answer.customers))  # for the access log (serving/auth.py)
        return answer

    @bentoml.api(input_spec=CustomerValueRequest, route="/customer_value")
    def customer_value(self, ctx: bentoml.Context, **req) -> CustomerValueAnswer:
        """Predicted spend over the horizon (CLV), lifecycle stage and persona per customer; unknown customers
        answered as unknown (serving/customer_value.py)."""
        if why := missing_value(self.propensity_api):
            return _error(ctx, 503, why)
        answer = customer_value(self.propensity_api, CustomerValueRequest(**req))
        count_customers(ctx.request, sum(c.known for c in answer.customers))  # for the access log (serving/auth.py)
        return answer

    @bentoml.api(input_spec=ReloadRequest, route="/admin/reload")
    async def admin_reload(self, ctx: bentoml.Context, **req) -> ReloadAnswer:
        """Load the newest published model (or the tag given), smoke-test it and swap it in; a missing,
        corrupt or failing model is refused (409) and the old one keeps serving. Admin scope."""
        r = ReloadRequest(**req)
        outcome = await anyio.to_thread.run_sync(self.models.reload, r.model)  # requests keep flowing meanwhile
        if outcome.status == "refused":
            ctx.response.status_code = 409
        return ReloadAnswer(status=outcome.status, serving=outcome.serving, model_version=outcome.version,
                            detail=outcome.detail)

    @bentoml.api(input_spec=ForgetRequest, route="/admin/forget")
    async def admin_forget(self, ctx: bentoml.Context, **req) -> ForgetAnswer:
        """Forget a shopper: fallback answers only from now on, gone from the churn list, the event store and
        the canonical tables; ingest rejects their rows from now on. Idempotent. Admin scope."""
        r = ForgetRequest(**req)
        report = await anyio.to_thread.run_sync(self.privacy.forget, r.user_id, self.events)
        return ForgetAnswer(pseudonym=report.pseudonym, events_removed=report.events,
                            canonical_rows_removed=report.canonical_rows, experiment_rows_removed=report.experiment_rows)

    # -- A/B tests over HTTP (serving/experiments_api.py): create and stop need an admin key, list and report a
    # marketing key, as `shoprec experiment` does
    @bentoml.api(input_spec=experiments_api.ExperimentCreateRequest, route="/admin/experiments/create")
    async def admin_experiment_create(self, ctx: bentoml.Context, **req) -> experiments_api.ExperimentAnswer:
        """Create and start an A/B test of one endpoint; model arms are loaded beside the champion first (400 with
        the reason when one cannot serve); a name in use: 409. Every replica picks it up within seconds."""
        r = experiments_api.ExperimentCreateRequest(**req)
        return await self._experiments_call(ctx, experiments_api.create, self.experiments, r, key_name(ctx.request))

    @bentoml.api(input_spec=experiments_api.ExperimentNameRequest, route="/admin/experiments/stop")
    async def admin_experiment_stop(self, ctx: bentoml.Context, **req) -> experiments_api.ExperimentAnswer:
        """Stop an A/B test: its shoppers get the champion again; its report keeps reading what it logged."""
        r = experiments_api.ExperimentNameRequest(**req)
        return await self._experiments_call(ctx, experiments_api.stop_named, self.experiments, r.name,
                                            key_name(ctx.request))

    @bentoml.api(route="/experiments")
    async def experiments_list(self, ctx: bentoml.Context) -> experiments_api.ExperimentList:
        """The A/B tests: definition, status, variants and split (marketing scope)."""
        return await self._experiments_call(ctx, experiments_api.listed, self.experiments.log)

    @bentoml.api(input_spec=experiments_api.ReportRequest, route="/experiments/report")
    async def experiments_report(self, ctx: bentoml.Context, **req) -> dict:
        """An A/B test's report, as `shoprec experiment report NAME --json` prints it (without its MLflow run): the
        sample-ratio check, per variant units, exposures, CTR, conversion and revenue per user with intervals, the
        lifts (CUPED, sequential test), guardrails and the decision. Aggregates only (marketing scope)."""
        r = experiments_api.ReportRequest(**req)
        body = await self._experiments_call(ctx, experiments_api.report_json, self.experiments.log, r)
        return body if isinstance(body, Response) else Response(body, media_type="application/json")

    async def _experiments_call(self, ctx: bentoml.Context, call, *args):
        try:
            return await anyio.to_thread.run_sync(call, *args)  # the event store and a report can take seconds
        except experiments_api.ApiRefusal as e:
            return _error(ctx, e.status, e.message)


def _error(ctx: bentoml.Context, status: int, message: str):
    from starlette.responses import JSONResponse

    ctx.response.status_code = status
    return JSONResponse({"error": message}, status_code=status)


metric_paths.install()  # /metrics labels only the paths the service serves (serving/metric_paths.py)
Shoprec.add_asgi_middleware(ServedBy)  # first, so every answer names the replica, refusals too (serving/served_by.py)
Shoprec.add_asgi_middleware(ScopedKeys)  # keys, scopes, rate, content type: before any body is read (serving/auth.py)
Shoprec.add_asgi_middleware(BodySizeLimit, max_bytes=64 * 1024)
Shoprec.add_asgi_middleware(CountTowardsConcurrency)  # a burst on the async endpoints gets 429s, not a queue
Shoprec.add_asgi_middleware(OpenAPIFixes)  # /docs.json says what the server does (serving/openapi.py)
Shoprec.add_asgi_middleware(ReadableValidationErrors)  # a bad body's 400 names its fields (serving/validation_errors.py)
Shoprec.mount_asgi_app(marketing_page, path="/marketing")  # the marketers' page, marketing keys and sign-in

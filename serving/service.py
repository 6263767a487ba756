"""The shoprec BentoML service: storefront recommendations from the published champion.

Loads the bundle from the BentoML model store (``SHOPREC_MODEL``, default
``shoprec-recommender:latest``); MLflow is never touched on the request path. Real-time
events go to the event store (``SHOPREC_EVENTS_URL``, default ``sqlite:///data/events.db``).
"""
from __future__ import annotations

import datetime as dt
import os

import bentoml

from features.event_store import Event, open_event_store
from serving.limits import BodySizeLimit
from serving.schemas import (BoughtTogetherRequest, EventsAck, EventsRequest, FilterFields, Recommendations,
                             RecommendRequest, RerankRequest, ScoredItem, SessionRequest, SimilarItemsRequest)
from serving.storefront import Answer, Filters, Storefront
from training.bundle import ModelBundle

MODEL_TAG_ENV = "SHOPREC_MODEL"
DEFAULT_MODEL_TAG = "shoprec-recommender:latest"
EVENTS_URL_ENV = "SHOPREC_EVENTS_URL"
DEFAULT_EVENTS_URL = "sqlite:///data/events.db"


def _filters(r: FilterFields) -> Filters:
    return Filters(r.category, r.in_stock, r.min_price, r.max_price)


@bentoml.service(name="shoprec", traffic={"timeout": 10, "max_concurrency": 256}, workers=1)
class Shoprec:
    def __init__(self) -> None:
        self.store: Storefront | None = None
        ref = bentoml.models.get(os.environ.get(MODEL_TAG_ENV, DEFAULT_MODEL_TAG))
        bundle = ModelBundle.load(ref.path)
        self.version = ref.info.labels.get("registry_version", str(ref.tag.version))
        self.loaded_at = dt.datetime.now(dt.timezone.utc).timestamp()
        self.events = open_event_store(os.environ.get(EVENTS_URL_ENV, DEFAULT_EVENTS_URL))
        self.store = Storefront(bundle)

    def __is_ready__(self) -> bool:
        return self.store is not None

    def _reply(self, answer: Answer) -> Recommendations:
        return Recommendations(
            items=[ScoredItem(item_id=i, score=s, reason=r) for i, s, r in zip(answer.item_ids, answer.scores, answer.reasons)],
            source=answer.source, model_version=self.version)

    def _recent(self, user_id: str) -> list[tuple[str, str]]:
        trained = self.store.bundle.meta.get("trained_at")
        since = dt.datetime.fromisoformat(trained.replace("Z", "+00:00")).timestamp() if trained else 0.0
        return self.events.recent(user_id, since=since)

    @bentoml.api(input_spec=RecommendRequest, route="/recommend")
    def recommend(self, **req) -> Recommendations:
        """Top-k items for a shopper, with filters; their latest events are folded in; unknown shoppers get the fallback."""
        r = RecommendRequest(**req)
        return self._reply(self.store.recommend(r.user_id, r.k, r.exclude_bought, r.exclude, _filters(r),
                                                events=self._recent(r.user_id)))

    @bentoml.api(input_spec=SimilarItemsRequest, route="/similar_items")
    def similar_items(self, **req) -> Recommendations:
        """Items like an item (product page); an unknown item gets popular items, labelled as fallback."""
        r = SimilarItemsRequest(**req)
        return self._reply(self.store.similar_items(r.item_id, r.k, _filters(r)))

    @bentoml.api(input_spec=BoughtTogetherRequest, route="/bought_together")
    def bought_together(self, **req) -> Recommendations:
        """Complements for a basket (cart page): co-purchase rules blended with item similarity."""
        r = BoughtTogetherRequest(**req)
        return self._reply(self.store.bought_together(r.items, r.k, filters=_filters(r)))

    @bentoml.api(input_spec=SessionRequest, route="/session")
    def session(self, **req) -> Recommendations:
        """Anonymous shopper: recommendations from the items viewed in the session, no user id."""
        r = SessionRequest(**req)
        return self._reply(self.store.session(r.items, r.k, _filters(r)))

    @bentoml.api(input_spec=RerankRequest, route="/rerank")
    def rerank(self, **req) -> Recommendations:
        """The caller's candidates (up to 500) in personal order; unknown ids keep their order at the end."""
        r = RerankRequest(**req)
        return self._reply(self.store.rerank(r.user_id, r.items, events=self._recent(r.user_id)))

    @bentoml.api(input_spec=EventsRequest, route="/events")
    def events_in(self, **req) -> EventsAck:
        """Store a shopper's new views, cart adds and purchases durably; the next recommend reflects them."""
        r = EventsRequest(**req)
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        stored = self.events.append(r.user_id, [Event(e.item_id, e.event_type, e.ts or now, e.session_id) for e in r.events])
        return EventsAck(stored=stored)


Shoprec.add_asgi_middleware(BodySizeLimit, max_bytes=64 * 1024)

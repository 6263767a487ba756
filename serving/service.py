"""The shoprec BentoML service: storefront recommendations from the published champion.

Loads the bundle from the BentoML model store (``SHOPREC_MODEL``, default
``shoprec-recommender:latest``); MLflow is never touched on the request path.
"""
from __future__ import annotations

import os

import bentoml

from serving.limits import BodySizeLimit
from serving.schemas import Recommendations, RecommendRequest, ScoredItem, SimilarItemsRequest
from training.bundle import Answer, ModelBundle

MODEL_TAG_ENV = "SHOPREC_MODEL"
DEFAULT_MODEL_TAG = "shoprec-recommender:latest"


def _reply(answer: Answer, version: str) -> Recommendations:
    return Recommendations(
        items=[ScoredItem(item_id=i, score=s) for i, s in zip(answer.item_ids, answer.scores)],
        source=answer.source,
        model_version=version,
    )


@bentoml.service(name="shoprec", traffic={"timeout": 10, "max_concurrency": 256}, workers=1)
class Shoprec:
    def __init__(self) -> None:
        self.bundle: ModelBundle | None = None
        ref = bentoml.models.get(os.environ.get(MODEL_TAG_ENV, DEFAULT_MODEL_TAG))
        self.bundle = ModelBundle.load(ref.path)
        self.version = ref.info.labels.get("registry_version", str(ref.tag.version))

    def __is_ready__(self) -> bool:
        return self.bundle is not None

    @bentoml.api(input_spec=RecommendRequest, route="/recommend")
    def recommend(self, **req) -> Recommendations:
        """Top-k items for a shopper (unknown shoppers: the fallback, labelled in ``source``)."""
        r = RecommendRequest(**req)
        return _reply(self.bundle.recommend(r.user_id, r.k, r.exclude_bought, r.exclude), self.version)

    @bentoml.api(input_spec=SimilarItemsRequest, route="/similar_items")
    def similar_items(self, **req) -> Recommendations:
        """Items like an item (product page); an unknown item gets popular items, labelled as fallback."""
        r = SimilarItemsRequest(**req)
        return _reply(self.bundle.similar_items(r.item_id, r.k), self.version)


Shoprec.add_asgi_middleware(BodySizeLimit, max_bytes=64 * 1024)

"""Serving floor 1, the framework's own cost: a BentoML service whose endpoints validate the same request
schemas as shoprec's and return a constant answer shaped like shoprec's, with the same workers and traffic
settings. ``bentoml serve benchmarks.trivial_bento:Trivial`` (workers: ``SHOPREC_WORKERS``, default 1).
"""
from __future__ import annotations

import os

import bentoml

from serving import accept_share, collector
from serving.schemas import Recommendations, RecommendRequest, ScoredItem, SessionRequest

ANSWER = Recommendations(items=[ScoredItem(item_id=f"i{i:05d}", score=round(1 - i / 100, 6)) for i in range(10)],
                         source="model:als", model_version="trivial")
WORKERS = int(os.environ.get("SHOPREC_WORKERS") or 1)
accept_share.install(WORKERS)  # the service's sharing of new connections between workers: like for like


@bentoml.service(name="trivial", traffic={"timeout": 10, "max_concurrency": 64}, workers=WORKERS)
class Trivial:
    def __init__(self) -> None:
        collector.tune()  # the service's collector settings (serving/collector.py): like for like

    @bentoml.api(input_spec=RecommendRequest, route="/recommend")
    async def recommend(self, **req) -> Recommendations:
        return ANSWER

    @bentoml.api(input_spec=SessionRequest, route="/session")
    async def session(self, **req) -> Recommendations:
        return ANSWER

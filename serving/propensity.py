"""Propensity answers from the published bundle (marketing scope, serving/auth.py).

The bundle comes from the BentoML store: the newest ``shoprec-propensity`` of the service's shop (or the tag in
``SHOPREC_PROPENSITY_MODEL``, which must be of that shop too). Without one the service still starts and these
endpoints answer 503 saying why.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import pandas as pd
from pydantic import BaseModel, Field

from features.user_features import SEGMENT_NAMES
from serving.schemas import Id, _Strict
from training.propensity.bundle import PropensityBundle

TAG_ENV, DEFAULT_TAG = "SHOPREC_PROPENSITY_MODEL", "shoprec-propensity:latest"
BENTO_NAME = DEFAULT_TAG.split(":")[0]
log = logging.getLogger(__name__)


class PropensityRequest(_Strict):
    user_ids: list[Id] = Field(min_length=1, max_length=1000, description="customer ids; unknown ids are answered as unknown")


class UserPropensity(BaseModel):
    user_id: str
    known: bool = Field(description="false: no purchase history in the scored bundle (probabilities are null)")
    churn_probability: Optional[float] = None
    conversion_probability: Optional[float] = None
    value_at_risk: Optional[float] = None
    segment: str = Field(description="RFM segment, or 'unknown'")


class PropensityAnswer(BaseModel):
    users: list[UserPropensity]
    model_version: str
    scored_at: str


class ChurnRiskRequest(_Strict):
    min_probability: float = Field(0.0, ge=0, le=1, description="keep customers with churn probability >= this")
    min_value: float = Field(0.0, ge=0, description="keep customers with value at risk >= this")
    segment: Optional[Literal[tuple(SEGMENT_NAMES)]] = Field(None, description="keep one RFM segment")
    stage: Optional[Id] = Field(None, description="keep one lifecycle stage (new, reactivated, repeat, active, cooling, "
                                "at_risk, lapsed by default; the stages of the published bundle's config)")
    top_n: Optional[int] = Field(None, ge=1, le=1_000_000, description="keep the first N of the filtered ranking")
    page: int = Field(1, ge=1, description="1-based page of the list")
    page_size: int = Field(100, ge=1, le=1000)


class AtRiskCustomer(BaseModel):
    rank: int
    user_id: str
    churn_probability: float
    value_at_risk: float
    expected_spend: float
    clv: Optional[float] = Field(description="predicted spend over the customer-value horizon (null: the bundle has no customer value)")
    conversion_probability: float
    segment: str
    stage: Optional[str] = Field(description="lifecycle stage at the scoring date (null: the bundle has no customer value)")
    days_since_last_order: float
    orders: int
    total_spend: float = Field(description="spend so far, net of returns and cancellations")
    reasons: list[str]


class ChurnRiskAnswer(BaseModel):
    customers: list[AtRiskCustomer]
    total: int = Field(description="customers matching the filters (all pages)")
    page: int
    page_size: int
    horizon_days: int
    window_days: int = Field(30, description="conversion_probability: any purchase within this many days")
    model_version: str
    scored_at: str


@dataclass
class PropensityApi:
    """What the two endpoints answer, independent of BentoML (so it is testable in-process)."""

    bundle: PropensityBundle | None
    version: str
    missing: str = ""  # why there is no bundle
    # privacy hook (serving/admin.py): which user ids are forgotten; they are answered as unknown
    # and leave the churn list at once
    hidden: Optional[Callable[[list[str]], list[bool]]] = None

    @classmethod
    def from_store(cls, shop: str | None = None) -> "PropensityApi":
        """The bundle the service answers from: ``SHOPREC_PROPENSITY_MODEL`` when set, else ``:latest`` (in a bento,
        the bento's own) when it is of ``shop`` (the service's shop; any when the service has none yet), else the
        newest stored bundle of ``shop``. Another shop's bundle is never loaded: its customers are not this shop's."""
        import bentoml

        tag = os.environ.get(TAG_ENV)
        try:
            ref = bentoml.models.get(tag or DEFAULT_TAG)  # in a bento: the bento's own copy
        except bentoml.exceptions.NotFound:
            ref = None
        if ref is not None and not tag and shop and ref.info.labels.get("shop") != shop:
            own = [m for m in bentoml.models.list(BENTO_NAME) if m.info.labels.get("shop") == shop]
            ref = max(own, key=lambda m: m.info.creation_time) if own else None
        if ref is None:
            if shop:
                return cls(None, "", f"no churn and conversion bundle of shop {shop!r} in the model store: "
                                     f"`shoprec publish --shop {shop}` publishes the one `shoprec train` trained with "
                                     "orders (none is trained while the shop's history is shorter than three churn "
                                     "horizons; the training output says so)")
            return cls(None, "", f"no propensity bundle '{tag or DEFAULT_TAG}' in the model store: run `shoprec train` "
                                 "with orders, then `shoprec publish`")
        bundle_shop = ref.info.labels.get("shop") or ""
        if shop and bundle_shop and bundle_shop != shop:
            return cls(None, "", f"{ref.tag} was trained on shop {bundle_shop!r}; this service serves shop {shop!r}: "
                                 f"its customers are not this shop's (publish this shop's: `shoprec publish --shop {shop}`)")
        bundle = PropensityBundle.load(ref.path)
        version = ref.info.labels.get("registry_version", bundle.meta.get("model_version", str(ref.tag.version)))
        shop = bundle_shop or bundle.meta.get("shop")
        return cls(bundle, f"{shop}/v{version}" if shop else version)  # as the recommendations name theirs

    def propensity(self, req: PropensityRequest) -> PropensityAnswer:
        users = []
        gone = self.hidden(req.user_ids) if self.hidden is not None else [False] * len(req.user_ids)
        for uid, row, forgotten in zip(req.user_ids, self.bundle.lookup(req.user_ids), gone):
            if row is None or forgotten:
                users.append(UserPropensity(user_id=uid, known=False, segment="unknown"))
            else:
                users.append(UserPropensity(user_id=uid, known=True, churn_probability=round(row["churn_probability"], 6),
                                            conversion_probability=round(row["conversion_probability"], 6),
                                            value_at_risk=round(row["value_at_risk"], 4), segment=row["segment"]))
        return PropensityAnswer(users=users, model_version=self.version, scored_at=self.bundle.meta.get("scored_at", ""))

    def stage_problem(self, stage: str | None) -> str:
        """Why the ``stage`` filter cannot be applied to the served bundle, or '' (a 400 for the caller)."""
        if not stage or stage in self.bundle.stages:
            return ""
        if not self.bundle.stages:
            return "stage: this propensity bundle has no lifecycle stages (train again with orders and publish)"
        return f"stage: unknown lifecycle stage {stage!r}; choose one of {', '.join(self.bundle.stages)}"

    def churn_risk(self, req: ChurnRiskRequest) -> ChurnRiskAnswer:
        """The filtered, paged at-risk list; ``stage_problem(req.stage)`` must be '' (else ValueError)."""
        ranked = self.bundle.at_risk(req.min_probability, req.min_value, req.segment,
                                     None if self.hidden is not None else req.top_n, req.stage)
        if self.hidden is not None:  # forgotten shoppers leave the list; the ranks close up
            ranked = ranked[[not g for g in self.hidden(ranked["user_id"].tolist())]]
            ranked = ranked.head(req.top_n) if req.top_n is not None else ranked
            ranked = ranked.assign(rank=range(1, len(ranked) + 1))
        start = (req.page - 1) * req.page_size
        page = ranked.iloc[start:start + req.page_size]
        customers = [AtRiskCustomer(rank=int(r["rank"]), user_id=r["user_id"], churn_probability=round(r["churn_probability"], 6),
                                    value_at_risk=round(r["value_at_risk"], 4), expected_spend=round(r["expected_spend"], 4),
                                    clv=None if pd.isna(r["clv"]) else round(float(r["clv"]), 2),
                                    conversion_probability=round(r["conversion_probability"], 6), segment=r["segment"],
                                    stage=None if pd.isna(r["stage"]) else str(r["stage"]),
                                    days_since_last_order=round(r["recency_days"], 2), orders=int(r["frequency"]),
                                    total_spend=round(r["monetary"], 2), reasons=list(r["reasons"]))
                     for r in page.to_dict("records")]
        return ChurnRiskAnswer(customers=customers, total=len(ranked), page=req.page, page_size=req.page_size,
                               horizon_days=int(self.bundle.meta.get("horizon_days", 90)),
                               window_days=int(self.bundle.meta.get("window_days", 30)), model_version=self.version,
                               scored_at=self.bundle.meta.get("scored_at", ""))

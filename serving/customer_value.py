"""``POST /customer_value`` (marketing scope): CLV, lifecycle stage and persona per customer, from
the published propensity bundle's scores (training/value/ put them there; no model on the request
path). A bundle trained before customer value existed answers 503 saying so."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

from serving.propensity import PropensityApi
from serving.schemas import Id, _Strict


class CustomerValueRequest(_Strict):
    user_ids: list[Id] = Field(min_length=1, max_length=1000, description="customer ids; unknown ids are answered as unknown")


class CustomerValue(BaseModel):
    user_id: str
    known: bool = Field(description="false: no purchase history in the scored bundle (values are null)")
    clv: Optional[float] = Field(None, description="predicted spend over the next horizon_days")
    purchase_probability: Optional[float] = Field(None, description="probability of any purchase in the horizon: "
                                                "1 - churn_probability, the churn model's answer to the same question")
    stage: Optional[str] = Field(None, description="lifecycle stage at the scoring date")
    persona: Optional[int] = None
    persona_description: Optional[str] = None


class CustomerValueAnswer(BaseModel):
    customers: list[CustomerValue]
    horizon_days: int
    model_version: str
    scored_at: str


def missing_value(api: PropensityApi) -> str:
    """Why customer value cannot be answered, or ''."""
    if api.bundle is None:
        return api.missing
    if "value" not in api.bundle.meta:
        return "the published propensity bundle has no customer value: train again (`shoprec train`) and publish"
    return ""


def customer_value(api: PropensityApi, req: CustomerValueRequest) -> CustomerValueAnswer:
    bundle = api.bundle
    h = int(bundle.meta["value"]["horizon_days"])
    scores = bundle.scores.set_index(bundle.scores["user_id"].astype(str))
    gone = api.hidden(req.user_ids) if api.hidden is not None else [False] * len(req.user_ids)
    out = []
    for uid, forgotten in zip(req.user_ids, gone):
        if forgotten or uid not in scores.index:
            out.append(CustomerValue(user_id=uid, known=False))
            continue
        r = scores.loc[uid]
        out.append(CustomerValue(user_id=uid, known=True, clv=round(float(r[f"clv_{h}d"]), 2),
                                 purchase_probability=round(float(r[f"p_buy_{h}d"]), 6), stage=str(r["stage"]),
                                 persona=int(r["persona"]), persona_description=str(r["persona_description"])))
    return CustomerValueAnswer(customers=out, horizon_days=h, model_version=api.version,
                               scored_at=bundle.meta.get("scored_at", ""))

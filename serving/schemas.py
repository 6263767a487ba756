"""Request and response schemas of the storefront endpoints, with size limits."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic_core import to_json

# Ids are taken exactly as sent: no control characters (they are compared as numpy unicode, which
# drops a trailing NUL) and no surrounding whitespace (refused, not stripped, so that the documented
# limits are the enforced ones).
_CTRL, _SPACE = r"\x00-\x1f\x7f", r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
ID_PATTERN = rf"^[^{_CTRL}{_SPACE}](?:[^{_CTRL}]*[^{_CTRL}{_SPACE}])?$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
K = Annotated[int, Field(ge=1, le=100, description="number of items")]


class _Strict(BaseModel):
    # strict: the values must have the documented JSON types (no 0.0 -> false, no "5" -> 5)
    model_config = ConfigDict(extra="forbid", strict=True)


class FilterFields(_Strict):
    category: Id | None = Field(None, description="only items of this category")
    in_stock: bool | None = Field(None, description="only items in stock (true) or out of stock (false)")
    min_price: float | None = Field(None, ge=0, description="only items at or above this price")
    max_price: float | None = Field(None, ge=0, description="only items at or below this price")

    @model_validator(mode="after")
    def _price_range(self):
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}")
        return self


class RecommendRequest(FilterFields):
    user_id: Id = Field(description="the shopper's external id; unknown ids get the fallback")
    k: K = 10
    exclude_bought: bool = Field(True, description="leave out items the shopper already bought")
    exclude: list[Id] = Field(default_factory=list, max_length=500, description="more item ids to leave out")


class Viewer(FilterFields):
    """Who is looking, on the item pages: optional; an A/B test of the endpoint assigns by it."""

    user_id: Id | None = Field(None, description="the shopper's id, when signed in: A/B tests assign by it "
                                                 "(and tie their purchases back to what they were shown)")
    session_id: Id | None = Field(None, description="the anonymous shopper's session id: A/B tests assign by it "
                                                    "when there is no user_id")


class SimilarItemsRequest(Viewer):
    item_id: Id = Field(description="the item on the product page; unknown ids get popular items")
    k: K = 10


class BoughtTogetherRequest(Viewer):
    items: list[Id] = Field(min_length=1, max_length=100, description="the basket's item ids")
    k: K = 10


class SessionRequest(FilterFields):
    items: list[Id] = Field(min_length=1, max_length=200, description="items viewed in the session, oldest first")
    k: K = 10
    session_id: Id | None = Field(None, description="the anonymous shopper's session id: A/B tests assign by it")


class RerankRequest(_Strict):
    user_id: Id
    items: list[Id] = Field(min_length=1, max_length=500, description="the caller's candidate item ids")


class EventOutcome(_Strict):
    """What an A/B test reads from an event (features/exposures.py)."""

    request_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="the request_id of the answer this event follows (a click on, cart add or purchase of a "
                          "shown item): the outcome is attributed to that exposure")
    quantity: float | None = Field(None, ge=0, allow_inf_nan=False, description="purchase quantity, above 0 "
                                   "(default 1); a purchase's value is price x quantity")
    price: float | None = Field(None, ge=0, allow_inf_nan=False, description="the item's price (optional)")

    @field_validator("quantity")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:  # (ge=0 above: OpenAPI 3.0 has no numeric exclusiveMinimum)
            raise ValueError("quantity must be above 0")
        return v


class EventIn(EventOutcome):
    item_id: Id
    event_type: Literal["view", "cart", "purchase"]
    ts: Annotated[str, StringConstraints(max_length=40)] | None = Field(None, description="ISO 8601; default: now")
    session_id: Annotated[str, StringConstraints(max_length=128)] = ""


class EventsRequest(_Strict):
    user_id: Id
    events: list[EventIn] = Field(min_length=1, max_length=100)


class EventsAck(BaseModel):
    stored: int


class ScoredItem(BaseModel):
    item_id: str
    score: float | None = Field(description="higher first; null where the model gives the item no score (on /rerank, a "
                                            "candidate outside what the model ranks for this shopper: such candidates "
                                            "follow the scored ones in the caller's order)")
    reason: str | None = None


class Recommendations(BaseModel):
    items: list[ScoredItem]
    source: str = Field(description="'model:<recipe>', 'model:<recipe>+events', 'session:...', 'together:...' "
                                    "or 'fallback:<name>'")
    model_version: str = Field(description="registered model version that answered")
    request_id: str | None = Field(None, description="under an A/B test: send it back with the events that follow")
    experiment: str | None = Field(None, description="under an A/B test: its name")
    variant: str | None = Field(None, description="under an A/B test: the shopper's variant")


@dataclass
class ReplyLabels:
    """The reply's fields besides the items, as an A/B test labels them (serving/experiments.py ``label``)."""

    model_version: str
    request_id: str | None = None
    experiment: str | None = None
    variant: str | None = None


def recommendations_json(answer, labels: ReplyLabels) -> bytes:
    """``Recommendations`` as JSON bytes, byte for byte what the model's ``model_dump_json`` gives, written from
    the storefront's answer (training/storefront.py ``Answer``) without building the models per request. A score
    that is not a finite number is written as null, as pydantic writes it: JSON has no -Infinity or NaN (a browser's
    ``JSON.parse`` refuses them)."""
    return to_json({"items": [{"item_id": i, "score": float(s) if math.isfinite(s) else None, "reason": r}
                              for i, s, r in zip(answer.item_ids, answer.scores, answer.reasons)],
                    "source": answer.source, "model_version": labels.model_version, "request_id": labels.request_id,
                    "experiment": labels.experiment, "variant": labels.variant})

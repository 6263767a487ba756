"""Request and response schemas of the storefront endpoints, with size limits."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Strict):
    user_id: Id = Field(description="the shopper's external id; unknown ids get the fallback")
    k: int = Field(10, ge=1, le=100, description="number of items")
    exclude_bought: bool = Field(True, description="leave out items the shopper already bought")
    exclude: list[Id] = Field(default_factory=list, max_length=500, description="more item ids to leave out")


class SimilarItemsRequest(_Strict):
    item_id: Id = Field(description="the item on the product page; unknown ids get popular items")
    k: int = Field(10, ge=1, le=100)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    items: list[ScoredItem]
    source: str = Field(description="'model:<name>' or 'fallback:<name>' (which fallback)")
    model_version: str = Field(description="registered model version that answered")

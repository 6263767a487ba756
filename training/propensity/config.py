"""Typed settings of the churn and conversion models, each with a documented default."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class LGBMParams(BaseModel):
    """LightGBM settings: small, regularised trees (a few thousand rows per scoring date)."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.03, gt=0, le=1, description="shrinkage per boosting round")
    num_leaves: int = Field(7, ge=2, le=1024, description="leaves per tree")
    min_child_samples: int = Field(50, ge=1, description="minimum rows in a leaf")
    feature_fraction: float = Field(0.8, gt=0, le=1, description="share of features tried per tree")
    bagging_fraction: float = Field(0.8, gt=0, le=1, description="share of rows per tree (bagging every round)")
    lambda_l2: float = Field(1.0, ge=0, description="L2 penalty on leaf values")
    max_rounds: int = Field(2000, ge=1, description="upper bound on boosting rounds")
    early_stopping_rounds: int = Field(100, ge=1, description="stop when the held-out log loss has not improved for this many rounds")


class PropensityConfig(BaseModel):
    """How the churn and conversion models are trained, evaluated and explained (PRODUCT.md protocol)."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(90, ge=1, description="churn: no purchase in this many days after the scoring date")
    window_days: int = Field(30, ge=1, description="conversion: at least one purchase in this many days")
    end: Optional[datetime] = Field(None, description="end of the data (default: the last order's timestamp)")
    snapshots: int = Field(1, ge=1, le=24, description="training scoring dates: 1 = only end - 2*days (the "
                           "PRODUCT.md protocol); more adds earlier dates every snapshot_step_days")
    snapshot_step_days: int = Field(30, ge=1, description="days between extra training scoring dates")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="share of customers held out of the latest training "
                                 "date for early stopping and calibration")
    calibration: Literal["platt", "isotonic"] = Field("platt", description="probability calibration on the held-out "
                                                      "rows (Platt keeps the ranking; isotonic can tie scores)")
    lgbm: LGBMParams = Field(default_factory=LGBMParams)
    label_lengths: list[int] = Field([30, 60, 90], description="label lengths (days) whose models answer each target "
                                     "together: each is trained on its latest complete window before the scoring date, "
                                     "their standardised log-odds are averaged and calibrated on the target's own label "
                                     "(training/propensity/ensemble.py); the target's own length always takes part; [] "
                                     "or only that length: one model")
    linear_c: Optional[float] = Field(0.1, gt=0, description="inverse L2 strength of the logistic regression "
                                      "averaged with LightGBM (training/linear_member.py); null: LightGBM alone")
    seed: int = Field(42, ge=0, description="seed of LightGBM and of the held-out split")
    top_reasons: int = Field(3, ge=0, le=10, description="reasons (in words) kept per scored customer")

    @field_validator("label_lengths")
    @classmethod
    def _positive_lengths(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError(f"label lengths must be at least 1 day, got {v}")
        return sorted(set(v))

    @classmethod
    def from_recipe(cls, recipe: dict) -> "PropensityConfig":
        """A registered recipe; one saved before ``label_lengths`` existed had one model per target."""
        return cls.model_validate({"label_lengths": [], **recipe})

    def days(self, target: str) -> int:
        """Label length of a target: horizon_days for churn, window_days for conversion."""
        return {"churn": self.horizon_days, "conversion": self.window_days}[target]

    @classmethod
    def load(cls, path: Path) -> "PropensityConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    def dump(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


TARGETS = ("churn", "conversion")

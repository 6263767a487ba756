"""Typed settings of the customer-value model, lifecycle stages and personas, each with a default."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from features.lifecycle import LifecycleConfig
from training.propensity.config import LGBMParams


class ValueConfig(BaseModel):
    """How customer value is predicted and evaluated (PRODUCT.md "Customer value")."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(90, ge=1, description="spend predicted over this many days (the protocol's horizon)")
    long_horizon_days: int = Field(365, ge=1, description="a second horizon, evaluated and scored where the history "
                                   "allows two of them before the end")
    label_lengths: list[int] = Field([30, 60, 90], description="spend models over these lengths (days) answer the "
                                     "main horizon together: each is trained on its latest complete window, its "
                                     "prediction scaled to the horizon, and the geometric mean of (1 + spend) less 1 "
                                     "is the CLV (the horizon's own model always takes part; [] or only it: one model)")
    snapshots: int = Field(4, ge=1, le=24, description="training scoring dates: the protocol's (end - 2*horizon) "
                           "and earlier ones every snapshot_step_days")
    snapshot_step_days: int = Field(30, ge=1, description="days between training scoring dates")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="customers held out to stop the boosting and fit "
                                 "the smearing factor")
    penalizer: float = Field(0.1, ge=0, description="lifetimes penalizer of the BG/NBD + Gamma-Gamma peer")
    lgbm: LGBMParams = Field(default_factory=lambda: LGBMParams(max_rounds=3000))
    seed: int = Field(42, ge=0, description="seed of LightGBM, the held-out split and k-means")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    persona_k: tuple[int, int] = Field((3, 8), description="k-means tries k in this range (inclusive), "
                                       "keeps the best silhouette")

    @classmethod
    def load(cls, path: Path) -> "ValueConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    def dump(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

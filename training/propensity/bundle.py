"""The propensity bundle: production scores for every customer at the end date, and the models.

    bundle/
      meta.json           scored_at, horizon/window days, run and data ids, test metrics, config
      scores.parquet      one row per customer (SCORE_COLUMNS), ranked by value at risk
      reference.json      the scores' distributions that live answers are compared with (training/reference.py)
      churn/              LabelEnsemble (ensemble.json; 30d/, 60d/, 90d/: a PropensityModel each, model.txt
                          LightGBM text + model.json with the linear member), or one PropensityModel
      conversion/         the same

Serving reads ``scores.parquet`` only (a lookup, no model on the request path); the models
are there so a score can be reproduced. ``at_risk`` is the one filter behind both the HTTP
list and the CSV export. A bundle with customer value (training/value/, ``meta["value"]``) also
has ``clv_<h>d``, ``p_buy_<h>d``, ``stage``, ``persona`` and ``persona_description`` per customer;
``at_risk`` gives every list a ``clv`` and a ``stage`` column (empty without them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.propensity.ensemble import LabelEnsemble, load_propensity_model
from training.propensity.model import PropensityModel
from training.reference import propensity_reference

SCORE_COLUMNS = ["user_id", "churn_probability", "conversion_probability", "expected_spend", "value_at_risk",
                 "segment", "r_score", "f_score", "m_score", "recency_days", "frequency", "monetary", "reasons"]
# CSV header for marketers: column -> heading
CSV_HEADINGS = {
    "rank": "rank", "user_id": "customer_id", "churn_probability": "churn_probability_{h}d",
    "value_at_risk": "value_at_risk_{h}d", "expected_spend": "expected_spend_{h}d", "clv": "clv_{v}d",
    "conversion_probability": "purchase_probability_{w}d", "segment": "segment", "stage": "lifecycle_stage",
    "recency_days": "days_since_last_order", "frequency": "orders", "monetary": "total_spend", "reasons": "reasons",
}


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def _plain(value):
    """A NumPy scalar as the Python value ``DataFrame.to_dict`` would give."""
    return value.item() if isinstance(value, np.generic) else value


def kept_share(features: pd.DataFrame) -> pd.Series:
    """Per customer, the share of their spend so far not returned or cancelled (1 without returns)."""
    return (1.0 - features["return_share"].fillna(0.0).clip(0.0, 1.0)).rename("kept_share")


def expected_spend(features: pd.DataFrame, days: int) -> pd.Series:
    """Spend expected over the next ``days`` if the customer keeps buying at their own pace:
    spend net of returns and cancellations, per day as a customer (at least ``days``, so one
    recent order is not extrapolated), times ``days``."""
    net = features["monetary"] * kept_share(features)
    return (net / features["tenure_days"].clip(lower=days) * days).rename("expected_spend")


@dataclass
class PropensityBundle:
    scores: pd.DataFrame  # SCORE_COLUMNS, sorted by value_at_risk desc
    meta: dict = field(default_factory=dict)
    models: dict[str, PropensityModel | LabelEnsemble] = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # quantity -> Reference.to_json(); made from the scores on save

    def __post_init__(self):
        missing = [c for c in SCORE_COLUMNS if c not in self.scores.columns]
        if missing:
            raise ValueError(f"scores table lacks columns {missing}")
        self.scores = rank(self.scores)
        self._index = pd.Index(self.scores["user_id"].astype(str))
        if not self._index.is_unique:
            raise ValueError("scores table has duplicate user_id values")
        # per-column arrays for ``lookup``, the per-request path: DataFrame row access costs ~1 ms a call
        self._columns = {c: self.scores[c].to_numpy() for c in SCORE_COLUMNS}

    @property
    def version(self) -> str:
        return str(self.meta.get("model_version", "unregistered"))

    @property
    def value_days(self) -> int:
        """The customer-value horizon (the churn horizon for a bundle without customer value)."""
        return int(self.meta.get("value", {}).get("horizon_days", self.meta.get("horizon_days", 90)))

    @property
    def stages(self) -> list[str]:
        """The lifecycle stages in the config's order; empty for a bundle without customer value."""
        return [s["name"] for s in self.meta.get("value", {}).get("stages", [])] if "stage" in self.scores else []

    def lookup(self, user_ids: list[str]) -> list[dict | None]:
        """Score rows for ``user_ids`` in order; None for customers the bundle does not know."""
        rows = self._index.get_indexer(pd.Index([str(u) for u in user_ids]))
        cols = self._columns
        return [{c: _plain(cols[c][r]) for c in SCORE_COLUMNS} if r >= 0 else None for r in rows]

    def at_risk(self, min_probability: float = 0.0, min_value: float = 0.0, segment: str | None = None,
                top_n: int | None = None, stage: str | None = None) -> pd.DataFrame:
        """The ranked at-risk list (value at risk, then churn probability, then id) after the
        filters; ``top_n`` keeps the first N of the filtered list. Adds a 1-based ``rank``, and
        ``clv`` (predicted spend over ``value_days``) and ``stage`` (None without customer value).
        A ``stage`` outside ``stages`` is a ``ValueError``."""
        s = self.scores
        if stage and stage not in self.stages:
            raise ValueError(f"unknown lifecycle stage {stage!r}; " + (f"choose one of {', '.join(self.stages)}" if self.stages
                             else "this propensity bundle has no customer value (train again with orders and publish)"))
        keep = (s["churn_probability"] >= min_probability) & (s["value_at_risk"] >= min_value)
        if segment:
            keep &= s["segment"] == segment
        if stage:
            keep &= s["stage"] == stage
        out = s[keep]
        if top_n is not None:
            out = out.head(top_n)
        clv = f"clv_{self.value_days}d"
        return out.assign(rank=np.arange(1, len(out) + 1), clv=out[clv] if clv in out else np.nan,
                          stage=out["stage"].astype(object) if "stage" in out else None)

    def to_csv(self, frame: pd.DataFrame, path: Path) -> None:
        """Write an ``at_risk`` frame as ``table`` lays it out for a spreadsheet."""
        self.table(frame).to_csv(path, index=False, lineterminator="\n")

    def table(self, frame: pd.DataFrame, spreadsheet: bool = True) -> pd.DataFrame:
        """An ``at_risk`` frame with headings a marketer can read (reasons joined by '; ').
        For a spreadsheet, text cells that it would read as a formula (=, +, -, @, tab, carriage
        return first) get a leading apostrophe, so a customer id from the shop's data cannot run
        in Excel or Sheets when a marketer opens the file (CSV injection)."""
        h, w = self.meta.get("horizon_days", 90), self.meta.get("window_days", 30)
        out = frame[list(CSV_HEADINGS)].copy()
        out["reasons"] = out["reasons"].map(lambda r: "; ".join(r))
        for col in ("churn_probability", "conversion_probability"):
            out[col] = out[col].round(4)
        out["clv"] = out["clv"].astype(float)
        for col in ("expected_spend", "value_at_risk", "clv", "monetary", "recency_days"):
            out[col] = out[col].round(2)
        out["frequency"] = out["frequency"].astype(int)
        out["stage"] = out["stage"].astype(object).where(out["stage"].notna(), "")
        for col in ("user_id", "segment", "stage", "reasons"):  # text a spreadsheet must not run as a formula
            out[col] = out[col].astype(str).map(_inert if spreadsheet else str)
        return out.rename(columns={k: v.format(h=h, w=w, v=self.value_days) for k, v in CSV_HEADINGS.items()})

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.models.items():
            model.save(path / name)
        self.scores.to_parquet(path / "scores.parquet", index=False)
        self.reference = self.reference or propensity_reference(self.scores)
        (path / "reference.json").write_text(json.dumps(self.reference, indent=2, sort_keys=True))
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, path: Path, with_models: bool = False) -> "PropensityBundle":
        path = Path(path)
        for name in ("meta.json", "scores.parquet"):
            if not (path / name).exists():
                raise FileNotFoundError(f"propensity bundle {path} is incomplete: {name} is missing")
        models = {t: load_propensity_model(path / t) for t in ("churn", "conversion") if with_models}
        scores = pd.read_parquet(path / "scores.parquet")
        scores["reasons"] = scores["reasons"].map(lambda r: [str(x) for x in r])
        reference = json.loads((path / "reference.json").read_text()) if (path / "reference.json").exists() else {}
        return cls(scores, json.loads((path / "meta.json").read_text()), models, reference)


def rank(scores: pd.DataFrame) -> pd.DataFrame:
    """Sorted by value at risk, then churn probability (both descending), then user id."""
    return scores.sort_values(["value_at_risk", "churn_probability", "user_id"], ascending=[False, False, True],
                              kind="stable", ignore_index=True)


def score_table(features: pd.DataFrame, segments: pd.DataFrame, p_churn: np.ndarray, p_convert: np.ndarray,
                reasons: pd.Series, horizon_days: int) -> pd.DataFrame:
    """SCORE_COLUMNS for the customers of ``features`` (index user_id)."""
    spend = expected_spend(features, horizon_days)
    table = pd.DataFrame({
        "user_id": features.index.astype(str),
        "churn_probability": p_churn,
        "conversion_probability": p_convert,
        "expected_spend": spend.to_numpy(),
        "value_at_risk": p_churn * spend.to_numpy(),
        "segment": segments["segment"].astype(str).to_numpy(),
        "r_score": segments["r_score"].to_numpy(), "f_score": segments["f_score"].to_numpy(),
        "m_score": segments["m_score"].to_numpy(),
        "recency_days": features["recency_days"].to_numpy(), "frequency": features["frequency"].to_numpy(),
        "monetary": (features["monetary"] * kept_share(features)).to_numpy(),  # spend kept: net of returns/cancellations
        "reasons": reasons.reindex(features.index).to_list(),
    })
    return rank(table)


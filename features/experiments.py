"""Experiments as data, and who sees which variant.

An experiment splits the traffic of one endpoint between variants: ``champion`` (the served model),
a model (a registry version ``v3``, or an alias ``@challenger`` that
``shoprec experiment create`` turns into the version it points at, published beside the champion as a
``shoprec-variant``; or a BentoML tag ``NAME:VERSION``) or a policy (``popular``, ``trending``). Assignment is a pure function
of (salt, unit id), as in GrowthBook's SDKs, so every replica and every restart agrees without
talking; the unit is the user id, or the session id for an anonymous shopper (on the item pages,
``similar_items`` and ``bought_together``, whichever the request carries; neither: the champion).

Two hashes per unit: one decides whether the unit is in the experiment at all (``coverage``, the
ramp), the other which variant. Raising the coverage only adds units; nobody changes variant.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
POLICIES = ("popular", "trending")
CHAMPION = "champion"
ENDPOINTS = ("recommend", "rerank", "session", "similar_items", "bought_together")
METRICS = ("conversion", "revenue_per_user", "ctr")
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(:[A-Za-z0-9._-]{1,63})?$"


class ExperimentError(ValueError):
    """A definition or request the experiment store refuses; the message names the field and value."""


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the variant's name in answers and reports (e.g. control, treatment)")
    arm: str = Field(description="champion | popular | trending | a model tag (shoprec-recommender:v3) or registry version (v3)")
    weight: float = Field(gt=0, description="share of the experiment's traffic (normalised over the variants)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(NAME_PATTERN, v):
            raise ValueError(f"variant name {v!r}: 1-64 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("arm")
    @classmethod
    def _arm(cls, v: str) -> str:
        if v in (CHAMPION, *POLICIES) or re.match(r"^v\d+$", v) or re.match(r"^@[A-Za-z0-9_-]{1,64}$", v) \
                or (":" in v and re.match(TAG_PATTERN, v)):
            return v
        raise ValueError(f"variant arm {v!r}: expected champion, popular, trending, a registry version vN, a registry "
                         "alias @NAME or a BentoML tag NAME:VERSION")

    @property
    def kind(self) -> Literal["champion", "policy", "model"]:
        return "champion" if self.arm == CHAMPION else "policy" if self.arm in POLICIES else "model"



class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    variants: tuple[Variant, ...] = Field(min_length=2, description="first one is the control")
    salt: str = Field(description="hash salt; a new salt reshuffles everyone")
    endpoint: Literal[ENDPOINTS] = "recommend"  # type: ignore[valid-type]
    metric: Literal[METRICS] = "conversion"  # type: ignore[valid-type]
    guardrails: tuple[Literal[METRICS], ...] = ("revenue_per_user",)  # type: ignore[valid-type]
    coverage: float = Field(1.0, gt=0, le=1, description="share of units in the experiment (ramp up: only adds units)")
    attribution_days: float = Field(7.0, gt=0, le=90, description="outcomes count this long after an exposure")
    # the sequential test's plan (training/experiments/sequential.py): alpha is spent over this horizon
    planned_days: float | None = Field(14.0, gt=0, le=365, description=(
        "planned duration in days (default 14: two weekly cycles); the group-sequential test, read daily, spends "
        "its alpha over it and the analysis stops there; None with no planned_users: open-ended (confidence sequence)"))
    planned_users: int | None = Field(None, ge=4, description=(
        "planned units; when set, the information fraction is units so far / planned units (instead of days)"))
    spending: Literal["obrien_fleming", "pocock"] = Field("obrien_fleming", description=(
        "Lan-DeMets alpha-spending function: obrien_fleming (little early, full power at the end) or pocock (evenly)"))
    status: Literal["running", "stopped"] = "running"
    created_at: str = ""
    stopped_at: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(NAME_PATTERN, v):
            raise ValueError(f"experiment name {v!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _distinct(self):
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {names}")
        return self

    @property
    def control(self) -> Variant:
        return self.variants[0]

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def open_ended(self) -> bool:
        """No planned horizon: the sequential test is the always-valid confidence sequence."""
        return self.planned_days is None and self.planned_users is None

    def shares(self) -> dict[str, float]:
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}


def _unit_float(*parts: str) -> float:
    """A uniform number in [0, 1) from the parts (SHA-256, the first 8 bytes)."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def assign(experiment: Experiment, unit_id: str) -> Variant | None:
    """The unit's variant, or None when the unit is outside the experiment's coverage (or the id is empty)."""
    if not unit_id or _unit_float("coverage", experiment.salt, unit_id) >= experiment.coverage:
        return None
    x, edge = _unit_float("variant", experiment.salt, unit_id), 0.0
    for variant, share in zip(experiment.variants, experiment.shares().values()):
        edge += share
        if x < edge:
            return variant
    return experiment.variants[-1]  # rounding of the last edge


def parse_variants(specs: list[str], split: str | None = None,
                   fields: tuple[str, str] = ("--variant", "--split")) -> tuple[Variant, ...]:
    """``["control=champion", "treatment=popular"]`` and ``"50/50"`` (default: equal) -> variants. ``fields``: what
    the caller calls the two in its refusals (the CLI's options; the HTTP API's fields)."""
    variant_field, split_field = fields
    pairs = []
    for spec in specs:
        name, sep, arm = spec.partition("=")
        if not sep or not name.strip() or not arm.strip():
            raise ExperimentError(f"{variant_field} {spec!r}: expected NAME=ARM (e.g. treatment=popular)")
        pairs.append((name.strip(), arm.strip()))
    if len(pairs) < 2:
        raise ExperimentError(f"an experiment needs at least two {variant_field}, got {len(pairs)}")
    if split:
        try:
            weights = [float(w) for w in split.split("/")]
        except ValueError:
            raise ExperimentError(f"{split_field} {split!r}: expected numbers separated by '/', e.g. 50/50") from None
        if len(weights) != len(pairs) or any(w <= 0 for w in weights):
            raise ExperimentError(f"{split_field} {split!r}: expected {len(pairs)} positive numbers (one per variant)")
    else:
        weights = [1.0] * len(pairs)
    variants, wrong = [], []
    for (n, a), w in zip(pairs, weights):
        try:
            variants.append(Variant(name=n, arm=a, weight=w))
        except ValidationError as e:  # the field's own words, not pydantic's banner and link
            wrong += [f"{variant_field} {n}={a}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()]
    if wrong:
        raise ExperimentError("; ".join(wrong))
    return tuple(variants)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

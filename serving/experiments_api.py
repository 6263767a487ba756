"""A/B tests over HTTP, for whoever cannot reach the event store from where they work (a notebook beside a
cluster behind nginx): create and stop (admin scope), list and report (marketing scope), by the same code as
``shoprec experiment`` (training/experiments/manage.py, training/experiments/report.py).

A model arm is checked by loading it beside the champion before the experiment is stored, so a missing or
broken one is refused with its reason (a 400 naming the variant) instead of leaving the experiment out later.
A registry alias (``@challenger``) needs MLflow to resolve and publish it: that stays with the CLI; over HTTP
a model arm is a registry version already in the model store (``v8``) or a BentoML tag.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field, StringConstraints

from features.experiments import ENDPOINTS, METRICS, NAME_PATTERN, Experiment, ExperimentError, Variant
from serving.reload import Refused
from serving.schemas import _Strict
from training.experiments.manage import define, find, start, stop

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
# NAME=ARM: champion, a policy, a registry version (vN) or a BentoML tag (NAME:VERSION); no registry alias here
VariantSpec = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}=(champion|popular|trending|"
                                                       r"v[0-9]{1,9}|[A-Za-z0-9][A-Za-z0-9._-]{0,62}:[A-Za-z0-9._-]{1,63})$")]
Split = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,6}(\.[0-9]{1,6})?(/[0-9]{1,6}(\.[0-9]{1,6})?){1,9}$")]
Endpoint = Literal[ENDPOINTS]  # type: ignore[valid-type]
Metric = Literal[METRICS]  # type: ignore[valid-type]


class ExperimentCreateRequest(_Strict):
    name: Name = Field(description="the experiment's name (never reused)")
    variants: list[VariantSpec] = Field(min_length=2, max_length=10, description=(
        "NAME=ARM, the control first; ARM: champion, popular, trending, a registry version already in the model "
        "store (v8) or a BentoML tag NAME:VERSION"))
    split: Optional[Split] = Field(None, description="traffic shares, e.g. 50/50 (default: equal)")
    salt: Optional[Name] = Field(None, description="assignment salt (default: the name)")
    endpoint: Endpoint = "recommend"
    metric: Metric = Field("conversion", description="the primary metric")
    guardrails: list[Metric] = Field(["revenue_per_user"], max_length=3)
    coverage: float = Field(1.0, gt=0, le=1, description="share of shoppers in the experiment (ramp up: only adds)")
    attribution_days: float = Field(7.0, gt=0, le=90, description="outcomes count this long after an exposure")
    planned_days: Optional[float] = Field(14.0, gt=0, le=365, description="the sequential test's planned duration")
    planned_users: Optional[int] = Field(None, ge=4, description="plan in shoppers instead of days")
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    open_ended: bool = Field(False, description="no planned horizon: the always-valid confidence sequence")


class ExperimentNameRequest(_Strict):
    name: Name


class ReportRequest(_Strict):
    name: Name
    pre_days: float = Field(30.0, ge=0, le=365, description="days of spend before the start (CUPED's covariate)")


class ExperimentAnswer(BaseModel):
    experiment: Experiment
    detail: str


class ExperimentList(BaseModel):
    experiments: list[Experiment]


class ApiRefusal(Exception):
    """An answer other than 200: the status and a message naming the field or the experiment."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create(service_experiments, r: ExperimentCreateRequest, who: str) -> ExperimentAnswer:
    """Define, check the model arms against the champion now serving, store; this worker sees it at once."""
    def over_http(v: Variant) -> Variant:
        if v.arm.startswith("@"):
            raise ExperimentError(f"variant {v.name}={v.arm}: a registry alias is resolved and published into the "
                                  "model store by `shoprec experiment create`; over HTTP give a registry version "
                                  "already there (vN) or a BentoML tag")
        return v

    try:
        exp = define(r.name, r.variants, r.split, r.salt, r.endpoint, r.metric, r.guardrails, r.coverage,
                     r.attribution_days, r.planned_days, r.planned_users, r.spending, r.open_ended, arm=over_http,
                     fields=("variants", "split"))
    except ExperimentError as e:
        raise ApiRefusal(400, str(e)) from e
    if (champion := service_experiments.models.current) is None:
        raise ApiRefusal(503, "no champion is serving: a model arm cannot be checked beside it")
    for v in exp.variants:
        try:
            service_experiments.check_arm(exp, v, champion)
        except Refused as e:
            raise ApiRefusal(400, str(e)) from e
    try:
        started = start(service_experiments.log, exp)
    except ExperimentError as e:
        raise ApiRefusal(409, str(e)) from e
    service_experiments.refresh()
    note = started.overlap_note()
    return ExperimentAnswer(experiment=exp, detail=f"created {started.summary()} by {who}; every replica picks it up "
                                                   "within a few seconds" + (f"; note: {note}" if note else ""))


def stop_named(service_experiments, name: str, who: str) -> ExperimentAnswer:
    exp = _named(service_experiments.log, name)
    if not exp.running:
        return ExperimentAnswer(experiment=exp, detail=f"experiment {name} was stopped already ({exp.stopped_at})")
    stopped = stop(service_experiments.log, exp)
    service_experiments.refresh()
    return ExperimentAnswer(experiment=stopped, detail=f"stopped experiment {name} (by {who}); its shoppers get the "
                                                       "champion again on every replica within seconds")


def listed(log_store) -> ExperimentList:
    return ExperimentList(experiments=log_store.experiments())


def report_json(log_store, r: ReportRequest) -> bytes:
    """The report ``shoprec experiment report NAME --json`` prints, without its MLflow run."""
    from training.experiments.report import build_report

    rep = build_report(_named(log_store, r.name), log_store, pre_days=r.pre_days).to_dict()
    return json.dumps(rep, default=str).encode()


def _named(log_store, name: str) -> Experiment:
    if (exp := find(log_store, name)) is None:
        raise ApiRefusal(404, f"no experiment named {name!r} (POST /experiments lists them)")
    return exp

"""Creating and stopping experiments: one path for the CLI (training/experiments/cli.py) and the service's
admin endpoints (serving/experiments_api.py). Experiments live in the experiment log of the event store, which
every replica re-reads; a refusal is an ``ExperimentError`` whose message names the field and the value."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pydantic import ValidationError

from features.experiments import Experiment, ExperimentError, Variant, now_iso, parse_variants


@dataclass(frozen=True)
class Started:
    experiment: Experiment
    overlapping: list[str]  # running experiments of the same endpoint: a shopper is in the first covering them

    def summary(self) -> str:
        exp = self.experiment
        plan = ("open-ended (confidence sequence)" if exp.open_ended else
                f"planned {exp.planned_users:,} shoppers" if exp.planned_users is not None
                else f"planned {exp.planned_days:g} days")
        return (f"experiment {exp.name} on /{exp.endpoint}: "
                + ", ".join(f"{v.name}={v.arm} ({s:.0%})" for v, s in zip(exp.variants, exp.shares().values()))
                + f"; {plan}")

    def overlap_note(self) -> str | None:
        if not self.overlapping:
            return None
        return (f"/{self.experiment.endpoint} already runs {', '.join(self.overlapping)}: a shopper is in the first "
                "(by name) whose coverage includes them")


def define(name: str, variants: Sequence[str], split: str | None = None, salt: str | None = None,
           endpoint: str = "recommend", metric: str = "conversion", guardrails: Sequence[str] = ("revenue_per_user",),
           coverage: float = 1.0, attribution_days: float = 7.0, planned_days: float | None = 14.0,
           planned_users: int | None = None, spending: str = "obrien_fleming", open_ended: bool = False,
           arm: Callable[[Variant], Variant] = lambda v: v,
           fields: tuple[str, str] = ("--variant", "--split")) -> Experiment:
    """The experiment these settings describe (``variants``: ``NAME=ARM``, the control first). ``arm`` may turn a
    variant's arm into the one to store (the CLI publishes a registry version or alias into the model store);
    ``fields``: the names of the variants and the split in refusals (``parse_variants``)."""
    if open_ended and planned_users is not None:
        raise ExperimentError(f"planned_users: {planned_users} plans a horizon, and open_ended asks for none: give one")
    try:
        return Experiment(name=name, variants=tuple(arm(v) for v in parse_variants(list(variants), split, fields)),
                          salt=salt or name, endpoint=endpoint, metric=metric,
                          guardrails=tuple(g for g in guardrails if g != metric), coverage=coverage,
                          attribution_days=attribution_days, planned_days=None if open_ended else planned_days,
                          planned_users=None if open_ended else planned_users, spending=spending, created_at=now_iso())
    except ValidationError as e:
        raise ExperimentError("; ".join(f"{'.'.join(map(str, err['loc'])) or 'experiment'}: {err['msg']}"
                                        for err in e.errors())) from e


def start(log_store, exp: Experiment) -> Started:
    """Store a new experiment (a name is never reused: ``ExperimentError``); running servers pick it up."""
    overlapping = [e.name for e in log_store.experiments() if e.running and e.endpoint == exp.endpoint]
    log_store.put_experiment(exp, new=True)
    return Started(exp, overlapping)


def find(log_store, name: str) -> Experiment | None:
    return next((e for e in log_store.experiments() if e.name == name), None)


def stop(log_store, exp: Experiment) -> Experiment:
    """The experiment stopped now (as it was when stopped already): its shoppers go back to the champion."""
    if not exp.running:
        return exp
    stopped = exp.model_copy(update={"status": "stopped", "stopped_at": now_iso()})
    log_store.put_experiment(stopped)
    return stopped

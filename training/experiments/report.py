"""An experiment's report as text and as an MLflow run (the marketers' page renders the same dict)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from features.experiments import Experiment
from features.exposures import ReportRows
from training.experiments.analysis import EXPOSURE_USED, OUTCOME_USED, Report, analyse, daily_looks, unit_table

PRE_DAYS = 30.0  # the pre-period whose spend is the covariate (CUPED)


def build_report(exp: Experiment, log_store, until: float | None = None, pre_days: float = PRE_DAYS,
                 tuning_n: float | None = None, as_of: float | None = None, rows: ReportRows | None = None) -> Report:
    """Read the exposures and outcomes of ``exp`` from the event store and analyse them: up to ``until``
    (default: the stop, else now), or as the report read at ``as_of`` (epoch seconds; only what had
    happened by then). Once the planned horizon has passed, the report reads the traffic up to it: the
    sequential test's final look. ``rows``: ``report_rows(exp)`` kept between reports (only new rows read)."""
    from training.experiments.analysis import TUNING_N, sequential_horizon

    if rows is None:
        exposures = log_store.exposures(exp.name, columns=EXPOSURE_USED)
        start = float(exposures["ts"].min()) if len(exposures) else time.time()
        outcomes = log_store.outcomes(since=start - pre_days * 86_400.0, columns=OUTCOME_USED)
    else:
        if (rows.experiment, rows.before_s) != (exp.name, pre_days * 86_400.0):
            raise ValueError(f"rows: kept for {rows.experiment!r} over {rows.before_s:g} s, not {exp.name!r} over "
                             f"{pre_days * 86_400.0:g} s")
        exposures, outcomes = rows.read(log_store)
    if until is None and exp.stopped_at is not None:
        until = pd.Timestamp(exp.stopped_at).timestamp()
    if as_of is not None:
        exposures, outcomes = exposures[exposures["ts"] <= as_of], outcomes[outcomes["ts"] <= as_of]
        until = as_of if until is None else min(until, as_of)
    at = until if until is not None else time.time()
    horizon = sequential_horizon(exp, exposures.groupby("unit_id")["ts"].min()) if len(exposures) else None
    final = horizon is not None and at >= horizon
    if final:
        until = at = horizon
    if exp.open_ended:
        looks = [(at, unit_table(exp, exposures, outcomes, until=until, pre_days=pre_days))]
    else:
        looks = daily_looks(exp, exposures, outcomes, at, until=until, pre_days=pre_days)
    rep = analyse(exp, looks[-1][1], tuning_n=tuning_n or TUNING_N, now=at, history=looks[:-1])
    if final:
        reached = pd.Timestamp(horizon, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
        rep.notes.append(f"the planned horizon ({_horizon(exp)}) was reached on {reached}: this is the final "
                         "analysis, of the traffic up to then; stop the experiment")
    return rep


def report_rows(exp: Experiment, pre_days: float = PRE_DAYS) -> ReportRows:
    """What ``build_report`` reads of ``exp``, to keep between reports (features/exposures.py)."""
    return ReportRows(exp.name, pre_days * 86_400.0, EXPOSURE_USED, OUTCOME_USED)


def rows_read(exp: Experiment, log_store) -> tuple | None:
    """What ``build_report`` reads for a stopped experiment, in brief (``rows_read_by`` of the log): its
    exposures, and the outcomes from its pre-period to the end of the attribution window after the stop.
    Equal for two calls: the same report. None for a running experiment, whose last look moves with the clock."""
    if exp.stopped_at is None:
        return None
    until = pd.Timestamp(exp.stopped_at).timestamp() + exp.attribution_days * 86_400.0
    return log_store.rows_read_by(exp.name, PRE_DAYS * 86_400.0, until)


def _horizon(exp: Experiment) -> str:
    if exp.open_ended:
        return "open-ended"
    return f"{exp.planned_users:,} units" if exp.planned_users is not None else f"{exp.planned_days:g} days"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:+.2%}"


def _p(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _ci(ci, pct=False) -> str:
    if ci is None:
        return "n/a"
    return f"[{ci[0]:+.2%}, {ci[1]:+.2%}]" if pct else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def sequential_label(seq: dict | None) -> str:
    """How the sequential test read this look, e.g. "group-sequential (O'Brien-Fleming spending), look 9 at
    64% of the horizon: |z| >= 2.61 (p < 0.0091)"."""
    if not seq:
        return "sequential"
    if seq["method"] != "group-sequential":
        return "always-valid (confidence sequence, open-ended)"
    name = {"obrien_fleming": "O'Brien-Fleming", "pocock": "Pocock"}.get(seq["spending"], seq["spending"])
    none = "no alpha spent yet" if (seq.get("information_fraction") or 0) < 1 else "no alpha left"
    bound = none if seq["bound_z"] in (None, float("inf")) else \
        f"|z| >= {seq['bound_z']:.2f} (p < {seq['nominal_alpha']:.2g})"
    return (f"group-sequential ({name} spending), look {seq['look']} at {seq['information_fraction']:.0%} of the "
            f"horizon: {bound}")


def render_text(report: dict) -> str:
    srm = report["srm"]
    lines = [f"experiment {report['experiment']} ({report['status']}), primary metric {report['primary']}, "
             f"guardrails {', '.join(report['guardrails']) or 'none'}",
             f"sample ratio check: units {srm['observed']} expected {srm['expected']}, chi-square p = {_p(srm['pvalue'])}"
             + ("  ** MISMATCH: do not read the results below **" if srm["flagged"] else "  (ok)"), ""]
    lines.append(f"{'variant':<14}{'arm':<28}{'units':>8}{'exposures':>11}{'CTR':>8} {'conversion':>30} {'revenue/user':>30}")
    for v in report["variants"]:
        conv = "n/a" if v["conversion"] is None else f"{v['conversion']:.4f} {_ci(v['conversion_ci'])}"
        rev = "n/a" if v["revenue_per_user"] is None else f"{v['revenue_per_user']:.2f} {_ci(v['revenue_per_user_ci'])}"
        ctr = "n/a" if v["ctr"] is None else f"{v['ctr']:.3f}"
        lines.append(f"{v['variant']:<14}{v['arm'][:27]:<28}{v['units']:>8}{v['exposures']:>11}{ctr:>8} {conv:>30} {rev:>30}")
    lines.append("")
    for c in report["comparisons"]:
        cuped = f", CUPED (interval width x{c['cuped_width_ratio']:.3f})" if c["cuped"] and c["cuped_width_ratio"] else ""
        lines.append(f"{c['treatment']} vs control, {c['metric']}: lift {_pct(c['lift'])} 95% {_ci(c['lift_ci'], True)}, "
                     f"p = {_p(c['pvalue'])}{cuped}; {sequential_label(c.get('sequential'))} "
                     f"{_ci(c['sequential_lift_ci'], True)}" + (" significant" if c["significant"] else ""))
    for note in report["notes"]:
        lines.append(f"note: {note}")
    lines += ["", f"decision: {report['decision']} - {report['reason']}"]
    return "\n".join(lines)


def log_to_mlflow(report: dict, project_dir: Path) -> str:
    """One MLflow run per report: variant figures and lifts as metrics, the report as an artifact."""
    import mlflow

    from training.tracking import setup

    setup(project_dir)
    name = report["experiment"]
    with mlflow.start_run(run_name=f"experiment-{name}") as run:
        mlflow.set_tags({"kind": "experiment-report", "experiment": name, "decision": report["decision"],
                         "srm_flagged": str(report["srm"]["flagged"])})
        mlflow.log_params({"primary": report["primary"], "guardrails": ",".join(report["guardrails"]),
                           "status": report["status"],
                           "variants": ",".join(f"{v['variant']}={v['arm']}" for v in report["variants"])})
        metrics = {"srm_pvalue": report["srm"]["pvalue"]}
        for v in report["variants"]:
            metrics[f"{v['variant']}.units"] = v["units"]
            metrics[f"{v['variant']}.exposures"] = v["exposures"]
            for key in ("ctr", "conversion", "revenue_per_user"):
                if v[key] is not None:
                    metrics[f"{v['variant']}.{key}"] = v[key]
        for c in report["comparisons"]:
            prefix = f"{c['treatment']}.{c['metric']}"
            metrics[f"{prefix}.lift"] = c["lift"]
            metrics[f"{prefix}.lift_lower"], metrics[f"{prefix}.lift_upper"] = c["lift_ci"]
            metrics[f"{prefix}.pvalue"] = c["pvalue"]
            if c["cuped_width_ratio"] is not None:
                metrics[f"{prefix}.cuped_width_ratio"] = c["cuped_width_ratio"]
            seq = c.get("sequential") or {}
            if seq.get("method") == "group-sequential":
                metrics[f"{prefix}.information_fraction"] = seq["information_fraction"]
                metrics[f"{prefix}.sequential_bound_z"] = seq["bound_z"]
            if c["sequential_lift_ci"] is not None:
                metrics[f"{prefix}.sequential_lift_lower"], metrics[f"{prefix}.sequential_lift_upper"] = c["sequential_lift_ci"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        mlflow.log_text(json.dumps(report, indent=1, default=str), "experiment_report.json")
        return run.info.run_id

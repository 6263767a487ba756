"""The experiments panel of the marketers' page (``/marketing/experiments``): per experiment the
sample-ratio check first, then per variant units, exposures, CTR, conversion and revenue per user with
intervals, the lifts (CUPED, sequential test) and the decision. Aggregates only: no shopper is shown.
Same report as ``shoprec experiment report`` (training/experiments/report.py), without the MLflow run."""
from __future__ import annotations

import threading
from html import escape

from serving.marketing_views import _csrf, _page


def service_experiment_log():
    """The running service's experiment log (serving/experiments.py)."""
    import bentoml

    return bentoml.get_current_service().experiments.log


class Reports:
    """The panel's reports, kept between loads where they cannot have changed. A stopped experiment's report
    reads only its exposures and the outcomes from its pre-period to the end of its attribution window: it is
    built again only when those rows change (``rows_read``, training/experiments/report.py), so stopped
    experiments piling up do not slow the page (a 28-day report of 100k shoppers takes 6–8 s). A running
    experiment's last look moves with the clock: built on every load, from its rows kept since the last load
    plus those logged since (``report_rows``), not the whole log read again (8.5 -> 4.5 s at 100k shoppers x 28
    days; the kept rows take ~90 MB of the worker's memory there, until the experiment stops)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple, dict]] = {}  # experiment -> (what its report read, the report)
        self._rows: dict[str, object] = {}  # running experiment -> its rows read so far (ReportRows)
        self._lock = threading.Lock()

    def __call__(self, log_store) -> list[dict]:
        """Reports of every experiment, running ones first, then the most recently created."""
        exps = sorted(log_store.experiments(), key=lambda e: e.created_at, reverse=True)
        exps = sorted(exps, key=lambda e: not e.running)
        return [self._report(e, log_store) for e in exps]

    def _report(self, exp, log_store) -> dict:
        from training.experiments.report import build_report, report_rows, rows_read

        read = None
        if (rows := rows_read(exp, log_store)) is not None:  # a stopped experiment
            read = (id(log_store), exp.model_dump_json(), rows)
            with self._lock:
                kept = self._kept.get(exp.name)
                self._rows.pop(exp.name, None)  # its rows were for its running days
            if kept is not None and kept[0] == read:
                return kept[1]
            report = build_report(exp, log_store)
        else:
            with self._lock:
                running = self._rows.setdefault(exp.name, report_rows(exp))
            report = build_report(exp, log_store, rows=running)
        report = report.to_dict() | {"endpoint": exp.endpoint}
        if read is not None:
            with self._lock:
                self._kept[exp.name] = (read, report)
        return report


def _num(x, fmt="{:.4f}") -> str:
    return "n/a" if x is None else escape(fmt.format(x))


def _ci(ci, pct=False) -> str:
    if ci is None or any(v != v for v in ci):
        return ""
    return escape(f" [{ci[0]:+.1%}, {ci[1]:+.1%}]" if pct else f" [{ci[0]:.4g}, {ci[1]:.4g}]")


def _counts(counts: dict) -> str:
    return ", ".join(f"{name} {n:,.0f}" for name, n in counts.items())


def _experiment(rep: dict) -> str:
    from training.experiments.report import sequential_label

    srm = rep["srm"]
    srm_line = (f"<p class='{'error' if srm['flagged'] else 'meta'}' id='srm-{escape(rep['experiment'])}'>"
                f"Sample ratio check: units {escape(_counts(srm['observed']))}, expected {escape(_counts(srm['expected']))}, "
                f"chi-square p = {_num(srm['pvalue'], '{:.3g}')}"
                + (" — <strong>mismatch: the split is broken, do not read the results</strong>" if srm["flagged"] else " (ok)")
                + "</p>")
    rows = "".join(
        f"<tr><td>{escape(v['variant'])}</td><td>{escape(v['arm'])}</td><td class='num'>{v['share']:.0%}</td>"
        f"<td class='num'>{v['units']:,}</td><td class='num'>{v['exposures']:,}</td><td class='num'>{_num(v['ctr'], '{:.3f}')}</td>"
        f"<td class='num'>{_num(v['conversion'])}{_ci(v['conversion_ci'])}</td>"
        f"<td class='num'>{_num(v['revenue_per_user'], '{:.2f}')}{_ci(v['revenue_per_user_ci'])}</td></tr>"
        for v in rep["variants"])
    variants = ("<table class='variants'><thead><tr><th>variant</th><th>arm</th><th>share</th><th>units</th><th>exposures</th>"
                "<th>CTR</th><th>conversion [95%]</th><th>revenue per user [95%]</th></tr></thead><tbody>" + rows + "</tbody></table>")
    comps = "".join(
        f"<tr><td>{escape(c['treatment'])}</td><td>{escape(c['metric'])}{' (primary)' if c['metric'] == rep['primary'] else ''}</td>"
        f"<td class='num'>{_num(c['lift'], '{:+.2%}')}</td><td class='num'>{_ci(c['lift_ci'], True)}</td>"
        f"<td class='num'>{_ci(c['sequential_lift_ci'], True)}</td>"
        f"<td class='num'>{_num(c['cuped_width_ratio'], 'x{:.2f}') if c['cuped_width_ratio'] is not None else ''}</td>"
        f"<td>{'yes' if c['significant'] else 'no'}</td></tr>" for c in rep["comparisons"])
    lifts = ("<table class='lifts'><thead><tr><th>variant</th><th>metric</th><th>lift</th><th>95% interval</th>"
             "<th>sequential interval</th><th>CUPED width</th><th>significant</th></tr></thead><tbody>" + comps
             + "</tbody></table>") if comps else "<p class='meta'>No comparison yet.</p>"
    primary = next((c for c in rep["comparisons"] if c["metric"] == rep["primary"]), None)
    if primary is not None:
        lifts += f"<p class='meta' id='sequential-{escape(rep['experiment'])}'>Sequential test: {escape(sequential_label(primary.get('sequential')))}.</p>"
    notes = "".join(f"<p class='meta'>{escape(n)}</p>" for n in rep["notes"])
    return (f"<section class='chart experiment' id='experiment-{escape(rep['experiment'])}'>"
            f"<h2>{escape(rep['experiment'])} <span class='meta'>({escape(rep['status'])}, /{escape(rep['endpoint'])}, "
            f"primary {escape(rep['primary'])}, guardrails {escape(', '.join(rep['guardrails']) or 'none')})</span></h2>"
            f"{srm_line}{variants}{lifts}{notes}"
            f"<p class='decision'><strong>Decision: {escape(rep['decision'])}</strong> — {escape(rep['reason'])}</p></section>")


def experiments_page(base: str, reps: list[dict], csrf: str) -> str:
    body = (f"<h1>Experiments</h1><p class='meta'>A/B tests of recommendation policies. Significance is read from the "
            f"sequential interval (group-sequential over the planned horizon, read once a day), so looking every day "
            f"keeps false positives at 5%. <a href='{escape(base)}/' id='to-list'>Customers at "
            f"risk</a> <form method='post' action='{escape(base)}/logout' style='display:inline'>{_csrf(csrf)}"
            "<button type='submit'>Sign out</button></form></p>"
            + ("".join(_experiment(r) for r in reps) or "<p id='no-experiments'>No experiments yet "
               "(<code>shoprec experiment create</code>, admin key).</p>"))
    return _page("shoprec: experiments", body)

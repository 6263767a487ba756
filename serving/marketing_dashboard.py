"""The marketers' dashboard (``GET /marketing/dashboard``): cohort retention, the view → cart →
purchase funnel, month-over-month lifecycle flows and CLV by segment, persona or stage, drawn as
inline SVG on the server from the published propensity bundle (the report ``meta["value"]`` that
training/value/train.py wrote, and the scores for CLV). No script, nothing loaded from elsewhere,
every text escaped: the page's Content-Security-Policy holds.

Filters (query string): ``segment`` (an RFM segment: the funnel's sessions and the CLV chart's
customers), ``clv_by`` (``segment``, ``persona`` or ``stage``).
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Callable, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.user_features import SEGMENT_NAMES
from serving.marketing_views import _csrf, _options, _page

GROUPINGS = ("segment", "persona", "stage")


class DashboardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment: Optional[Literal[tuple(SEGMENT_NAMES)]] = Field(None, description="one RFM segment (funnel and CLV)")
    clv_by: Literal[GROUPINGS] = Field("segment", description="group the CLV chart by RFM segment, persona or stage")


@dataclass
class ClvGroup:
    name: str
    customers: int
    mean: float
    median: float
    p90: float


def clv_groups(scores: pd.DataFrame, days: int, by: str, segment: str | None) -> list[ClvGroup]:
    """CLV over ``days`` per group of ``by`` (the customers of ``segment`` only, when given), highest mean first."""
    s = scores if segment is None else scores[scores["segment"] == segment]
    if by == "persona":
        key = s["persona"].astype(int).astype(str) + ": " + s["persona_description"].astype(str)
    else:
        key = s[by].astype(str)
    g = s[f"clv_{days}d"].astype(float).groupby(key)
    table = pd.DataFrame({"customers": g.size(), "mean": g.mean(), "median": g.median(), "p90": g.quantile(0.9)})
    table = table.sort_values(["mean"], ascending=False, kind="stable")
    return [ClvGroup(str(k), int(r.customers), float(r["mean"]), float(r["median"]), float(r.p90)) for k, r in table.iterrows()]


def funnel_totals(funnel: list[dict], segment: str | None) -> dict[str, int]:
    """Sessions reaching view, cart and purchase over all weeks (one RFM segment's, when given)."""
    rows = [r for r in funnel if segment is None or r["group"] == segment]
    return {step: int(sum(r[step] for r in rows)) for step in ("view", "cart", "purchase")}


def _blue(share: float) -> str:
    """White (0) to dark blue (1)."""
    share = min(max(share, 0.0), 1.0)
    r, g, b = (int(255 + (c - 255) * share) for c in (31, 78, 160))
    return f"rgb({r},{g},{b})"


def _ink(share: float) -> str:
    return "#fff" if share > 0.55 else "#1d2733"


def cohort_heatmap(cohorts: list[dict], last: int = 24) -> str:
    """Rows: acquisition month (the latest ``last``); columns: months since the first order; colour and
    text: the share of the cohort who bought in that month (retention)."""
    if not cohorts:
        return "<p class='meta' id='cohort-heatmap'>No complete month of purchases yet.</p>"
    frame = pd.DataFrame(cohorts)
    names = sorted(frame["cohort"].unique())[-last:]
    frame = frame[frame["cohort"].isin(names)]
    ages = int(frame["months_since_first"].max()) + 1
    cell, label_w, top = 34, 120, 22
    parts = [f'<text x="{label_w + i * cell + cell / 2}" y="14" font-size="10" text-anchor="middle">{i}</text>'
             for i in range(ages)]
    for row, name in enumerate(names):
        y = top + row * cell * 0.6
        size = int(frame.loc[frame["cohort"] == name, "customers"].iloc[0])
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(name)} ({size:,})</text>')
        for r in frame[frame["cohort"] == name].itertuples():
            x, share = label_w + r.months_since_first * cell, float(r.retention)
            parts.append(f'<g class="cohort-cell" data-cohort="{escape(name)}" data-age="{r.months_since_first}" '
                         f'data-retention="{share:.4f}"><title>{escape(name)}, month {r.months_since_first}: {share:.1%} '
                         f'bought, {float(r.repurchase_rate):.1%} have bought on a second day</title>'
                         f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell * 0.6 - 2:.1f}" fill="{_blue(share)}"/>'
                         f'<text x="{x + cell / 2 - 1}" y="{y + 13}" font-size="9" text-anchor="middle" '
                         f'fill="{_ink(share)}">{share:.0%}</text></g>')
    height = top + len(names) * cell * 0.6 + 20
    parts.append(f'<text x="{label_w}" y="{height - 4:.0f}" font-size="11" fill="#5b6776">months since the first order; '
                 'cell: share of the cohort (customers) who bought that month</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + ages * cell + 260}" height="{height:.0f}" '
            f'role="img" aria-label="cohort retention" id="cohort-heatmap">{"".join(parts)}</svg>')


def funnel_chart(totals: dict[str, int]) -> str:
    """Three bars (sessions with a view, a cart add, a purchase) with each step's drop-off."""
    if totals["view"] == 0:
        return "<p class='meta' id='funnel'>No sessions: the funnel needs a clickstream (<code>shoprec train --events</code>).</p>"
    bar_w, row_h, label_w = 300, 30, 80
    parts, previous = [], None
    for i, step in enumerate(("view", "cart", "purchase")):
        n, y = totals[step], i * row_h
        drop = f" ({1 - n / previous:.1%} drop-off)" if previous else ""
        parts.append(f'<g class="funnel-step" data-step="{step}" data-sessions="{n}">'
                     f'<text x="{label_w - 6}" y="{y + 18}" font-size="12" text-anchor="end">{step}</text>'
                     f'<rect x="{label_w}" y="{y + 4}" width="{bar_w * n / totals["view"]:.1f}" height="20" fill="#1f6feb"/>'
                     f'<text x="{label_w + bar_w * n / totals["view"] + 4:.1f}" y="{y + 18}" font-size="11">'
                     f'{n:,}{drop}</text></g>')
        previous = n
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 190}" height="{3 * row_h + 6}" role="img" '
            f'aria-label="view to cart to purchase funnel" id="funnel">{"".join(parts)}</svg>')


def transition_heatmap(matrix: dict) -> str:
    """The row-normalised month-over-month stage matrix: share of the customers in a stage at one
    month-end (rows) who are in each stage at the next (columns)."""
    rows, cols, share = matrix["rows"], matrix["columns"], matrix["share"]
    cell, label_w, top = 62, 120, 40
    parts = [f'<text x="{label_w + j * cell + cell / 2}" y="{top - 8}" font-size="10" text-anchor="middle">'
             f'{escape(c.replace("_", " "))}</text>' for j, c in enumerate(cols)]
    for i, r in enumerate(rows):
        y = top + i * 24
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" text-anchor="end">{escape(r.replace("_", " "))}</text>')
        for j, c in enumerate(cols):
            v = float(share[i][j])
            parts.append(f'<g class="flow-cell" data-from="{escape(r)}" data-to="{escape(c)}" data-share="{v:.4f}">'
                         f'<title>{escape(r)} → {escape(c)}: {v:.1%}</title>'
                         f'<rect x="{label_w + j * cell}" y="{y}" width="{cell - 2}" height="22" fill="{_blue(v)}"/>'
                         f'<text x="{label_w + j * cell + cell / 2 - 1}" y="{y + 15}" font-size="10" text-anchor="middle" '
                         f'fill="{_ink(v)}">{v:.0%}</text></g>')
    height = top + len(rows) * 24 + 20
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="11" fill="#5b6776">rows: stage at a month-end; '
                 'columns: stage at the next month-end (all months)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + len(cols) * cell + 20}" height="{height}" role="img" '
            f'aria-label="month-over-month lifecycle stage flows" id="transitions">{"".join(parts)}</svg>')


def clv_chart(groups: list[ClvGroup], days: int) -> str:
    """Mean CLV per group as bars, with customers, median and 90th percentile."""
    if not groups:
        return "<p class='meta' id='clv-chart'>No customers match.</p>"
    bar_w, row_h, label_w = 260, 24, 330  # persona descriptions run to ~50 characters
    top = max(g.mean for g in groups) or 1.0
    parts = []
    for i, g in enumerate(groups):
        y, w = i * row_h, bar_w * g.mean / top
        label = g.name.replace("_", " ")
        parts.append(f'<g class="clv-group" data-group="{escape(g.name)}" data-customers="{g.customers}" '
                     f'data-mean="{g.mean:.2f}"><title>{escape(g.name)}: {g.customers:,} customers, mean {g.mean:,.2f}, '
                     f'median {g.median:,.2f}, 90th percentile {g.p90:,.2f}</title>'
                     f'<text x="{label_w - 6}" y="{y + 16}" font-size="11" text-anchor="end">{escape(label[:56])}</text>'
                     f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="16" fill="#1f6feb"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 16}" font-size="11">{g.mean:,.2f} '
                     f'(median {g.median:,.2f}; {g.customers:,})</text></g>')
    height = len(groups) * row_h + 24
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="11" fill="#5b6776">mean predicted spend over the next '
                 f'{days} days (median; customers)</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 220}" height="{height}" role="img" '
            f'aria-label="CLV by group" id="clv-chart">{"".join(parts)}</svg>')


def _filters(base: str, req: DashboardRequest) -> str:
    return (f'<form method="get" action="{escape(base)}/dashboard" class="filters" id="filters">'
            f'<label>Segment<select name="segment" id="segment"><option value="">all segments</option>'
            f'{_options(SEGMENT_NAMES, req.segment)}</select></label>'
            f'<label>CLV by<select name="clv_by" id="clv_by">{_options(GROUPINGS, req.clv_by)}</select></label>'
            '<button type="submit" id="apply">Apply</button></form>')


def dashboard_page(base: str, req: DashboardRequest, report: dict, scores: pd.DataFrame, version: str, csrf: str) -> str:
    """The whole page: ``report`` is the bundle's ``meta["value"]``, ``scores`` its customers (forgotten ones left out)."""
    days = int(report["horizon_days"])
    groups = clv_groups(scores, days, req.clv_by, req.segment)
    totals = funnel_totals(report.get("funnel", []), req.segment)
    who = f"segment {req.segment.replace('_', ' ')}" if req.segment else "all segments"
    section = lambda title, note, chart: (  # noqa: E731
        f"<section class='chart'><h2>{title}</h2><p class='meta'>{note}</p>{chart}</section>")
    body = (
        f"<h1>Customers: value and lifecycle</h1><p class='meta'>Model version {escape(version)}, scored at "
        f"{escape(str(report.get('scored_at', '')))}. <a href='{escape(base)}/' id='to-list'>Customers at risk</a> "
        f'<form method="post" action="{escape(base)}/logout" style="display:inline">{_csrf(csrf)}'
        '<button type="submit">Sign out</button></form></p>'
        f"{_filters(base, req)}<div class='top'>"
        + section("CLV", f"by {req.clv_by}, {who}", clv_chart(groups, days))
        + section("Funnel", f"sessions, {who}", funnel_chart(totals))
        + section("Stage flows", "month over month, all customers (the segment filter does not apply)",
                  transition_heatmap(report["transition_matrix"]))
        + section("Cohort retention", "by month of the first order, all customers (the segment filter does not apply)",
                  cohort_heatmap(report.get("cohorts", [])))
        + "</div>")
    return _page("shoprec: customer value and lifecycle", body)


def visible_scores(scores: pd.DataFrame, hidden: Callable[[list[str]], list[bool]] | None) -> pd.DataFrame:
    """The scored customers without the forgotten ones (serving/admin.py)."""
    if hidden is None:
        return scores
    return scores[[not gone for gone in hidden(scores["user_id"].astype(str).tolist())]]

"""HTML of the marketers' page: server-rendered, no script, no external resource (the page's
Content-Security-Policy forbids both), every value escaped.

The table shows exactly the rows of ``ChurnRiskAnswer`` and the CSV link repeats the same
query, so the download is what is on screen.
"""
from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from features.user_features import SEGMENT_NAMES
from serving.propensity import ChurnRiskAnswer, ChurnRiskRequest

PAGE_SIZES = (25, 100, 250, 1000)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#fafbfc}
h1{font-size:1.4rem;margin:0 0 .2rem} .meta{color:#5b6776;font-size:.85rem;margin-bottom:1rem}
form.filters{display:flex;gap:1rem;flex-wrap:wrap;align-items:end;background:#fff;padding:.8rem;border:1px solid #d8dee4;border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#5b6776}
input,select,button{font-size:.95rem;padding:.3rem .4rem}
button,.button{background:#1f6feb;color:#fff;border:0;border-radius:4px;padding:.4rem .9rem;text-decoration:none;cursor:pointer}
.top{display:flex;gap:2rem;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse;background:#fff;margin-top:.8rem;font-size:.85rem}
th,td{border-bottom:1px solid #e3e7eb;padding:.35rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums} ul.reasons{margin:0;padding-left:1rem}
.summary{margin:.8rem 0;display:flex;gap:1rem;align-items:center} .error{color:#b42318;font-weight:600}
.pager a{margin-right:.8rem} .chart{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.5rem}
h2{font-size:1rem;margin:.2rem 0} section.chart{margin-top:.8rem}
"""


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body>{body}</body></html>")


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(token)}">'


def login_page(base: str, csrf: str, message: str = "") -> str:
    error = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return _page("shoprec: sign in", (
        f"<h1>Customers at risk</h1><p class='meta'>Sign in with a marketing key: its name "
        f"(<code>shoprec keys list</code>) and the key.</p>{error}"
        f'<form method="post" action="{escape(base)}/login" class="filters">{_csrf(csrf)}'
        '<label>Key name<input type="text" name="account" autocomplete="username" required autofocus></label>'
        '<label>API key<input type="password" name="key" autocomplete="current-password" required></label>'
        '<button type="submit">Sign in</button></form>'))


def message_page(title: str, message: str, back: str | None = None) -> str:
    """A titled message; ``back``: a link to the list (the page's base path), so a bad filter is not a dead end."""
    link = f"<p><a href='{escape(back)}/' id='back'>Back to the list</a></p>" if back is not None else ""
    return _page(f"shoprec: {title}", f"<h1>{escape(title)}</h1><p class='error' role='alert'>{escape(message)}</p>{link}")


def query(req: ChurnRiskRequest, **change) -> str:
    """The query string of a filter state (defaults left out), with ``change`` applied."""
    values = req.model_dump() | change
    defaults = ChurnRiskRequest().model_dump()
    return urlencode({k: v for k, v in values.items() if v is not None and v != defaults[k] and k != "top_n"})


def _options(names, selected: str | None) -> str:
    return "".join(f'<option value="{escape(s)}"{" selected" if selected == s else ""}>{escape(s.replace("_", " "))}</option>'
                   for s in names)


def _filters(base: str, req: ChurnRiskRequest, stages: list[str]) -> str:
    options = _options(SEGMENT_NAMES, req.segment)
    stage = (f'<label>Lifecycle stage<select name="stage" id="stage"><option value="">all stages</option>'
             f'{_options(stages, req.stage)}</select></label>' if stages else "")
    sizes = "".join(f'<option value="{n}"{" selected" if req.page_size == n else ""}>{n}</option>'
                    for n in sorted(set(PAGE_SIZES) | {req.page_size}))
    return (f'<form method="get" action="{escape(base)}/" class="filters" id="filters">'
            f'<label>Segment<select name="segment" id="segment"><option value="">all segments</option>{options}</select></label>'
            f'{stage}'
            f'<label>Min. churn probability<input type="number" name="min_probability" id="min_probability" min="0" max="1" '
            f'step="0.01" value="{req.min_probability:g}"></label>'
            f'<label>Min. value at risk<input type="number" name="min_value" id="min_value" min="0" step="any" '
            f'value="{req.min_value:g}"></label>'
            f'<label>Rows per page<select name="page_size" id="page_size">{sizes}</select></label>'
            '<button type="submit" id="apply">Apply</button></form>')


def segment_chart(all_sizes: dict[str, int], matching: dict[str, int], selected: str | None) -> str:
    """Inline SVG: customers per RFM segment (light: all scored; dark: matching the probability,
    value and stage filters); the selected segment's label is bold."""
    bar_w, row_h, label_w = 260, 22, 150
    top = max([1, *all_sizes.values()])
    rows = []
    for i, s in enumerate(SEGMENT_NAMES):
        y, total, hit = i * row_h, all_sizes.get(s, 0), matching.get(s, 0)
        weight = "bold" if s == selected else "normal"
        rows.append(
            f'<g><title>{s}: {hit:,} of {total:,} customers match</title>'
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12" font-weight="{weight}">{s.replace("_", " ")}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w * total / top:.1f}" height="14" fill="#c9d8f0"/>'
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w * hit / top:.1f}" height="14" fill="#1f6feb"/>'
            f'<text x="{label_w + bar_w * total / top + 4:.1f}" y="{y + 15}" font-size="11" class="segment-size" '
            f'data-segment="{s}">{hit:,} / {total:,}</text></g>')
    height = row_h * len(SEGMENT_NAMES) + 24
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" role="img" '
            f'aria-label="customers per segment" id="segment-chart">{"".join(rows)}'
            f'<text x="{label_w}" y="{height - 4}" font-size="11" fill="#5b6776">dark: matching the filters; '
            'light: all scored customers</text></svg>')


def _row(c) -> str:
    reasons = "".join(f"<li>{escape(r)}</li>" for r in c.reasons)
    return (f'<tr data-customer="{escape(c.user_id)}"><td class="num">{c.rank}</td><td>{escape(c.user_id)}</td>'
            f'<td class="num">{c.churn_probability:.1%}</td><td class="num">{c.value_at_risk:,.2f}</td>'
            f'<td class="num">{c.expected_spend:,.2f}</td>'
            f'<td class="num">{c.conversion_probability:.1%}</td>'
            f'<td>{escape(c.segment)}</td><td>{escape((c.stage or "").replace("_", " "))}</td>'
            f'<td class="num">{c.days_since_last_order:,.0f}</td>'
            f'<td class="num">{c.orders:,.0f}</td><td class="num">{c.total_spend:,.2f}</td>'
            f'<td><ul class="reasons">{reasons}</ul></td></tr>')


def headings(horizon_days: int, window_days: int) -> list[str]:
    """The list's columns; the expected spend is the CLV over the churn horizon times the share of spend the customer
    kept (not returned or cancelled): value at risk = churn × it."""
    return ["rank", "customer", f"churn probability ({horizon_days} days)", "value at risk",
            f"expected spend kept: CLV × share not returned ({horizon_days} days)", f"purchase probability ({window_days} days)", "segment",
            "lifecycle stage", "days since last order", "orders", "total spend (net of returns)", "why"]


def list_page(base: str, req: ChurnRiskRequest, answer: ChurnRiskAnswer, chart: str, csrf: str,
              stages: list[str] = ()) -> str:
    h = answer.horizon_days
    first = (req.page - 1) * req.page_size + 1
    last = first + len(answer.customers) - 1
    shown = f"rows {first:,}–{last:,}" if answer.customers else "no rows on this page"
    pages = max(1, -(-answer.total // req.page_size))
    pager = []
    if req.page > 1:  # from beyond the end, back to the last page that has rows
        pager.append(f'<a href="{escape(base)}/?{escape(query(req, page=min(req.page - 1, pages)))}" id="prev">previous page</a>')
    if last < answer.total:
        pager.append(f'<a href="{escape(base)}/?{escape(query(req, page=req.page + 1))}" id="next">next page</a>')
    table = ("<table id='customers'><thead><tr>" + "".join(f"<th>{t}</th>" for t in headings(h, answer.window_days)) + "</tr></thead><tbody>"
             + "".join(_row(c) for c in answer.customers) + "</tbody></table>")
    if not answer.customers:
        why = ("No customer matches these filters." if answer.total == 0 else
               f"No rows on this page: the list has {answer.total:,} customers on {pages:,} pages.")
        table += f"<p class='empty' id='empty'>{why}</p>"
    download = (f'<a class="button" id="download" href="{escape(base)}/churn_risk.csv?{escape(query(req))}" download>'
                f"Download these {len(answer.customers):,} rows (CSV)</a>" if answer.customers else "")
    body = (
        f"<h1>Customers at risk</h1><p class='meta'>Ranked by value at risk = churn probability ({h} days) × expected "
        f"spend ({h} days). Model version {escape(answer.model_version)}, scored at {escape(answer.scored_at)}. "
        f"<a href='{escape(base)}/dashboard' id='to-dashboard'>Dashboard: value and lifecycle</a> "
        f"<a href='{escape(base)}/experiments' id='to-experiments'>Experiments</a> "
        f'<form method="post" action="{escape(base)}/logout" style="display:inline">{_csrf(csrf)}'
        '<button type="submit">Sign out</button></form></p>'
        f"<div class='top'><div>{_filters(base, req, list(stages))}"
        f"<div class='summary'><span id='total'>{answer.total:,} customers match</span><span id='shown'>{shown}</span>"
        f"{download}</div>"
        f"<div class='pager'>{''.join(pager)}</div></div>"
        f"<div class='chart'><strong>Customers per segment</strong><br>{chart}</div></div>{table}")
    return _page("shoprec: customers at risk", body)

"""``shoprec monitor --since DATE``: the drift report (JSON + HTML) from the service's observation log.

The service's workers append bin counts of what they saw to ``<monitor_dir>/observations-*.jsonl`` and write
each served bundle's training reference once as ``reference-<id>.json`` (serving/monitoring.py). This module
reads only those files (no model store, no MLflow, no server): per reference (a model version) and quantity,
the live counts of every replica summed over the period, PSI and Jensen-Shannon against the reference
(training/reference.py), the alert by the same thresholds as the service (features/settings.py), the same
per UTC day, and the reference's and the live proportions bin by bin. Registered in training/cli.py.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from features.errors import InputError
from training.reference import Reference, drift

DAY = 86_400.0


def parse_day(text: str, option: str) -> dt.datetime:
    """A UTC datetime from ``YYYY-MM-DD`` (midnight) or an ISO 8601 time; InputError naming the option."""
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{option} {text!r} is not a date", "give YYYY-MM-DD (UTC), e.g. "
                         f"{option} {dt.date.today().isoformat()}") from None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def read_log(folder: Path, since: dt.datetime, until: dt.datetime) -> tuple[dict, list[dict], list[str]]:
    """(references by id, observation lines within [since, until), problems) from ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no monitoring folder {folder}", "the service writes it (SHOPREC_MONITOR_DIR, default "
                         "data/monitor) once it has served traffic; give --dir where it is")
    references, problems = {}, []
    for path in sorted(folder.glob("reference-*.json")):
        try:
            data = json.loads(path.read_text())
            data["features"] = {n: Reference.from_json(r, f"{path.name}: {n}") for n, r in data["features"].items()}
            references[data["id"]] = data
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{path.name}: unreadable reference ({type(e).__name__}: {e})")
    lines = []
    first_day = since.date().isoformat()
    for path in sorted(folder.glob("observations-*.jsonl")):
        day = path.name[len("observations-"):len("observations-") + 10]
        if day < first_day or day > until.date().isoformat():  # a file holds the lines flushed on its UTC day
            continue
        for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                line = json.loads(text)
                t1, counts = float(line["t1"]), [int(c) for c in line["counts"]]
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path.name}:{number}: not an observation line (a write cut short?)")
                continue
            if since.timestamp() <= t1 < until.timestamp():
                lines.append(line | {"t1": t1, "counts": counts, "file": path.name})
    return references, lines, problems


def build_report(folder: Path, since: dt.datetime, until: dt.datetime, psi_threshold: float = 0.2,
                 js_threshold: float = 0.1, min_observations: int = 500) -> dict:
    """Every quantity of every reference seen in the period: figures over the period and per day."""
    references, lines, problems = read_log(folder, since, until)
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in lines:
        grouped[(line["reference"], line["feature"])].append(line)
    sections, alerts, orphans = [], [], defaultdict(int)
    for ref_id in sorted({r for r, _ in grouped}, key=lambda r: min(ln["t1"] for (i, _), g in grouped.items() if i == r
                                                                    for ln in g)):
        ref = references.get(ref_id)
        if ref is None:
            orphans[ref_id] += sum(sum(ln["counts"]) for (i, _), g in grouped.items() if i == ref_id for ln in g)
            continue
        features = {}
        for name, reference in ref["features"].items():
            group = [ln for ln in grouped.get((ref_id, name), []) if len(ln["counts"]) == reference.n_bins]
            if not group:
                continue
            features[name] = _feature(name, reference, group, psi_threshold, js_threshold, min_observations)
            if features[name]["alert"]:
                f = features[name]
                alerts.append(f"{ref['model']} {ref['version']} {name}: PSI {f['psi']:.3f}, JS {f['js']:.3f} "
                              f"over {f['n']:,} live values")
        rows = [ln for (i, _), g in grouped.items() if i == ref_id for ln in g]
        sections.append({"reference": ref_id, "model": ref["model"], "version": ref["version"],
                         "run_id": ref.get("run_id", ""), "replicas": sorted({f"{ln['replica']}/{ln['pid']}" for ln in rows}),
                         "first": _iso(min(ln["t1"] for ln in rows)), "last": _iso(max(ln["t1"] for ln in rows)),
                         "features": features})
    problems += [f"{n:,} live values against reference {r}, whose reference file is missing" for r, n in orphans.items()]
    return {"since": since.isoformat(), "until": until.isoformat(), "folder": str(folder),
            "generated_at": _iso(dt.datetime.now(dt.timezone.utc).timestamp()),
            "thresholds": {"psi": psi_threshold, "js": js_threshold, "min_observations": min_observations},
            "observation_lines": len(lines), "references": sections, "alerts": alerts, "problems": problems}


def _feature(name, reference: Reference, group: list[dict], psi_t: float, js_t: float, min_n: int) -> dict:
    def figures(lines):
        counts = np.sum([ln["counts"] for ln in lines], axis=0)
        f = drift(reference, counts)
        enough = f["n"] >= min_n
        alert = bool(enough and (f["psi"] > psi_t or f["js"] > js_t))
        return counts, {"n": f["n"], "psi": _r(f["psi"]), "js": _r(f["js"]), "alert": alert, "enough": enough}

    counts, overall = figures(group)
    by_day = defaultdict(list)
    for ln in group:
        by_day[dt.datetime.fromtimestamp(ln["t1"], dt.timezone.utc).date().isoformat()].append(ln)
    unseen = defaultdict(int)
    for ln in group:
        for k, v in (ln.get("unseen") or {}).items():
            unseen[str(k)] += int(v)
    n = max(1, int(counts.sum()))
    return overall | {
        "kind": reference.kind, "reference_n": reference.n,
        "bins": [{"bin": label, "reference": _r(p), "live": _r(c / n), "live_count": int(c)}
                 for label, p, c in zip(reference.labels(), reference.proportions, counts)],
        "unseen": dict(sorted(unseen.items(), key=lambda kv: -kv[1])),
        "days": [{"day": day} | figures(lines)[1] for day, lines in sorted(by_day.items())],
    }


def _r(x):
    return None if x is None else round(float(x), 6)


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


# -- HTML -----------------------------------------------------------------------------------------------------
CSS = """body{font:14px system-ui,sans-serif;margin:2em;max-width:70em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#f4f4f4}.alert{color:#b00;font-weight:bold}
.ok{color:#070}.bar{display:inline-block;height:.8em}.ref{background:#99b}.live{background:#e93}.muted{color:#777}"""


def render_html(report: dict) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>shoprec drift {e(report['since'][:10])}</title>"
           f"<style>{CSS}</style></head><body><h1>Drift of live traffic against the training data</h1>",
           f"<p>{e(report['since'])} to {e(report['until'])}; from {e(report['folder'])} "
           f"({report['observation_lines']:,} observation lines); generated {e(report['generated_at'])}. Thresholds: PSI "
           f"&gt; {report['thresholds']['psi']}, Jensen-Shannon &gt; {report['thresholds']['js']}, at least "
           f"{report['thresholds']['min_observations']:,} live values.</p>"]
    out.append("<h2>Alerts</h2>" + ("<ul>" + "".join(f"<li class='alert'>{e(a)}</li>" for a in report["alerts"]) + "</ul>"
                                   if report["alerts"] else "<p class='ok'>none</p>"))
    if not report["references"]:
        out.append("<p>No live values in this period.</p>")
    for sec in report["references"]:
        out.append(f"<h2>{e(sec['model'])} {e(sec['version'])}</h2><p class='muted'>MLflow run {e(sec['run_id'] or '?')}; "
                   f"reference {e(sec['reference'])}; {e(sec['first'])} to {e(sec['last'])}; workers "
                   f"{e(', '.join(sec['replicas']))}</p>")
        out.append("<table><tr><th>quantity</th><th>live values</th><th>PSI</th><th>JS</th><th>status</th></tr>")
        for name, f in sec["features"].items():
            out.append(f"<tr><td><a href='#{e(sec['reference'])}-{e(name)}'>{e(name)}</a></td><td>{f['n']:,}</td>"
                       f"<td>{_fmt(f['psi'])}</td><td>{_fmt(f['js'])}</td><td>{_status(f)}</td></tr>")
        out.append("</table>")
        for name, f in sec["features"].items():
            out.append(f"<h3 id='{e(sec['reference'])}-{e(name)}'>{e(name)} <span class='muted'>({e(f['kind'])}; "
                       f"reference {f['reference_n']:,} values)</span></h3><table><tr><th>bin</th><th>training</th>"
                       "<th>live</th><th></th></tr>")
            for b in f["bins"]:
                out.append(f"<tr><td>{e(b['bin'])}</td><td>{b['reference']:.1%}</td><td>{b['live']:.1%}</td><td>"
                           f"<span class='bar ref' style='width:{200 * b['reference']:.0f}px'></span><br>"
                           f"<span class='bar live' style='width:{200 * b['live']:.0f}px'></span></td></tr>")
            out.append("</table>")
            if f["unseen"]:
                out.append("<p>Values the training data never had: " + ", ".join(
                    f"{e(k)} ({v:,})" for k, v in list(f["unseen"].items())[:20]) + "</p>")
            out.append("<table><tr><th>day (UTC)</th><th>live values</th><th>PSI</th><th>JS</th><th>status</th></tr>"
                       + "".join(f"<tr><td>{e(d['day'])}</td><td>{d['n']:,}</td><td>{_fmt(d['psi'])}</td><td>{_fmt(d['js'])}"
                                 f"</td><td>{_status(d)}</td></tr>" for d in f["days"]) + "</table>")
    if report["problems"]:
        out.append("<h2>Problems reading the log</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in report["problems"][:50])
                   + "</ul>")
    return "\n".join(out + ["</body></html>"])


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _status(f: dict) -> str:
    if not f["enough"]:
        return "<span class='muted'>too few values</span>"
    return "<span class='alert'>drifting</span>" if f["alert"] else "<span class='ok'>stable</span>"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """``drift-<since>.json`` and ``.html`` in ``out``, each written whole (temp file, then rename)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"drift-{report['since'][:10]}"
    j, h = out / f"{stem}.json", out / f"{stem}.html"
    for path, text in ((j, json.dumps(report, indent=2, sort_keys=True) + "\n"), (h, render_html(report))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return j, h


def monitor_command(
    since: str = typer.Option(..., "--since", help="first day (UTC) of the report, YYYY-MM-DD"),
    until: Optional[str] = typer.Option(None, "--until", help="day after the last one (UTC, exclusive; default: now)"),
    folder: Optional[Path] = typer.Option(None, "--dir", help="the service's observation log (default: SHOPREC_MONITOR_DIR, "
                                          "else data/monitor)"),
    out: Path = typer.Option(Path("runs/monitor"), "--out", help="folder for drift-<since>.json and drift-<since>.html"),
) -> None:
    """Drift report: live traffic of the service against its training data (PSI and Jensen-Shannon per quantity).

    Example: shoprec monitor --since 2026-12-01
    """
    from features.settings import Settings

    settings = Settings()
    start = parse_day(since, "--since")
    end = parse_day(until, "--until") if until else dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    if end <= start:
        raise InputError(f"--until {until} is not after --since {since}", "give a later --until, or leave it out")
    report = build_report(folder or settings.monitor_dir, start, end, settings.drift_psi_threshold,
                          settings.drift_js_threshold, settings.drift_min_observations)
    j, h = write_report(report, out)
    for line in report["alerts"]:
        typer.secho(f"drifting: {line}", fg="red", err=True)
    n = sum(len(s["features"]) for s in report["references"])
    typer.echo(f"{n} quantities of {len(report['references'])} model version(s), {len(report['alerts'])} drifting; "
               f"wrote {j} and {h}")

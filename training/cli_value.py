"""``shoprec segments``: every scored customer's lifecycle stage, persona and CLV, as CSV for a
spreadsheet or in the format the file name says (features/writers.py, as ``shoprec churn-list``).

Registered in training/cli.py with ``app.command("segments")(segments)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail
from training.propensity.bundle import _inert


def segments(
    out: Path = typer.Option(..., "--out", help="file to write, in the format its name says: .csv (a spreadsheet's: header "
                             "customer_id, stage, persona, persona_description, clv_<h>d, ...), .csv.gz, .parquet or .jsonl"),
    stage: Optional[str] = typer.Option(None, "--stage", help="keep one lifecycle stage (new, active, repeat, cooling, at_risk, lapsed, reactivated)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="a propensity bundle folder (default: the one published to the BentoML store)"),
) -> None:
    """Write lifecycle stages, personas and predicted customer value, highest value first.

    Example: shoprec segments --out segments.csv
    """
    from features.writers import check_table_path, write_table
    from training.cli_forgotten import forgotten_mask
    from training.cli_propensity import _published
    from training.propensity.bundle import PropensityBundle

    fmt, _ = check_table_path(out)  # a name it cannot honour is refused before any work
    try:
        loaded = PropensityBundle.load(bundle) if bundle else _published()
    except FileNotFoundError as e:
        fail(str(e))
    value = loaded.meta.get("value")
    if value is None:
        fail("this propensity bundle has no customer value: train again (`shoprec train` with orders) and publish")
    h = int(value["horizon_days"])
    names = [s["name"] for s in value["stages"]]
    if stage is not None and stage not in names:
        fail(f"--stage: unknown stage {stage!r}; choose one of {', '.join(names)}")
    s = loaded.scores
    s = s[~forgotten_mask(s["user_id"])]  # erased shoppers leave the export at once
    if stage is not None:
        s = s[s["stage"] == stage]
    table = s.sort_values([f"clv_{h}d", "user_id"], ascending=[False, True], kind="stable")
    table = table[["user_id", "stage", "persona", "persona_description", f"clv_{h}d", f"p_buy_{h}d", "segment",
                   "churn_probability"]].rename(columns={"user_id": "customer_id", "segment": "rfm_segment"})
    table[f"clv_{h}d"] = table[f"clv_{h}d"].round(2)
    for col in (f"p_buy_{h}d", "churn_probability"):
        table[col] = table[col].round(4)
    text = ["customer_id", "stage", "persona_description", "rfm_segment"]
    table[text] = table[text].astype(str)
    if fmt == "csv":  # text a spreadsheet must not run as a formula (a customer id from the shop's data)
        table[text] = table[text].map(_inert)
    write_table(table, out)
    typer.echo(f"wrote {len(table):,} customers to {out} (model version {loaded.version}, scored at "
               f"{loaded.meta.get('scored_at', '?')})")

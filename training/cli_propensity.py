"""``shoprec churn-list``: the ranked at-risk list for marketers (the list ``/churn_risk`` serves), as CSV
for a spreadsheet or in the format the file name says.

Registered in training/cli.py with ``app.command("churn-list")(churn_list)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail


def churn_list(
    out: Path = typer.Option(..., "--out", help="file to write, in the format its name says: .csv (a spreadsheet's: "
                             "header customer_id, churn_probability_90d, ...), .csv.gz, .parquet or .jsonl"),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="keep the first N customers of the filtered ranking"),
    min_prob: float = typer.Option(0.0, "--min-prob", min=0.0, max=1.0, help="minimum churn probability"),
    min_value: float = typer.Option(0.0, "--min-value", min=0.0, help="minimum value at risk (churn probability x expected spend)"),
    segment: Optional[str] = typer.Option(None, "--segment", help="one RFM segment (champions, loyal, at_risk, hibernating, ...)"),
    stage: Optional[str] = typer.Option(None, "--stage", help="one lifecycle stage (new, reactivated, repeat, active, cooling, "
                                        "at_risk, lapsed; a bundle with customer value)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="a propensity bundle folder (default: the one published to the BentoML store)"),
) -> None:
    """Write the at-risk customers, ranked by value at risk, with probability, segment and reasons.

    Example: shoprec churn-list --top 500 --min-prob 0.6 --segment at_risk --out at_risk.csv
    """
    import numpy as np

    from features.user_features import SEGMENT_NAMES
    from features.writers import check_table_path, write_table
    from training.cli_forgotten import forgotten_mask
    from training.propensity.bundle import PropensityBundle

    fmt, _ = check_table_path(out)  # a name it cannot honour is refused before any work
    if segment is not None and segment not in SEGMENT_NAMES:
        fail(f"--segment: unknown segment {segment!r}; choose one of {', '.join(SEGMENT_NAMES)}")
    try:
        loaded = PropensityBundle.load(bundle) if bundle else _published()
    except FileNotFoundError as e:
        fail(str(e))
    try:
        rows = loaded.at_risk(min_prob, min_value, segment, None, stage)
    except ValueError as e:  # a stage the bundle does not have
        fail(f"--stage: {e}")
    rows = rows[~forgotten_mask(rows["user_id"])]  # erased shoppers leave the list; the ranks close up
    rows = (rows.head(top) if top is not None else rows).assign(rank=lambda d: np.arange(1, len(d) + 1))
    write_table(loaded.table(rows, spreadsheet=fmt == "csv"), out)
    typer.echo(f"wrote {len(rows):,} customers to {out} (model version {loaded.version}, scored at "
               f"{loaded.meta.get('scored_at', '?')})")


def _published():
    """The bundle in the BentoML store (``BENTOML_HOME``, default ./bentoml_home), version from its labels."""
    import bentoml

    from training.propensity.bundle import PropensityBundle
    from training.propensity.publish import BENTO_MODEL

    os.environ.setdefault("BENTOML_HOME", str(Path.cwd() / "bentoml_home"))
    try:
        ref = bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        fail(f"no propensity bundle in the BentoML store ({os.environ['BENTOML_HOME']}): run `shoprec train` with "
              "orders and `shoprec publish`, or pass --bundle DIR")
    loaded = PropensityBundle.load(ref.path)
    version = ref.info.labels.get("registry_version", loaded.meta.get("model_version", str(ref.tag.version)))
    shop = ref.info.labels.get("shop") or loaded.meta.get("shop")
    loaded.meta["model_version"] = f"{shop}/v{version}" if shop else version  # as the service names it
    return loaded

"""``shoprec score-all``: every shopper's top-k and propensity scores to Parquet, on this machine
(training/batch.py) or on Spark's executors (training/batch_spark.py), with the same rows.

Registered in training/cli.py with ``app.command("score-all")(score_all_command)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail

PROPENSITY_COLUMNS = ["user_id", "churn_probability", "conversion_probability", "expected_spend", "value_at_risk", "segment"]


def score_all_command(
    out: str = typer.Option("runs/scores", "--out", help="folder (with --engine spark: any path or URI Spark writes) "
                            "for topk.parquet and propensity.parquet"),
    k: int = typer.Option(10, "--k", min=1, help="items per shopper"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="a recommender bundle folder (default: the one "
                                          "published to the BentoML store)"),
    propensity: Optional[Path] = typer.Option(None, "--propensity", help="a propensity bundle folder (default: the "
                                              "published one, if any)"),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb: score on this machine; spark: on Spark's executors "
                               "(the bundle broadcast to them)"),
    spark_master: Optional[str] = typer.Option(None, "--spark-master", envvar="SHOPREC_SPARK_MASTER",
                                               help="Spark master with --engine spark (default local[2])"),
) -> None:
    """Write every shopper's top-k (user_id, rank, item_id, score, source) and the propensity scores of the
    published bundle (churn and purchase probability, expected spend, value at risk, segment) as Parquet.

    Example: shoprec score-all --engine spark --out runs/scores
    """
    import numpy as np

    from features.relational.engine import ENGINES
    from features.vocab import IdVocab
    from training.cli_forgotten import forgotten_mask

    if engine not in ENGINES:
        fail(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    bundle = bundle or _published("shoprec-recommender")
    if bundle is None:
        fail("no recommender bundle: run `shoprec train` and `shoprec publish`, or pass --bundle DIR")
    propensity = propensity or _published("shoprec-propensity")
    try:
        ids = IdVocab.load(Path(bundle) / "users.npz").ids
    except FileNotFoundError as e:
        fail(f"--bundle {bundle}: not a recommender bundle ({e})")
    gone = forgotten_mask(ids)  # erased shoppers get no rows; everyone else as the bundle has them
    gone_ids = [str(i) for i in np.asarray(ids)[gone]]
    top_path, prop_path = f"{out.rstrip('/')}/topk.parquet", f"{out.rstrip('/')}/propensity.parquet"
    if engine == "spark":
        from features.relational.engine import spark_session
        from training.batch_spark import score_all_spark

        session = spark_session(spark_master)
        report = score_all_spark(bundle, k, top_path, session=session, skip_user_ids=gone_ids)
        if propensity is not None:
            scores = session.read.parquet(str(Path(propensity) / "scores.parquet"))
            scores = scores.filter(~scores["user_id"].isin(gone_ids)) if gone_ids else scores
            scores.select(*PROPENSITY_COLUMNS).write.mode("overwrite").parquet(prop_path)
    else:
        import pandas as pd

        from training.batch import score_all
        from training.bundle import ModelBundle

        try:
            loaded = ModelBundle.load(bundle)
        except FileNotFoundError as e:
            fail(f"--bundle {bundle}: {e}")
        report = score_all(loaded, k, top_path, users=np.flatnonzero(~gone))
        if propensity is not None:
            scores = pd.read_parquet(Path(propensity) / "scores.parquet", columns=PROPENSITY_COLUMNS)
            scores[~scores["user_id"].astype(str).isin(gone_ids)].to_parquet(prop_path, index=False)
    typer.echo(f"wrote the top-{k} of {report.users:,} shoppers ({report.rows:,} rows) to {top_path} in "
               f"{report.seconds:.1f} s" + (f"; propensity scores to {prop_path}" if propensity is not None else
                                           "; no propensity bundle, no propensity scores"))


def _published(name: str) -> Path | None:
    """The folder of the latest ``name`` in the BentoML store (``BENTOML_HOME``, default ./bentoml_home), if any."""
    import bentoml

    os.environ.setdefault("BENTOML_HOME", str(Path.cwd() / "bentoml_home"))
    try:
        return Path(bentoml.models.get(f"{name}:latest").path)
    except bentoml.exceptions.NotFound:
        return None

"""The shop a notebook explores: ``SHOPREC_NOTEBOOK_SHOP`` (a folder with orders/events/items
files, e.g. ``data/shop`` from ``make run``), else a tiny synthetic shop generated on the spot.

Both go through ``shoprec ingest``'s validation, so a notebook sees the canonical tables the
training jobs see. ``SHOPREC_NOTEBOOK_WORK`` names a writable folder (default: a temp one).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHOP_ENV, WORK_ENV = "SHOPREC_NOTEBOOK_SHOP", "SHOPREC_NOTEBOOK_WORK"
FILES = {"orders": ("orders.parquet", "orders.csv", "orders.csv.gz", "orders.jsonl"),
         "events": ("events.parquet", "events.csv", "events.csv.gz", "events.jsonl"),
         "items": ("items.parquet", "items.csv", "items.csv.gz", "items.jsonl")}


def work_dir() -> Path:
    path = Path(os.environ.get(WORK_ENV) or tempfile.mkdtemp(prefix="shoprec-notebook-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shop_dir(work: Path, preset: str = "tiny") -> Path:
    """The shop folder from the environment, or a freshly generated synthetic one."""
    if os.environ.get(SHOP_ENV):
        return Path(os.environ[SHOP_ENV])
    from features.synthetic import ShopConfig, generate_shop

    generate_shop(ShopConfig.preset(preset), work / "shop")
    return work / "shop"


def load_shop(work: Path | None = None, preset: str = "tiny"):
    """(canonical tables, shop folder): orders, events and items as validated by ``shoprec ingest``."""
    from features.ingest import ingest, load_canonical

    work = work or work_dir()
    shop = shop_dir(work, preset)
    found = {slot: next((shop / n for n in names if (shop / n).exists()), None) for slot, names in FILES.items()}
    if found["orders"] is None and found["events"] is None:
        raise FileNotFoundError(f"{shop}: no orders or events file ({', '.join(FILES['orders'] + FILES['events'])})")
    ingest(orders=found["orders"], events=found["events"], items=found["items"], out_dir=work / "canonical")
    return load_canonical(work / "canonical"), shop

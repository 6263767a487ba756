"""The synthetic shops the benchmarks run on, generated once and cached under data/bench/.

Full mode:
  large   ShopConfig.preset("large"): 1M shoppers, 100k items, ~10M events (generated, ~8 min on 2 cores)
  1m      the first 10% of large's shoppers (one generator chunk) with all their events and orders: ~1M events
  50m     large five times over, shopper/session/order ids renamed per copy: 5M shoppers, ~50M events
          (generating 50M events directly would take ~40 min; the copies keep the real distributions)
Quick mode:
  small   ShopConfig.preset("small"): 5k shoppers, 1k items, ~250k events
  q1m     the "medium" preset with 40k shoppers: ~1M events, 10k items

A shop is (re)made only when its folder lacks ``shop.json``; delete the folder to remake it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.common import DATA

FILES = ("events.parquet", "orders.parquet", "items.parquet")


def shop_dir(name: str) -> Path:
    return DATA / f"shop-{name}"


def ensure(name: str, log=print) -> Path:
    """The folder of shop ``name``, made if missing."""
    out = shop_dir(name)
    if (out / "shop.json").exists():
        return out
    start = time.perf_counter()
    if name == "large":
        _generate("large", {}, out)
    elif name == "small":
        _generate("small", {}, out)
    elif name == "q1m":
        _generate("medium", {"n_users": 40_000}, out)
    elif name == "1m":
        _subset(ensure("large", log), out, users=100_000)
    elif name == "50m":
        _replicate(ensure("large", log), out, copies=5)
    else:
        raise ValueError(f"unknown shop {name!r}")
    info = {"name": name, "seconds_to_make": round(time.perf_counter() - start, 1)}
    for f in FILES:
        info[f.split(".")[0]] = pq.ParquetFile(out / f).metadata.num_rows
    (out / "shop.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"made shop {name}: {info}")
    return out


def info(name: str) -> dict:
    return json.loads((shop_dir(name) / "shop.json").read_text())


def _generate(preset: str, overrides: dict, out: Path) -> None:
    from features.synthetic import ShopConfig, generate_shop

    if out.exists():
        shutil.rmtree(out)
    generate_shop(ShopConfig.preset(preset, **overrides), out)


def _subset(src: Path, out: Path, users: int) -> None:
    """Shoppers u000000 .. u{users-1} (the first generator chunks) and their rows."""
    out.mkdir(parents=True, exist_ok=True)
    limit = f"u{users:06d}"
    for name in ("events.parquet", "orders.parquet"):
        table = pq.read_table(src / name)
        uid = table["user_id"]
        # events: anonymous rows have no user; keep those whose session belongs to the kept chunks
        known = pc.fill_null(pc.less(uid, limit), False)
        keep = known
        if name == "events.parquet":
            # anonymous sessions of the same chunks: session ids are numbered chunk after chunk
            last = pc.max(pc.filter(table["session_id"], known))
            keep = pc.or_(known, pc.and_(pc.is_null(uid), pc.less_equal(table["session_id"], last)))
        pq.write_table(table.filter(keep), out / name, compression="zstd")
    shutil.copy(src / "items.parquet", out / "items.parquet")


def _replicate(src: Path, out: Path, copies: int) -> None:
    """``copies`` disjoint copies of a shop: ids u/s/o get a copy letter, items stay shared."""
    out.mkdir(parents=True, exist_ok=True)
    for name, cols in (("events.parquet", ("user_id", "session_id")), ("orders.parquet", ("order_id", "user_id"))):
        src_file = pq.ParquetFile(src / name)
        with pq.ParquetWriter(out / name, src_file.schema_arrow, compression="zstd") as writer:
            for copy in range(copies):
                for g in range(src_file.num_row_groups):
                    table = src_file.read_row_group(g)
                    for col in cols:
                        i = table.schema.get_field_index(col)
                        renamed = pc.binary_join_element_wise(pa.scalar(f"{'abcdefghij'[copy]}"), table[col], "")
                        table = table.set_column(i, col, renamed.cast(pa.string()))
                    writer.write_table(table)
    shutil.copy(src / "items.parquet", out / "items.parquet")

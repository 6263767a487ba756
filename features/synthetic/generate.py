"""``generate_shop``: write a synthetic shop in the data contract's format, with its truth.

out_dir/events.parquet   ts, user_id (null: anonymous session), session_id, event_type, item_id, price, quantity
out_dir/orders.parquet   order_id, user_id, item_id, ts, quantity (< 0: a return), price
out_dir/items.parquet    item_id, category, price, title, in_stock (on sale on `end`: not retired nor sold out)
out_dir/config.json      the ShopConfig
out_dir/truth/truth.npz  every latent parameter (numeric and unicode arrays, no pickle)
out_dir/truth/users.parquet  user_id, date, p_buy_30, p_churn_90, alive: one row per user and truth date;
    `date` is midnight of day d and the row is the state at the END of day d (window: d+1 .. d+30 / d+90)
out_dir/truth/summary.json   counts of what was written

Shoppers are simulated and written chunk by chunk (``user_chunk``); each chunk's rows are in
time order. Same config -> byte-identical files.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from features.contract import EVENT_TYPES, EVENTS, ITEMS, ORDERS
from features.synthetic.config import ShopConfig
from features.synthetic.model import build_world, config_dump, save_npz
from features.synthetic.simulate import US_PER_DAY, day_tables, simulate_chunk
from features.synthetic.truth import truth_items, user_truth

EVENTS_SCHEMA = pa.schema([("ts", pa.timestamp("us")), ("user_id", pa.string()), ("session_id", pa.string()),
                           ("event_type", pa.string()), ("item_id", pa.string()), ("price", pa.float64()),
                           ("quantity", pa.float64())])
ORDERS_SCHEMA = pa.schema([("order_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                           ("ts", pa.timestamp("us")), ("quantity", pa.float64()), ("price", pa.float64())])
ITEMS_SCHEMA = pa.schema([("item_id", pa.string()), ("category", pa.string()), ("price", pa.float64()),
                          ("title", pa.string()), ("in_stock", pa.bool_())])
TRUTH_SCHEMA = pa.schema([("user_id", pa.string()), ("date", pa.timestamp("us")), ("p_buy_30", pa.float64()),
                          ("p_churn_90", pa.float64()), ("alive", pa.bool_())])
assert EVENTS_SCHEMA.names == EVENTS.names and ORDERS_SCHEMA.names == ORDERS.names and ITEMS_SCHEMA.names == ITEMS.names

_ADJ = ["Classic", "Premium", "Eco", "Mini", "Deluxe", "Everyday", "Vintage", "Smart", "Organic", "Handmade",
        "Travel", "Essential", "Nordic", "Soft"]
_COLOR = ["Red", "Blue", "Green", "Black", "White", "Grey", "Pink", "Gold", "Silver", "Natural"]
_DURABLE = ["Mug", "Lamp", "Notebook", "Backpack", "Headphones", "Scarf", "Vase", "Puzzle", "Umbrella", "Wallet",
            "Cushion", "Frame", "Clock", "Teapot", "Apron", "Bowl", "Blanket", "Speaker", "Sneakers", "Jacket"]
_CONSUMABLE = ["Coffee", "Tea", "Soap", "Shampoo", "Vitamins", "Pet Food", "Candles", "Detergent", "Snacks",
               "Toothpaste", "Chocolate", "Bird Seed"]
_PARQUET = dict(compression="zstd")


@dataclass
class ShopPaths:
    out_dir: Path
    events: Path
    orders: Path
    items: Path
    config: Path
    truth_dir: Path
    counts: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.out_dir} ({', '.join(f'{k}={v:,}' for k, v in self.counts.items())})"


def _ids(prefix: str, numbers: np.ndarray, width: int, mask: np.ndarray | None = None) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64(), mask=mask), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def generate_shop(config: ShopConfig, out_dir) -> ShopPaths:
    """Simulate the shop described by ``config`` and write it (and its truth) under ``out_dir``."""
    # One BLAS thread: faster for these many small products, and identical bits on any core count.
    with threadpool_limits(limits=1, user_api="blas"):
        return _generate(config, Path(out_dir))


def _generate(config: ShopConfig, out_dir: Path) -> ShopPaths:
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    paths = ShopPaths(out_dir, out_dir / "events.parquet", out_dir / "orders.parquet", out_dir / "items.parquet",
                      out_dir / "config.json", truth_dir)
    world = build_world(config)
    tables = day_tables(world)
    ti = truth_items(world, np.random.default_rng(np.random.SeedSequence([config.seed, 2])))
    user_ids = _ids("u", np.arange(world.n_users), id_width(world.n_users, 6))
    item_ids = _ids("i", np.arange(world.n_items), id_width(world.n_items, 5))
    start_us = int(world.start.astype("datetime64[us]").astype(np.int64))
    last_day = config.days - 1
    truth_workers = max(1, min(4, (os.cpu_count() or 1) - 1))

    pq.write_table(_items_table(world, item_ids), paths.items, **_PARQUET)
    counts = dict.fromkeys(["events", "views", "carts", "purchases", "sessions", "orders", "order_lines", "returns"], 0)
    session_offset = order_offset = 0
    # Pipeline: the truth of chunk i is computed on a worker thread while chunk i + 1 is simulated
    # (numpy releases the GIL); every file is still written by this thread, in chunk order.
    with pq.ParquetWriter(paths.events, EVENTS_SCHEMA, **_PARQUET) as ev_w, \
            pq.ParquetWriter(paths.orders, ORDERS_SCHEMA, **_PARQUET) as od_w, \
            pq.ParquetWriter(truth_dir / "users.parquet", TRUTH_SCHEMA, **_PARQUET) as tr_w, \
            ThreadPoolExecutor(max_workers=1) as truth_pool:
        pending = None

        def write_truth(future):
            tr = future.result()
            tr_w.write_table(pa.table({
                "user_id": pc.take(user_ids, pa.array(tr["user"])),
                "date": pa.array(start_us + tr["day"] * US_PER_DAY, pa.int64()).cast(pa.timestamp("us")),
                "p_buy_30": pa.array(tr["p_buy"]),
                "p_churn_90": pa.array(tr["p_churn"]),
                "alive": pa.array(tr["alive"]),
            }, schema=TRUTH_SCHEMA))

        for chunk, lo in enumerate(range(0, world.n_users, config.user_chunk)):
            users = np.arange(lo, min(world.n_users, lo + config.user_chunk))
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3, chunk]))
            out = simulate_chunk(world, tables, users, rng)
            ev, od = out.events, out.orders
            ev_w.write_table(pa.table({
                "ts": pa.array(start_us + ev["ts"], pa.int64()).cast(pa.timestamp("us")),
                "user_id": pc.take(user_ids, pa.array(ev["user"], mask=ev["anon"])),
                "session_id": _ids("s", session_offset + ev["session"], 9),
                "event_type": pc.take(pa.array(EVENT_TYPES), pa.array(ev["etype"])),
                "item_id": pc.take(item_ids, pa.array(ev["item"])),
                "price": pa.array(world.item_price[ev["item"]]),
                "quantity": pa.array(ev["quantity"], from_pandas=True),
            }, schema=EVENTS_SCHEMA))
            od_w.write_table(pa.table({
                "order_id": _ids("o", order_offset + od["order"], 8),
                "user_id": pc.take(user_ids, pa.array(od["user"])),
                "item_id": pc.take(item_ids, pa.array(od["item"])),
                "ts": pa.array(start_us + od["ts"], pa.int64()).cast(pa.timestamp("us")),
                "quantity": pa.array(od["quantity"]),
                "price": pa.array(world.item_price[od["item"]]),
            }, schema=ORDERS_SCHEMA))
            if pending is not None:
                write_truth(pending)
            pending = truth_pool.submit(user_truth, world, ti, users, out.chains, workers=truth_workers)
            session_offset += out.n_sessions
            order_offset += out.n_orders
            counts["events"] += len(ev["ts"])
            for name, code in (("views", 0), ("carts", 1), ("purchases", 2)):
                counts[name] += int((ev["etype"] == code).sum())
            counts["order_lines"] += len(od["order"])
            counts["returns"] += int((od["quantity"] < 0).sum())
            del out, ev, od
        if pending is not None:
            write_truth(pending)
    counts["sessions"], counts["orders"] = session_offset, order_offset

    arrays = world.arrays()
    arrays.update(user_ids=np.asarray(user_ids.to_numpy(zero_copy_only=False), dtype=str),
                  item_ids=np.asarray(item_ids.to_numpy(zero_copy_only=False), dtype=str),
                  item_factors=world.item_factors, start=np.str_(str(world.start)),
                  truth_dates=np.asarray([str(world.start + last_day - b) for b in config.truth_days_before_end]))
    save_npz(truth_dir / "truth.npz", arrays)
    paths.config.write_text(config_dump(config))
    paths.counts = counts
    (truth_dir / "summary.json").write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    return paths


def _items_table(world, item_ids: pa.Array) -> pa.Table:
    rng = np.random.default_rng(np.random.SeedSequence([world.config.seed, 4]))
    n, last = world.n_items, world.config.days - 1
    cons = world.cat_consumable[world.item_cat]
    noun = np.where(cons, np.asarray(_CONSUMABLE)[world.item_cat % len(_CONSUMABLE)],
                    np.asarray(_DURABLE)[world.item_cat % len(_DURABLE)])
    title = pc.binary_join_element_wise(pa.array(np.asarray(_ADJ)[rng.integers(0, len(_ADJ), n)]),
                                        pa.array(np.asarray(_COLOR)[rng.integers(0, len(_COLOR), n)]),
                                        pa.array(noun), " ")
    category = _ids("cat", world.item_cat, 3)
    in_stock = world.on_sale(np.arange(n), np.full(n, last))
    return pa.table({"item_id": item_ids, "category": category, "price": pa.array(world.item_price),
                     "title": title, "in_stock": pa.array(in_stock)}, schema=ITEMS_SCHEMA)

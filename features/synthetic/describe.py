"""What a shop's orders show, in numbers: the properties that tell shop kinds apart.

``profile(orders)`` measures, on the sale lines (quantity > 0): the long tail (share of lines on
the top 1% / 10% of items sold), repeat purchases (share of lines re-buying an item the shopper
bought in the previous 30 days), how often shoppers buy, basket quantities, the season (lines
per day in the last 60 days over the year's mean), launches and fading, and how much "what sells
now" matters: NDCG@10 of global lists (all-time popularity and distinct buyers over the last
3 / 7 / 30 days before the cutoff) under the PRODUCT.md discovery protocol.

It works on any shop in the data contract, so a synthetic kind can be set beside a real shop:

    python -m features.synthetic.describe data/shop ../shared/data/online-retail/onlineretail.csv.gz
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


def profile(orders: pd.DataFrame, items: pd.DataFrame | None = None, test_days: float = 30.0, k: int = 10) -> dict:
    """The properties of a shop's sale lines (``orders``: user_id, item_id, ts, quantity)."""
    lines = orders.loc[orders["quantity"] > 0, ["user_id", "item_id", "ts", "quantity"]]
    lines = lines.sort_values("ts", kind="stable", ignore_index=True)
    ts = lines["ts"]
    span_days = max((ts.max() - ts.min()) / DAY, 1.0)
    per_item = lines["item_id"].value_counts().to_numpy()
    end = ts.max()

    pair = lines.groupby(["user_id", "item_id"], sort=False).ngroup().to_numpy()
    prev = pd.Series(ts.to_numpy()).groupby(pair).shift(1)
    gap = (ts - prev) / DAY  # days since the shopper last bought this item (NaN: first time)
    days = ts.dt.floor("D")
    buy_days = pd.DataFrame({"u": lines["user_id"], "d": days}).drop_duplicates()
    day_gap = buy_days.groupby("u")["d"].diff().dropna() / DAY
    per_user_days = buy_days.groupby("u").size()

    first_sale = lines.groupby("item_id")["ts"].min()
    last_sale = lines.groupby("item_id")["ts"].max()
    test = lines[ts > end - test_days * DAY]
    new_items = first_sale.index[first_sale > end - 90 * DAY]
    early = first_sale.index[first_sale < ts.min() + 90 * DAY]
    recent_60 = float((ts > end - 60 * DAY).sum()) / 60.0

    out = {
        "order_lines": len(lines),
        "customers": int(lines["user_id"].nunique()),
        "items_sold": len(per_item),
        "catalogue": None if items is None else len(items),
        "days": round(span_days, 1),
        "lines_per_customer": round(len(lines) / max(lines["user_id"].nunique(), 1), 1),
        "top1pct_share": _top_share(per_item, 0.01),
        "top10pct_share": _top_share(per_item, 0.10),
        "repeat_share": round(float(gap.notna().mean()), 3),
        "repeat_30d_share": round(float((gap <= 30).mean()), 3),
        "median_repeat_days": _round(gap.median()),
        "buying_days_per_customer": round(float(per_user_days.mean()), 1),
        "median_days_between_buying_days": _round(day_gap.median()),
        "median_quantity": float(lines["quantity"].median()),
        "mean_quantity": round(float(lines["quantity"].mean()), 2),
        "quantity_ge_6_share": round(float((lines["quantity"] >= 6).mean()), 3),
        "last_60d_lift": round(recent_60 / (len(lines) / span_days), 2),
        "test_lines_on_new_items": round(float(test["item_id"].isin(new_items).mean()), 3) if len(test) else None,
        "early_items_gone_last_90d": round(float((last_sale[early] < end - 90 * DAY).mean()), 3) if len(early) else None,
    }
    out["global_list_ndcg@10"] = global_list_ndcg(lines, test_days=test_days, k=k)
    out["window_spearman"] = window_spearman(lines, test_days=test_days)
    return out


def window_spearman(lines: pd.DataFrame, test_days: float = 30.0, windows=(3, 7, 30, None)) -> dict:
    """Spearman correlation, over the items sold up to the cutoff, between an item's distinct
    buyers in the last ``w`` days before the cutoff (``None``: all time) and its new buyers in
    the test period (shoppers who had not bought it before): how well each window predicts what
    sells next. Less noisy than ``global_list_ndcg`` (items, not users), for small shops."""
    cutoff = lines["ts"].max() - test_days * DAY
    past, future = lines[lines["ts"] <= cutoff], lines[lines["ts"] > cutoff]
    items = pd.Index(past["item_id"].unique())
    owned = pd.MultiIndex.from_frame(past[["user_id", "item_id"]].drop_duplicates())
    fresh = future[["user_id", "item_id"]].drop_duplicates()
    fresh = fresh[~pd.MultiIndex.from_frame(fresh).isin(owned) & fresh["item_id"].isin(items)]
    target = fresh["item_id"].value_counts().reindex(items, fill_value=0)
    out = {}
    for w in windows:
        recent = past if w is None else past[past["ts"] > cutoff - w * DAY]
        buyers = recent.groupby("item_id")["user_id"].nunique().reindex(items, fill_value=0)
        out["all" if w is None else f"{w}d"] = round(float(buyers.corr(target, method="spearman")), 3)
    return out


def global_list_ndcg(lines: pd.DataFrame, test_days: float = 30.0, windows=(None, 3, 7, 30), k: int = 10) -> dict:
    """NDCG@k of one list for everyone, by distinct buyers (``None``: all time; a number: the
    last that many days before the cutoff, ties broken by all-time buyers), PRODUCT.md protocol:
    cutoff = last purchase - test_days; known users and items bought up to the cutoff; truth =
    known items a known user bought after it and never before; bought items excluded."""
    cutoff = lines["ts"].max() - test_days * DAY
    past, future = lines[lines["ts"] <= cutoff], lines[lines["ts"] > cutoff]
    users, items = pd.Index(past["user_id"].unique()), pd.Index(past["item_id"].unique())
    n = len(items)
    bu, bi = users.get_indexer(past["user_id"]), items.get_indexer(past["item_id"])
    bought = np.unique(bu.astype(np.int64) * n + bi)
    fu, fi = users.get_indexer(future["user_id"]), items.get_indexer(future["item_id"])
    known = (fu >= 0) & (fi >= 0)
    truth = np.setdiff1d(np.unique(fu[known].astype(np.int64) * n + fi[known]), bought)
    if not len(truth):
        return {}
    tu, ti = truth // n, truth % n
    all_time = np.bincount(bought % n, minlength=n).astype(np.float64)
    test_users, per_user = np.unique(tu, return_counts=True)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discount)[np.minimum(per_user, k) - 1]
    out = {}
    for w in windows:
        score = all_time
        if w is not None:
            recent = past[past["ts"] > cutoff - w * DAY]
            pairs = np.unique(users.get_indexer(recent["user_id"]).astype(np.int64) * n
                              + items.get_indexer(recent["item_id"]))
            score = np.bincount(pairs % n, minlength=n) * (all_time.max() + 1.0) + all_time
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-score, kind="stable")] = np.arange(n)
        # a truth item's position in the user's list: its rank less the bought items ranked above it
        keys = np.sort((bought // n) * (n + 1) + rank[bought % n])
        base = tu * (n + 1)
        pos = rank[ti] - (np.searchsorted(keys, base + rank[ti]) - np.searchsorted(keys, base))
        hit = pos < k
        dcg = np.bincount(np.searchsorted(test_users, tu[hit]), discount[pos[hit]], minlength=len(test_users))
        out["popular" if w is None else f"trending_{w}d"] = round(float((dcg / ideal).mean()), 4)
    out["test_users"] = len(test_users)
    return out


def _top_share(per_item: np.ndarray, share: float) -> float:
    top = max(1, int(np.ceil(share * len(per_item))))
    return round(float(np.sort(per_item)[::-1][:top].sum() / max(per_item.sum(), 1)), 3)


def _round(x, digits: int = 1):
    return None if pd.isna(x) else round(float(x), digits)


def read_shop(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Orders (and items, if any) of a shop folder (orders.parquet, items.parquet) or an orders
    file; Online Retail's sale lines as PRODUCT.md's peers kept them."""
    path = Path(path)
    if path.is_dir():
        items = path / "items.parquet"
        return pd.read_parquet(path / "orders.parquet"), pd.read_parquet(items) if items.exists() else None
    from features.ingest import detect_layout

    if detect_layout(path) == "online-retail":
        from features.adapters import read_online_retail

        tables = read_online_retail(path).tables
        orders = tables["orders"]
        sale = (orders["quantity"] > 0) & (orders["price"] > 0) & ~orders["order_id"].str.upper().str.startswith("C")
        return orders[sale], tables["items"]
    from features.readers import read_raw

    orders = read_raw(path)
    orders["ts"] = pd.to_datetime(orders["ts"])
    return orders, None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m features.synthetic.describe SHOP_DIR_OR_ORDERS_FILE ...", file=sys.stderr)
        return 2
    for arg in argv:
        orders, items = read_shop(Path(arg))
        print(json.dumps({"shop": arg, **profile(orders, items)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

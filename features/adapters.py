"""Adapters from public data layouts to the data contract.

- UCI Online Retail (Chen et al. 2012; CC BY 4.0): invoice lines -> orders + items.
- OTTO session JSON Lines (CC BY 4.0): click/cart/order events -> events + orders.

Adapter rules reject rows with their own reasons; the mapped rows then go through the same
``validate`` as contract files, so canonical tables look alike whatever their origin.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import EVENTS, ITEMS, ORDERS
from features.errors import EMPTY_REMEDY, IngestError
from features.readers import read_json_table, read_raw
from features.validate import Reasons, ValidationResult, make_rejects, numbers, text, validate

UCI_COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
OTTO_TYPES = {"clicks": "view", "carts": "cart", "orders": "purchase"}
NON_PRODUCT = "non-product"


@dataclass
class AdapterResult:
    """Canonical tables by name ("events", "orders", "items"), the rejects of the input
    file (REJECT_COLUMNS) and its counts: read, accepted, rejected, by_reason, notes."""

    tables: dict[str, pd.DataFrame]
    rejects: pd.DataFrame
    counts: dict

    @classmethod
    def from_validation(cls, table: str, result: ValidationResult) -> "AdapterResult":
        return cls({table: result.accepted}, result.rejects, result.counts)


def is_non_product(codes: pd.Series) -> pd.Series:
    """Postage, fees, discounts, manual adjustments, vouchers (POST, D, M, BANK CHARGES,
    gift_0001_10, ...): codes without the leading 5-digit number of real products. DCGS*
    codes are the exception: dotcom gift-shop goods with real titles (party bags, collars)."""
    return ~codes.str.match(r"^(\d{5}|DCGS)").fillna(False).astype(bool)


def read_online_retail(path: Path, forgotten=None, engine=None) -> AdapterResult:
    """UCI Online Retail invoice lines as canonical orders plus an items table.

    Kept: lines with a customer id; cancellations (InvoiceNo "C...") stay as return lines
    with their negative quantity. Rejected: no customer id; sale lines with quantity <= 0 or
    price <= 0. Exact duplicate lines are kept (as the published peers did) and counted.
    Items are every stock code in the file (codes are case-sensitive, as the peers kept them).
    ``engine`` runs the contract's row rules (see ``validate``).
    """
    path = Path(path)
    raw = read_raw(path)
    absent = [c for c in UCI_COLUMNS if c not in raw.columns]
    if absent:
        raise IngestError(f"{path.name}: missing Online Retail column {', '.join(map(repr, absent))}")
    customer = text(raw["CustomerID"]).str.replace(r"\.0+$", "", regex=True)
    cancelled = text(raw["InvoiceNo"]).str.upper().str.startswith("C").fillna(False).to_numpy(dtype=bool)
    quantity, price = numbers(raw["Quantity"]), numbers(raw["UnitPrice"])

    reasons = Reasons(len(raw))
    reasons.add(customer.isna().to_numpy(), "missing customer id")
    reasons.add(~cancelled & (quantity <= 0), "quantity <= 0 on a sale line")
    reasons.add(~cancelled & (price <= 0), "price <= 0 on a sale line")
    reasons.add(cancelled & (quantity > 0), "positive quantity on a cancellation")
    keep = reasons.open.copy()

    mapped = pd.DataFrame(
        {
            "order_id": raw["InvoiceNo"],
            "user_id": customer,
            "item_id": raw["StockCode"],
            "ts": raw["InvoiceDate"],
            "quantity": raw["Quantity"],
            "price": raw["UnitPrice"],
        }
    )
    rows = np.arange(1, len(raw) + 1)
    orders = validate(mapped[keep], ORDERS, path.name, rows=rows[keep], raw=raw[keep], forgotten=forgotten, engine=engine)
    rejects = pd.concat([make_rejects(path.name, rows, reasons, raw), orders.rejects], ignore_index=True)
    rejects = rejects.sort_values("row", kind="stable", ignore_index=True)

    items = validate(_uci_items(raw, price), ITEMS, f"{path.name} (items)", engine=engine)
    accepted = orders.accepted
    positive = accepted[(accepted["quantity"] > 0) & (accepted["price"] > 0)]
    counts = _counts(len(raw), len(accepted), rejects, reasons.by_reason(), orders.by_reason)
    counts["notes"] = {
        "cancellations": int(accepted["order_id"].str.upper().str.startswith("C").sum()),
        "non_product_lines": int(is_non_product(accepted["item_id"]).sum()),
        "duplicate_lines": int(raw[keep].duplicated().sum()),
        "positive_lines": len(positive),
        "positive_customers": int(positive["user_id"].nunique()),
        "positive_items": int(positive["item_id"].nunique()),
        "items": len(items.accepted),
        "non_product_items": int((items.accepted["category"] == NON_PRODUCT).sum()),
    }
    return AdapterResult({"orders": accepted, "items": items.accepted}, rejects, counts)


def _uci_items(raw: pd.DataFrame, price: np.ndarray) -> pd.DataFrame:
    """One row per stock code: its most frequent description (sale lines first), median
    positive unit price, "non-product" category for fees and adjustments."""
    lines = pd.DataFrame({"item_id": text(raw["StockCode"]), "title": text(raw["Description"]), "price": price})
    lines = lines[lines["item_id"].notna()]
    titles = (
        lines[lines["title"].notna()]
        .assign(sale=lambda d: d["price"] > 0)
        .groupby(["item_id", "title"], sort=False)
        .agg(sale=("sale", "sum"), n=("sale", "size"))
        .reset_index()
        .sort_values(["item_id", "sale", "n", "title"], ascending=[True, False, False, True])
        .drop_duplicates("item_id")
        .set_index("item_id")["title"]
    )
    prices = lines[lines["price"] > 0].groupby("item_id")["price"].median()
    ids = pd.Series(np.sort(lines["item_id"].unique().to_numpy(dtype=object)), dtype="string")
    return pd.DataFrame(
        {
            "item_id": ids,
            "category": pd.Series(np.where(is_non_product(ids), NON_PRODUCT, None), dtype="string"),
            "price": ids.map(prices).astype("float64"),
            "title": ids.map(titles).astype("string"),
            "in_stock": True,
        }
    )


def read_otto(path: Path, forgotten=None, engine=None) -> AdapterResult:
    """OTTO sessions ({"session", "events": [{"aid", "ts", "type"}]}) as canonical events,
    plus orders from the "orders" events.

    OTTO has no user ids: the session is the only identity, so user_id = session_id = the
    session number. Reject rows are numbered by the session's line in the file. OTTO has no
    prices: order lines get quantity 1 and price 0.0 (the contract requires a price >= 0).
    """
    path = Path(path)
    try:
        table = read_json_table(path)
    except (pa.ArrowException, OSError) as e:
        raise IngestError(f"{path.name}: cannot read as OTTO JSON Lines ({e})") from e
    if table.num_rows == 0:
        raise IngestError(f"{path.name}: empty file (no sessions)", EMPTY_REMEDY)
    absent = [c for c in ("session", "events") if c not in table.column_names]
    if absent:
        raise IngestError(f"{path.name}: missing OTTO field {', '.join(map(repr, absent))}")
    try:
        raw, line = _otto_events(table)
    except (pa.ArrowException, KeyError, TypeError, AttributeError) as e:
        raise IngestError(f"{path.name}: 'events' is not a list of {{aid, ts, type}} objects ({e})") from e
    ms = numbers(raw["ts"])
    mapped = pd.DataFrame(
        {
            "ts": pd.to_datetime(ms, unit="ms"),
            "user_id": text(raw["session"]),
            "session_id": text(raw["session"]),
            "event_type": text(raw["type"]).map(OTTO_TYPES).fillna(text(raw["type"])),
            "item_id": text(raw["aid"]),
        }
    )
    result = validate(mapped, EVENTS, path.name, rows=line, raw=raw, forgotten=forgotten, engine=engine)
    ev = result.accepted
    buys = ev[ev["event_type"] == "purchase"]
    orders = pd.DataFrame(
        {
            "order_id": buys["session_id"] + "-" + (buys["ts"].astype("int64") // 1_000_000).astype("string"),
            "user_id": buys["user_id"],
            "item_id": buys["item_id"],
            "ts": buys["ts"],
            "quantity": 1.0,
            "price": 0.0,
        }
    )
    tables = {"events": ev}
    if len(orders):
        tables["orders"] = validate(orders, ORDERS, f"{path.name} (orders)", engine=engine).accepted
    counts = result.counts
    counts["notes"] = {
        "sessions": int(table.num_rows),
        "by_event_type": {t: int((ev["event_type"] == t).sum()) for t in ("view", "cart", "purchase")},
        "order_lines": len(orders),
        "identity": "user_id = session_id = OTTO session (no user ids in OTTO)",
        "prices": "none in OTTO; order lines have price 0.0 and quantity 1",
    }
    return AdapterResult(tables, result.rejects, counts)


def _otto_events(table: pa.Table) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per event (session, aid, ts, type) and the file line of its session."""
    events = table.column("events").combine_chunks()
    lengths = pc.list_value_length(events).fill_null(0).to_numpy()
    structs = pc.list_flatten(events)
    nullable_int = {pa.int64(): pd.Int64Dtype()}.get
    sessions = table.column("session").to_pandas(types_mapper=nullable_int)
    raw = pd.DataFrame({"session": sessions.iloc[np.repeat(np.arange(len(sessions)), lengths)].to_numpy()})
    for name in ("aid", "ts", "type"):
        raw[name] = structs.field(name).to_pandas(types_mapper=nullable_int)
    return raw, np.repeat(np.arange(1, table.num_rows + 1), lengths)


def _counts(read: int, accepted: int, rejects: pd.DataFrame, *by_reason: dict[str, int]) -> dict:
    merged: dict[str, int] = {}
    for counts in by_reason:
        for reason, count in counts.items():
            merged[reason] = merged.get(reason, 0) + count
    return {
        "read": read,
        "accepted": accepted,
        "rejected": len(rejects),
        "by_reason": dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))),
    }

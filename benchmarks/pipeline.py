"""Feature pipeline: our code (pandas) next to DuckDB SQL doing the same work on the same files.

Three stages, each timed in its own child process (peak RSS per stage from the kernel):

  canonical   raw events/orders/items Parquet -> validated, de-duplicated, sorted canonical Parquet
              ours: features.ingest.ingest (rejects.csv + report included)
              floor: one DuckDB SQL script with the same rules (required fields, event types,
              negative prices, zero quantities, exact duplicate events, duplicate item ids) and sort keys
  matrix      canonical tables -> users x items CSR (view 1, cart 3, purchase = order line 10; ids sorted)
              ours: load_canonical + interaction_log + build_matrix
              floor: DuckDB GROUP BY (user, item) + dense ranks of the ids, then scipy CSR from its arrays
  aggregates  canonical events -> per identified user: views, carts, purchases, last event ts,
              distinct items; written to Parquet
              ours: Arrow dictionary-encoding + NumPy + pandas (ids hashed once); floor: one DuckDB GROUP BY

Both sides of stages 2 and 3 read the same canonical files (ours); the floor's matrix is checked
against ours (shape, nnz, sum) and the row counts of stage 1 against each other.

    python -m benchmarks.pipeline task <task> <shop_dir> <work_dir>     (one child)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import emit

WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 10.0}  # InteractionConfig() defaults


# ---------------------------------------------------------------------------------- ours
def ours_canonical(shop: Path, work: Path) -> None:
    from features.ingest import ingest

    out = work / "canonical"
    start = time.perf_counter()
    report = ingest(shop / "orders.parquet", shop / "events.parquet", shop / "items.parquet", out)
    emit(time.perf_counter() - start, tables=report.tables,
         rejected={f.table: f.rejected for f in report.files})


def ours_matrix(shop: Path, work: Path) -> None:
    from features.ingest import load_canonical
    from features.interactions import InteractionConfig, build_matrix, interaction_log

    start = time.perf_counter()
    canon = load_canonical(work / "canonical")
    loaded = time.perf_counter()
    config = InteractionConfig()
    log = interaction_log(canon.events, canon.orders, config)
    logged = time.perf_counter()
    inter = build_matrix(log, config)
    end = time.perf_counter()
    m = inter.matrix
    emit(end - start, shape=list(m.shape), nnz=int(m.nnz), sum=float(m.sum(dtype="float64")),
         parts={"load_canonical": loaded - start, "interaction_log": logged - loaded, "build_matrix": end - logged})


def ours_aggregates(shop: Path, work: Path) -> None:
    """Our stack as we would ship it: Arrow reads and dictionary-encodes the text columns (each
    distinct id hashed once, no Python objects), NumPy does the integer arithmetic, pandas only
    the per-user max and the output frame."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = time.perf_counter()
    t = pq.read_table(work / "canonical" / "events.parquet", columns=["ts", "user_id", "event_type", "item_id"])

    def codes(column, sort: bool = False):
        enc = pc.dictionary_encode(t[column]).combine_chunks()
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        names = enc.dictionary
        if sort:  # codes in id order, as the SQL ORDER BY user_id
            order = pc.sort_indices(names).to_numpy()
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            idx = np.where(idx >= 0, rank[np.maximum(idx, 0)], -1)
            names = names.take(order)
        return idx, names

    user, user_ids = codes("user_id", sort=True)  # anonymous -> -1
    item, item_ids = codes("item_id")
    kind_code, kinds = codes("event_type")
    kind = np.array([("view", "cart", "purchase").index(k) if k in ("view", "cart", "purchase") else -1
                     for k in kinds.to_pylist()] + [-1])[kind_code]
    ts = t["ts"].combine_chunks().cast("int64").to_numpy()
    known = user >= 0
    user, item, kind, ts = user[known], item[known], kind[known], ts[known]
    n, m = len(user_ids), len(item_ids)
    typed = kind >= 0
    counts = np.bincount(user[typed] * 3 + kind[typed], minlength=3 * n).reshape(n, 3)
    last_ts = pd.Series(ts).groupby(user, sort=True).max().to_numpy()
    distinct = np.bincount(np.unique(user * m + item) // m, minlength=n)
    unit = t.schema.field("ts").type.unit
    out = pd.DataFrame({"user_id": user_ids.to_numpy(zero_copy_only=False), "views": counts[:, 0], "carts": counts[:, 1],
                        "purchases": counts[:, 2], "last_ts": last_ts.astype(f"datetime64[{unit}]"),
                        "distinct_items": distinct})
    out.to_parquet(work / "aggregates_ours.parquet", index=False)
    emit(time.perf_counter() - start, users=len(out), events=int(counts.sum()))


# ---------------------------------------------------------------------------------- floor
def _duck():
    """A DuckDB connection for the hand-written SQL: order kept only where asked, the same memory limit as the
    product's engine (SHOPREC_DUCKDB_MEMORY) and spills to the system's temporary directory."""
    import os
    import tempfile

    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET temp_directory = " + _q(Path(tempfile.gettempdir()) / "shoprec-duckdb"))
    if os.environ.get("SHOPREC_DUCKDB_MEMORY"):
        con.execute("SET memory_limit = " + _q(os.environ["SHOPREC_DUCKDB_MEMORY"]))
    return con


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def duck_canonical(shop: Path, work: Path) -> None:
    out = work / "canonical_duck"
    out.mkdir(parents=True, exist_ok=True)
    con = _duck()
    start = time.perf_counter()
    ev, od, it = (_q(shop / f) for f in ("events.parquet", "orders.parquet", "items.parquet"))
    checked = f"""
        WITH ev AS (
            SELECT file_row_number AS _row, CAST(ts AS TIMESTAMP) AS ts, nullif(trim(user_id), '') AS user_id,
                   nullif(trim(session_id), '') AS session_id, lower(nullif(trim(event_type), '')) AS event_type,
                   nullif(trim(item_id), '') AS item_id, CAST(price AS DOUBLE) AS price,
                   CAST(quantity AS DOUBLE) AS quantity
            FROM read_parquet({ev}, file_row_number = true))
        SELECT *, CASE WHEN ts IS NULL THEN 'missing ts' WHEN session_id IS NULL THEN 'missing session_id'
                       WHEN event_type IS NULL THEN 'missing event_type' WHEN item_id IS NULL THEN 'missing item_id'
                       WHEN event_type NOT IN ('view', 'cart', 'purchase') THEN 'unknown event_type'
                       WHEN price < 0 THEN 'negative price' END AS reason
        FROM ev"""
    # exact duplicates: one hash aggregate over every column, keeping the first row of each
    con.execute(f"""
        COPY (SELECT ts, user_id, session_id, event_type, item_id, price, quantity FROM (
                SELECT ts, user_id, session_id, event_type, item_id, price, quantity, min(_row) AS _row
                FROM ({checked}) WHERE reason IS NULL GROUP BY ALL)
              ORDER BY ts, session_id, _row)
        TO {_q(out / 'events.parquet')} (FORMAT parquet)""")
    con.execute(f"""
        COPY (SELECT source, row, reason FROM (SELECT 'events.parquet' AS source, _row + 1 AS row, reason
              FROM ({checked}) WHERE reason IS NOT NULL))
        TO {_q(out / 'rejects.csv')} (HEADER)""")
    con.execute(f"""
        COPY (SELECT order_id, user_id, item_id, ts, quantity, price FROM (
                SELECT file_row_number AS _row, nullif(trim(order_id), '') AS order_id,
                       nullif(trim(user_id), '') AS user_id, nullif(trim(item_id), '') AS item_id,
                       CAST(ts AS TIMESTAMP) AS ts, CAST(quantity AS DOUBLE) AS quantity, CAST(price AS DOUBLE) AS price
                FROM read_parquet({od}, file_row_number = true))
              WHERE order_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL AND ts IS NOT NULL
                AND quantity IS NOT NULL AND quantity <> 0 AND price IS NOT NULL AND price >= 0
              ORDER BY ts, order_id, item_id, _row)
        TO {_q(out / 'orders.parquet')} (FORMAT parquet)""")
    con.execute(f"""
        COPY (SELECT item_id, category, price, title, in_stock FROM (
                SELECT nullif(trim(item_id), '') AS item_id, arg_min(nullif(trim(category), ''), file_row_number) AS category,
                       arg_min(price, file_row_number) AS price, arg_min(nullif(trim(title), ''), file_row_number) AS title,
                       arg_min(coalesce(in_stock, true), file_row_number) AS in_stock
                FROM read_parquet({it}, file_row_number = true) WHERE nullif(trim(item_id), '') IS NOT NULL GROUP BY 1)
              ORDER BY item_id)
        TO {_q(out / 'items.parquet')} (FORMAT parquet)""")
    seconds = time.perf_counter() - start
    n = {t: con.execute(f"SELECT count(*) FROM read_parquet({_q(out / (t + '.parquet'))})").fetchone()[0]
         for t in ("events", "orders", "items")}
    emit(seconds, tables=n)


def duck_matrix(shop: Path, work: Path) -> None:
    import numpy as np
    import scipy.sparse as sp

    con = _duck()
    canon = work / "canonical"
    start = time.perf_counter()
    ev, od = _q(canon / "events.parquet"), _q(canon / "orders.parquet")
    con.execute(f"""
        CREATE TEMP TABLE log AS
        SELECT user_id, item_id, CASE event_type WHEN 'view' THEN {WEIGHTS['view']} ELSE {WEIGHTS['cart']} END AS w
        FROM read_parquet({ev}) WHERE user_id IS NOT NULL AND event_type IN ('view', 'cart')
        UNION ALL
        SELECT user_id, item_id, {WEIGHTS['purchase']} FROM read_parquet({od}) WHERE quantity > 0""")
    con.execute("CREATE TEMP TABLE users AS SELECT user_id, CAST(row_number() OVER (ORDER BY user_id) - 1 AS INTEGER) AS r "
                "FROM (SELECT DISTINCT user_id FROM log)")
    con.execute("CREATE TEMP TABLE items AS SELECT item_id, CAST(row_number() OVER (ORDER BY item_id) - 1 AS INTEGER) AS c "
                "FROM (SELECT DISTINCT item_id FROM log)")
    cells = con.execute("SELECT u.r, i.c, sum(l.w) AS w FROM log l JOIN users u USING (user_id) "
                        "JOIN items i USING (item_id) GROUP BY ALL").fetchnumpy()
    user_ids = con.execute("SELECT user_id FROM users ORDER BY r").fetchnumpy()["user_id"]
    item_ids = con.execute("SELECT item_id FROM items ORDER BY c").fetchnumpy()["item_id"]
    m = sp.csr_matrix((cells["w"].astype(np.float32), (cells["r"], cells["c"])), shape=(len(user_ids), len(item_ids)))
    seconds = time.perf_counter() - start
    emit(seconds, shape=list(m.shape), nnz=int(m.nnz), sum=float(m.sum(dtype="float64")))


def duck_aggregates(shop: Path, work: Path) -> None:
    con = _duck()
    start = time.perf_counter()
    con.execute(f"""
        COPY (SELECT user_id, count(*) FILTER (WHERE event_type = 'view') AS views,
                     count(*) FILTER (WHERE event_type = 'cart') AS carts,
                     count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                     max(ts) AS last_ts, count(DISTINCT item_id) AS distinct_items
              FROM read_parquet({_q(work / 'canonical' / 'events.parquet')}) WHERE user_id IS NOT NULL
              GROUP BY user_id ORDER BY user_id)
        TO {_q(work / 'aggregates_duck.parquet')} (FORMAT parquet)""")
    seconds = time.perf_counter() - start
    users, events = con.execute(f"SELECT count(*), sum(views + carts + purchases) "
                                f"FROM read_parquet({_q(work / 'aggregates_duck.parquet')})").fetchone()
    emit(seconds, users=int(users), events=int(events))


TASKS = {f.__name__: f for f in (ours_canonical, ours_matrix, ours_aggregates, duck_canonical, duck_matrix, duck_aggregates)}
STAGES = ("canonical", "matrix", "aggregates")

if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "task" or sys.argv[2] not in TASKS:
        sys.exit(f"usage: python -m benchmarks.pipeline task {{{'|'.join(TASKS)}}} SHOP_DIR WORK_DIR")
    work = Path(sys.argv[4])
    work.mkdir(parents=True, exist_ok=True)
    TASKS[sys.argv[2]](Path(sys.argv[3]), work)

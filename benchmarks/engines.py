"""One feature pipeline, two engines (issue 12): the product's relational pipeline (features/relational/)
on DuckDB and on Spark local[2], next to the pandas pipeline it replaced and to hand-written DuckDB SQL
doing the same work, on the same files.

Stages, each timed in its own child process (peak RSS of that process from the kernel; Spark's JVM is
a child of it and is not counted, so Spark rows say "JVM not counted"):

  canonical  raw events/orders/items Parquet -> canonical Parquet + rejects + report
             product: features.ingest.ingest(engine=...) (pandas reads and parses, the engine runs the rules)
             floor:   canonical_floor below: DuckDB SQL doing the same parsing, row rules, duplicates, rejects of
                      every table, catalogue check and report (DuckDB's own Parquet writer)
  matrix     canonical Parquet -> users x items CSR (view 1, cart 3, purchase 10)
             product: features.relational.frames.interaction_matrix on tables the engine reads from Parquet
             floor:   benchmarks.pipeline.duck_matrix (GROUP BY + dense ranks, scipy CSR)
  features   canonical Parquet -> every user feature at (last order - 90 days) and the churn label
             product: features.relational.frames.user_features + outcomes on Parquet-backed tables
             floor:   FEATURES_SQL below, the same definitions written by hand (plain SUM/AVG)
             pandas:  features.user_features.user_features + features.labels.churn_labels

    python -m benchmarks.engines run [--shops 1m,large] [--spark-shops 1m] [--repeats 1] [--duckdb-memory 4GB]
    python -m benchmarks.engines run --shops '' --big-shops 50m --duckdb-memory 4GB --merge   (add the 50M run)
    python -m benchmarks.engines task <task> <shop_dir> <work_dir>     (one child)

Results: benchmarks/results/engines.{json,md} with the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.common import emit

DAY_US = 86_400_000_000
DUCKDB_MEMORY_ENV = "SHOPREC_DUCKDB_MEMORY"  # features/relational/engine.py reads it; the hand-written SQL here too
SPARK_DRIVER_MEMORY = "8g"  # local[2]: the driver JVM is all of Spark; its 1g default cannot take 10M events


def _at(canon: Path):
    import duckdb
    import pandas as pd

    last = duckdb.connect().execute(f"SELECT max(ts) FROM read_parquet('{canon / 'orders.parquet'}')").fetchone()[0]
    return pd.Timestamp(last) - pd.Timedelta(days=90)


def _checksum(frame) -> dict:
    """Rows and the sum of each column: what the sides are compared on."""
    import numpy as np

    return {"rows": len(frame), "sums": {c: float(np.nansum(frame[c].to_numpy(dtype="float64"))) for c in frame.columns}}


# ----------------------------------------------------------------------------------- product
def _engine(name: str):
    from features.relational.engine import connect

    return connect(name)


def canonical_product(shop: Path, work: Path, engine: str = "duckdb") -> None:
    from features.ingest import ingest

    out = work / f"canonical_{engine}"
    eng = engine if engine == "pandas" else _engine(engine)
    start = time.perf_counter()
    report = ingest(shop / "orders.parquet", shop / "events.parquet", shop / "items.parquet", out, engine=eng)
    emit(time.perf_counter() - start, tables=report.tables, rejected={f.table: f.rejected for f in report.files})


def matrix_product(shop: Path, work: Path, engine: str = "duckdb") -> None:
    from features.interactions import InteractionConfig
    from features.relational.frames import interaction_matrix

    canon = work / "canonical"
    eng = _engine(engine)
    start = time.perf_counter()
    events, orders = eng.read_parquet(canon / "events.parquet"), eng.read_parquet(canon / "orders.parquet")
    m = interaction_matrix(eng, events, orders, InteractionConfig()).matrix
    emit(time.perf_counter() - start, shape=list(m.shape), nnz=int(m.nnz), sum=float(m.sum(dtype="float64")))


def matrix_pandas(shop: Path, work: Path) -> None:
    from benchmarks.pipeline import ours_matrix

    ours_matrix(shop, work)


def features_product(shop: Path, work: Path, engine: str = "duckdb") -> None:
    from features.relational.frames import outcomes, user_features

    canon = work / "canonical"
    at = _at(canon)
    eng = _engine(engine)
    start = time.perf_counter()
    orders, events, items = (eng.read_parquet(canon / f"{t}.parquet") for t in ("orders", "events", "items"))
    f = user_features(eng, orders, at, events, items)
    churn = 1 - outcomes(eng, orders, f.index, at, 90)["bought"]
    seconds = time.perf_counter() - start
    emit(seconds, **_checksum(f.assign(churn=churn)))


def features_pandas(shop: Path, work: Path) -> None:
    from features.ingest import load_canonical
    from features.labels import churn_labels
    from features.user_features import user_features

    canon = work / "canonical"
    at = _at(canon)
    start = time.perf_counter()
    c = load_canonical(canon)
    f = user_features(c.orders, at, c.events, c.items)
    churn = churn_labels(c.orders, f.index, at, 90)
    emit(time.perf_counter() - start, **_checksum(f.assign(churn=churn)))


# ----------------------------------------------------------------------------------- floor
FEATURES_SQL = """
WITH past AS (SELECT * FROM read_parquet({orders}) WHERE ts <= {at}),
buys AS (SELECT user_id, order_id, item_id, ts, quantity, quantity * price AS value FROM past WHERE quantity > 0),
po AS (SELECT user_id, order_id, {at_us} - epoch_us(min(ts)) AS age, date_trunc('day', min(ts)) AS day,
              count(*)::DOUBLE AS lines, sum(quantity) AS units, sum(value) AS value FROM buys GROUP BY ALL),
f AS (SELECT user_id, min(age) / {day} AS recency_days, count(*)::DOUBLE AS frequency, sum(value) AS monetary,
             max(age) / {day} AS tenure_days, count(DISTINCT day)::DOUBLE AS purchase_days,
             avg(lines) AS basket_lines, avg(units) AS basket_units, avg(value) AS basket_value,
             count(*) FILTER (age < 30 * {day})::DOUBLE AS orders_30d,
             count(*) FILTER (age >= 30 * {day} AND age < 60 * {day})::DOUBLE AS orders_prev_30d,
             count(*) FILTER (age < 90 * {day})::DOUBLE AS orders_90d,
             count(*) FILTER (age >= 90 * {day} AND age < 180 * {day})::DOUBLE AS orders_prev_90d,
             coalesce(sum(value) FILTER (age < 30 * {day}), 0) AS spend_30d,
             coalesce(sum(value) FILTER (age < 90 * {day}), 0) AS spend_90d,
             coalesce(sum(value) FILTER (age >= 90 * {day} AND age < 180 * {day}), 0) AS spend_prev_90d
      FROM po GROUP BY user_id),
per_item AS (SELECT user_id, item_id, count(DISTINCT order_id) AS n FROM buys GROUP BY ALL),
breadth AS (SELECT user_id, count(*)::DOUBLE AS distinct_items, avg(CASE WHEN n > 1 THEN 1.0 ELSE 0.0 END) AS repeat_item_share
            FROM per_item GROUP BY user_id),
ret AS (SELECT user_id, count(*)::DOUBLE AS return_lines, count(DISTINCT order_id)::DOUBLE AS return_orders,
               sum(-quantity * price) AS return_value FROM past WHERE quantity < 0 GROUP BY user_id),
cats AS (SELECT b.user_id, count(DISTINCT i.category)::DOUBLE AS distinct_categories
         FROM buys b LEFT JOIN read_parquet({items}) i USING (item_id) GROUP BY b.user_id),
ev AS (SELECT e.user_id, e.session_id, e.event_type, {at_us} - epoch_us(e.ts) AS age FROM read_parquet({events}) e
       WHERE e.ts <= {at} AND e.user_id IS NOT NULL AND e.user_id IN (SELECT user_id FROM f)),
eu AS (SELECT user_id, count(*) FILTER (event_type = 'view')::DOUBLE AS views,
              count(*) FILTER (event_type = 'view' AND age < 30 * {day})::DOUBLE AS views_30d,
              count(*) FILTER (event_type = 'cart')::DOUBLE AS carts,
              count(*) FILTER (event_type = 'cart' AND age < 30 * {day})::DOUBLE AS carts_30d,
              count(*) FILTER (event_type = 'purchase')::DOUBLE AS bought_events,
              min(age) / {day} AS days_since_visit, max(age) / {day} AS active_days FROM ev GROUP BY user_id),
sess AS (SELECT user_id, session_id, max(age) AS age, bool_or(event_type = 'cart') AS cart,
                bool_or(event_type = 'purchase') AS bought FROM ev GROUP BY ALL),
su AS (SELECT user_id, count(*)::DOUBLE AS sessions, count(*) FILTER (age < 30 * {day})::DOUBLE AS sessions_30d,
              count(*) FILTER (age >= 30 * {day} AND age < 60 * {day})::DOUBLE AS sessions_prev_30d,
              (max(age) - min(age)) / {day} AS span_days, count(*) FILTER (cart) AS carted,
              count(*) FILTER (cart AND bought) AS carted_bought FROM sess GROUP BY user_id),
later AS (SELECT DISTINCT user_id FROM read_parquet({orders}) WHERE quantity > 0 AND ts > {at} AND ts <= {stop}),
g AS (SELECT f.*, CASE WHEN purchase_days > 1 THEN (tenure_days - recency_days) / (purchase_days - 1) END AS mean_gap_days,
             b.distinct_items, b.repeat_item_share, coalesce(r.return_lines, 0) AS return_lines,
             coalesce(r.return_orders, 0) AS return_orders, coalesce(r.return_value, 0) AS return_value,
             c.distinct_categories, coalesce(su.sessions, 0) AS sessions, coalesce(su.sessions_30d, 0) AS sessions_30d,
             coalesce(su.sessions_prev_30d, 0) AS sessions_prev_30d, coalesce(eu.views, 0) AS views,
             coalesce(eu.views_30d, 0) AS views_30d, coalesce(eu.carts, 0) AS carts, coalesce(eu.carts_30d, 0) AS carts_30d,
             coalesce(eu.bought_events, 0) AS bought_events, eu.days_since_visit, eu.active_days, su.span_days,
             su.carted, su.carted_bought, CASE WHEN l.user_id IS NULL THEN 1 ELSE 0 END AS churn
      FROM f LEFT JOIN breadth b USING (user_id) LEFT JOIN ret r USING (user_id) LEFT JOIN cats c USING (user_id)
             LEFT JOIN eu USING (user_id) LEFT JOIN su USING (user_id) LEFT JOIN later l USING (user_id))
SELECT user_id, recency_days, frequency, monetary, tenure_days, purchase_days, mean_gap_days,
       recency_days / CASE WHEN mean_gap_days IS NOT NULL THEN greatest(mean_gap_days, 1.0) END AS gap_ratio,
       orders_30d, orders_prev_30d, orders_90d, orders_prev_90d, spend_30d, spend_90d, spend_prev_90d,
       CASE WHEN orders_prev_30d > 0 THEN (orders_30d - orders_prev_30d) / orders_prev_30d END AS orders_trend_30d,
       CASE WHEN spend_prev_90d > 0 THEN (spend_90d - spend_prev_90d) / spend_prev_90d END AS spend_trend_90d,
       frequency / greatest(tenure_days, 30.0) * 30.0 AS order_rate_30d, basket_lines, basket_units, basket_value,
       distinct_items, repeat_item_share, return_lines, return_orders,
       CASE WHEN monetary > 0 THEN return_value / monetary END AS return_share, distinct_categories,
       sessions, sessions_30d, sessions_prev_30d, views, views_30d, carts, carts_30d, days_since_visit,
       CASE WHEN sessions > 1 THEN span_days / (sessions - 1) END AS mean_visit_gap_days,
       days_since_visit / CASE WHEN sessions > 1 THEN greatest(span_days / (sessions - 1), 1.0) END AS visit_gap_ratio,
       CASE WHEN carted > 0 THEN 1.0 - carted_bought / carted END AS cart_abandonment,
       CASE WHEN views > 0 THEN carts / views END AS view_to_cart,
       CASE WHEN carts > 0 THEN bought_events / carts END AS cart_to_purchase,
       CASE WHEN sessions > 0 THEN sessions_30d / (sessions / greatest(active_days, 30.0) * 30.0) END AS intensity_30d,
       churn
FROM g ORDER BY user_id
"""


def features_floor(shop: Path, work: Path) -> None:
    import pandas as pd

    from benchmarks.pipeline import _duck, _q

    canon = work / "canonical"
    at = _at(canon)
    con = _duck()
    start = time.perf_counter()
    sql = FEATURES_SQL.format(orders=_q(canon / "orders.parquet"), events=_q(canon / "events.parquet"),
                              items=_q(canon / "items.parquet"), at=f"TIMESTAMP '{at}'", day=f"{DAY_US}.0",
                              at_us=int(at.value // 1000), stop=f"TIMESTAMP '{at + pd.Timedelta(days=90)}'")
    f = con.sql(sql).to_arrow_table().to_pandas().set_index("user_id")
    emit(time.perf_counter() - start, **_checksum(f))


# The hand-written canonical stage does the work the product's ingest does on typed Parquet (features/relational/
# parquet.py + validation.py): the contract's parsing (text stripped of Unicode whitespace, "" missing, event
# types lower case, NaN missing, infinities bad), every row rule in the same order with its reason (missing,
# bad, a NUL in an id, unknown event type, zero order quantity, negative price), exact duplicate events and
# duplicate item ids reported "of row N", rejects written for all three tables (nothing dropped silently), the
# catalogue shares items with the orders, a report of the counts; sorted by the same keys. It writes DuckDB's
# own Parquet (the product writes the bytes pandas writes, which the floor need not).
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
FLOOR_TABLES = {  # table: (columns (name, kind, nullable), sort keys)
    "events": ([("ts", "ts", False), ("user_id", "str", True), ("session_id", "str", False), ("event_type", "str", False),
                ("item_id", "str", False), ("price", "float", True), ("quantity", "float", True)], ["ts", "session_id"]),
    "orders": ([("order_id", "str", False), ("user_id", "str", False), ("item_id", "str", False), ("ts", "ts", False),
                ("quantity", "float", False), ("price", "float", False)], ["ts", "order_id", "item_id"]),
    "items": ([("item_id", "str", False), ("category", "str", True), ("price", "float", True), ("title", "str", True),
               ("in_stock", "bool", True)], ["item_id"]),
}
KINDS = r"^(duplicate item_id|duplicate|missing \w+|bad \w+|unknown event_type|quantity is zero|negative price)"


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _parsed(column: str, kind: str, lower: bool = False) -> str:
    """SELECT items parsing one typed column (and its _bad text for floats)."""
    if kind == "str":
        ws = _sql_text(WHITESPACE)
        t = (f"nullif(CASE WHEN contains({ws}, left({column}, 1)) OR contains({ws}, right({column}, 1)) "
             f"THEN trim({column}, {ws}) ELSE {column} END, '')")
        return f"{'lower(' + t + ')' if lower else t} AS {column}"
    if kind == "ts":
        return f"CAST({column} AS TIMESTAMP) AS {column}"
    if kind == "bool":
        return f"coalesce({column}, true) AS {column}"
    x = f"CAST({column} AS DOUBLE)"
    inf = _sql_text("'inf'")
    minus_inf = _sql_text("'-inf'")
    return (f"CASE WHEN isnan({x}) OR isinf({x}) THEN NULL ELSE {x} END AS {column}, "
            f"CASE WHEN isinf({x}) THEN CASE WHEN {x} > 0 THEN {inf} ELSE {minus_inf} END END AS _bad_{column}")


def _rules(table: str, columns: list) -> str:
    """The CASE giving each row its first reason, in the product's order (features/relational/validation.py)."""
    whens = []
    for name, kind, nullable in columns:
        has_bad = kind == "float"
        if not nullable:
            whens.append((f"{name} IS NULL" + (f" AND _bad_{name} IS NULL" if has_bad else ""), _sql_text(f"missing {name}")))
        if has_bad:
            whens.append((f"_bad_{name} IS NOT NULL", f"'bad {name} ' || _bad_{name}"))
        if kind == "str" and name.endswith("_id"):
            whens.append((f"contains({name}, chr(0))", _sql_text(f"bad {name} (contains a NUL character)")))
        if name == "event_type":
            whens.append((f"{name} IS NOT NULL AND {name} NOT IN ('view', 'cart', 'purchase')",
                          f"'unknown event_type ''' || left({name}, 40) || ''' (expected view, cart, purchase)'"))
        elif name == "quantity" and table == "orders":
            whens.append((f"{name} = 0", "'quantity is zero'"))
        elif name == "price":
            whens.append((f"{name} < 0", f"'negative price ' || CAST({name} AS VARCHAR)"))
    return "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in whens) + " END"


def canonical_floor(shop: Path, work: Path) -> None:
    import json

    from benchmarks.pipeline import _duck, _q

    out = work / "canonical_duck"
    out.mkdir(parents=True, exist_ok=True)
    con = _duck()
    start = time.perf_counter()
    counts = {}
    for table, (columns, keys) in FLOOR_TABLES.items():
        names = [c[0] for c in columns]
        source = _q(shop / f"{table}.parquet")
        staged = ("SELECT file_row_number AS _row, " + ", ".join(_parsed(n, k, n == "event_type") for n, k, _ in columns)
                  + f" FROM read_parquet({source}, file_row_number = true)")
        rejected = "SELECT _row, reason FROM j WHERE reason IS NOT NULL"
        if table == "events":  # exact repeats among the open rows: only rows whose time repeats can repeat
            same = " AND ".join(f"c.{n} IS NOT DISTINCT FROM g.{n}" for n in names)
            rejected = f"""open AS (SELECT * FROM j WHERE reason IS NULL),
                cand AS (SELECT * FROM open SEMI JOIN (SELECT ts FROM open GROUP BY ts HAVING count(*) > 1) USING (ts)),
                g AS (SELECT {', '.join(names)}, min(_row) AS first FROM cand GROUP BY ALL HAVING count(*) > 1)
                {rejected} UNION ALL
                SELECT c._row, 'duplicate of row ' || (g.first + 1) FROM cand c JOIN g ON {same} WHERE c._row <> g.first"""
        elif table == "items":
            rejected = f"""open AS (SELECT * FROM j WHERE reason IS NULL),
                g AS (SELECT item_id, min(_row) AS first FROM open GROUP BY item_id HAVING count(*) > 1)
                {rejected} UNION ALL
                SELECT o._row, 'duplicate item_id of row ' || (g.first + 1) FROM open o JOIN g USING (item_id)
                WHERE o._row <> g.first"""
        if not rejected.startswith("SELECT"):
            rejected = ", " + rejected
        else:
            rejected = " " + rejected
        con.execute(f"CREATE TEMP TABLE rejected_{table} AS WITH j AS (SELECT *, {_rules(table, columns)} AS reason "
                    f"FROM ({staged})){rejected}")
        con.execute(f"""COPY (SELECT {', '.join(names)} FROM ({staged}) ANTI JOIN rejected_{table} USING (_row)
                             ORDER BY {', '.join(keys)}, _row)
                        TO {_q(out / (table + '.parquet'))} (FORMAT parquet)""")
        read = con.execute(f"SELECT count(*) FROM read_parquet({source})").fetchone()[0]
        by_reason = dict(con.execute(f"SELECT regexp_extract(reason, {_sql_text(KINDS)}), count(*) FROM rejected_{table} "
                                     "GROUP BY 1").fetchall())
        counts[table] = {"read": read, "rejected": sum(by_reason.values()), "by_reason": by_reason}
    if not con.execute(f"SELECT 1 FROM read_parquet({_q(out / 'orders.parquet')}) "
                       f"SEMI JOIN read_parquet({_q(out / 'items.parquet')}) USING (item_id) LIMIT 1").fetchall():
        raise SystemExit("the catalogue shares no item with the orders")
    con.execute(f"""COPY (SELECT source, _row + 1 AS row, reason FROM (
                        SELECT 'orders.parquet' AS source, * FROM rejected_orders UNION ALL
                        SELECT 'events.parquet', * FROM rejected_events UNION ALL
                        SELECT 'items.parquet', * FROM rejected_items) ORDER BY source, row)
                    TO {_q(out / 'rejects.csv')} (HEADER)""")
    (out / "ingest_report.json").write_text(json.dumps(counts, indent=2) + "\n")
    emit(time.perf_counter() - start, tables={t: c["read"] - c["rejected"] for t, c in counts.items()},
         rejected={t: c["rejected"] for t, c in counts.items()})


def matrix_floor(shop: Path, work: Path) -> None:
    from benchmarks.pipeline import duck_matrix

    duck_matrix(shop, work)


TASKS = {f.__name__: f for f in (canonical_product, canonical_floor, matrix_product, matrix_pandas, matrix_floor,
                                 features_product, features_pandas, features_floor)}


# ----------------------------------------------------------------------------------- run
SIDES = {  # stage -> [(label, task, engine argument or None)]
    "canonical": [("duckdb", "canonical_product", "duckdb"), ("pandas", "canonical_product", "pandas"),
                  ("hand SQL", "canonical_floor", None), ("spark", "canonical_product", "spark")],
    "matrix": [("duckdb", "matrix_product", "duckdb"), ("pandas", "matrix_pandas", None),
               ("hand SQL", "matrix_floor", None), ("spark", "matrix_product", "spark")],
    "features": [("duckdb", "features_product", "duckdb"), ("pandas", "features_pandas", None),
                 ("hand SQL", "features_floor", None), ("spark", "features_product", "spark")],
}


def run(shops: list[str], spark_shops: list[str], repeats: int, timeout: float, big_shops: list[str] = (),
        duckdb_memory: str | None = None, merge: bool = False) -> None:
    """Every side of every stage on ``shops`` (Spark on ``spark_shops``), best of ``repeats``; then the
    DuckDB engine alone, once, on ``big_shops`` (the memory goal). ``duckdb_memory`` caps what DuckDB holds
    before it spills (the product's SHOPREC_DUCKDB_MEMORY; the hand-written SQL gets the same limit). ``merge``:
    add these shops to benchmarks/results/engines.json instead of starting it anew."""
    import shutil

    from benchmarks import shops as shop_data
    from benchmarks.common import DATA, RESULTS, machine, run_child, write_results

    command = " ".join(sys.argv)
    results = {"machine": machine(), "shops": {}, "commands": [command]}
    previous = RESULTS / "engines.json"
    if merge and previous.exists():  # a later run adds its shops to the earlier run's (each under the bench lock)
        import json

        results = json.loads(previous.read_text())
        results["commands"] = results.get("commands", [results.get("command")]) + [command]
    for shop in [*shops, *big_shops]:
        big = shop in big_shops
        path = shop_data.ensure(shop)
        work = DATA / "work" / f"engines-{shop}"
        work.mkdir(parents=True, exist_ok=True)
        res = results["shops"][shop] = {"shop": shop_data.info(shop), "stages": {}, "once": big, "command": command,
                                        "duckdb_memory": duckdb_memory, "load_before": _load()}
        for stage, sides in SIDES.items():
            row = res["stages"][stage] = {}
            for label, task, arg in sides:
                if (label == "spark" and shop not in spark_shops) or (big and label != "duckdb"):
                    continue
                runs = []
                for _ in range(1 if big else repeats):
                    args = ["benchmarks.engines", "task", task, str(path), str(work)] + ([arg] if arg else [])
                    env = {"SHOPREC_SPARK_DRIVER_MEMORY": SPARK_DRIVER_MEMORY} if label == "spark" else {}
                    if duckdb_memory:
                        env[DUCKDB_MEMORY_ENV] = duckdb_memory
                    r = run_child(args, timeout=timeout, max_rss_gb=20, env=env or None)
                    print(f"[{time.strftime('%H:%M:%S')}] {shop} {stage} {label}: "
                          + (f"{r.seconds:.1f} s, {r.peak_rss_gb:.2f} GB" if r.ok else f"FAILED {r.error}"), flush=True)
                    runs.append(r)
                ok = [r for r in runs if r.ok]
                row[label] = {"seconds": min((r.seconds for r in ok), default=None),
                              "peak_rss_gb": round(max((r.peak_rss_gb for r in runs), default=0), 3),
                              "failures": [r.error for r in runs if not r.ok],
                              "payload": ok[0].payload if ok else {}}
            if stage == "canonical":  # the later stages read the DuckDB engine's canonical tables
                canon = work / "canonical"
                shutil.rmtree(canon, ignore_errors=True)
                shutil.copytree(work / "canonical_duckdb", canon)
        res["checks"] = _checks(res["stages"]) if not big else "one side only: nothing to compare"
        res["load_after"] = _load()
    write_results("engines", results, markdown(results))


def _load() -> str:
    """The machine's load averages (1, 5, 15 min): other work on the shared cores."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _checks(stages: dict) -> dict:
    """The sides did the same work: canonical row counts, matrix shape/nnz/sum, feature sums (1e-6)."""
    out = {}
    c = {k: v["payload"].get("tables") for k, v in stages["canonical"].items() if v["payload"]}
    out["canonical_rows_equal"] = len({str(sorted(t.items())) for t in c.values() if t}) == 1
    m = stages["matrix"]
    out["matrix_equal"] = len({(tuple(v["payload"]["shape"]), v["payload"]["nnz"], round(v["payload"]["sum"], 3))
                               for v in m.values() if v["payload"]}) == 1
    f = {k: v["payload"] for k, v in stages["features"].items() if v["payload"]}
    ref = f.get("pandas")
    if not ref:  # a shop measured on the DuckDB engine alone: nothing to compare with
        return out | {"features_equal": None}
    out["features_equal"] = bool(ref) and all(
        p["rows"] == ref["rows"] and all(abs(p["sums"][c] - s) <= 1e-6 * max(1.0, abs(s)) for c, s in ref["sums"].items())
        for p in f.values())
    return out


def markdown(results: dict) -> str:
    from benchmarks.common import machine_markdown

    commands = results.get("commands", [results.get("command")])
    lines = ["# One feature pipeline, two engines (issue 12)", "", *[f"`{c}`" for c in commands], "",
             machine_markdown(results["machine"]), "",
             "Seconds of work (best of the repeats) and the child's peak RSS; ratio = DuckDB engine / hand-written "
             f"DuckDB SQL. Spark's JVM memory is not in its RSS (driver memory {SPARK_DRIVER_MEMORY}). The DuckDB memory "
             "limit (SHOPREC_DUCKDB_MEMORY) applies to the DuckDB engine and to the hand-written SQL alike; load "
             "averages (1, 5, 15 min) of the shared 2-core machine before and after each shop.", ""]
    for shop, res in results["shops"].items():
        info = res["shop"]
        once = " (the DuckDB engine alone, once: the memory goal)" if res.get("once") else ""
        lines += [f"## {shop}: {info.get('events', 0):,} events, {info.get('orders', 0):,} order lines{once}", "",
                  f"DuckDB memory limit: {res.get('duckdb_memory') or 'DuckDB default (80% of RAM)'}; load "
                  f"{res.get('load_before')} before, {res.get('load_after')} after.", "",
                  "| stage | DuckDB engine | pandas | hand-written DuckDB SQL | Spark local[2] | DuckDB / SQL |",
                  "|---|---|---|---|---|---|"]
        totals = {}
        for stage, row in res["stages"].items():
            cells = []
            for label in ("duckdb", "pandas", "hand SQL", "spark"):
                v = row.get(label)
                if v is None:
                    cells.append("not run")
                elif v["seconds"] is None:
                    cells.append("failed: " + (v["failures"][0][:80] if v["failures"] else "?"))
                else:
                    totals.setdefault(label, 0.0)
                    totals[label] += v["seconds"]
                    cells.append(f"{v['seconds']:.1f} s, {v['peak_rss_gb']:.2f} GB")
            d, s = row.get("duckdb", {}).get("seconds"), row.get("hand SQL", {}).get("seconds")
            lines.append(f"| {stage} | " + " | ".join(cells) + f" | {d / s:.2f} |" if d and s else
                         f"| {stage} | " + " | ".join(cells) + " | |")
        if totals.get("duckdb") and not totals.get("hand SQL"):
            lines.append(f"| **total** | **{totals['duckdb']:.1f} s** | | | | |")
        if totals.get("duckdb") and totals.get("hand SQL"):
            lines.append(f"| **total** | **{totals['duckdb']:.1f} s** | {totals.get('pandas', 0):.1f} s | "
                         f"{totals['hand SQL']:.1f} s | {totals.get('spark', 0):.1f} s | "
                         f"**{totals['duckdb'] / totals['hand SQL']:.2f}** |")
        lines += ["", f"checks: {res['checks']}", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "task" and sys.argv[2] in TASKS:
        work = Path(sys.argv[4])
        work.mkdir(parents=True, exist_ok=True)
        TASKS[sys.argv[2]](Path(sys.argv[3]), work, *sys.argv[5:])
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["run"])
    p.add_argument("--shops", default="1m")
    p.add_argument("--spark-shops", default="1m")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--big-shops", default="", help="shops measured once on the DuckDB engine alone (e.g. 50m)")
    p.add_argument("--duckdb-memory", default=None, help="DuckDB memory limit for every DuckDB child (e.g. 4GB)")
    p.add_argument("--merge", action="store_true", help="add the shops to the existing results instead of replacing them")
    a = p.parse_args()
    run([s for s in a.shops.split(",") if s], [s for s in a.spark_shops.split(",") if s], a.repeats, a.timeout,
        [s for s in a.big_shops.split(",") if s], a.duckdb_memory, a.merge)

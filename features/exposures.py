"""Experiments, exposures and outcomes, kept in the event store that every replica shares.

- experiments: the definitions (features/experiments.py), one JSON document per name;
- exposures: what a shopper was shown under an experiment (request id, experiment, variant, unit,
  user, endpoint, items, time); written by the service through ``ExposureWriter`` (a queue and one
  thread that commits batches, so that a request never waits for a disk flush);
- outcomes: what came back through ``/events`` (request id when the storefront sent it, user,
  event type, item, value, time): every purchase, and views and cart adds that carry a request id.

SQLite (tables beside the events, WAL, its own connections: synchronous=FULL for experiments and
outcomes, NORMAL for exposures, whose commits survive a crash of the process but not of the machine) or
Redis (a hash, and one stream for exposures of each experiment and one for outcomes). Both have the
same methods and pass the same tests.
"""
from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.event_store import store_location
from features.experiments import Experiment, ExperimentError

log = logging.getLogger("shoprec.experiments")

EXPOSURE_COLUMNS = ["request_id", "experiment", "variant", "unit_id", "user_id", "endpoint", "items", "ts"]
OUTCOME_COLUMNS = ["request_id", "user_id", "event_type", "item_id", "value", "ts"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL,
    unit_id TEXT NOT NULL, user_id TEXT NOT NULL, endpoint TEXT NOT NULL, items TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS exposures_experiment ON exposures (experiment, ts);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, user_id TEXT NOT NULL, event_type TEXT NOT NULL,
    item_id TEXT NOT NULL, value REAL NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_ts ON outcomes (ts);
CREATE TABLE IF NOT EXISTS log_deletions (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Exposure:
    request_id: str
    experiment: str
    variant: str
    unit_id: str  # user id, or session id for an anonymous shopper
    user_id: str  # "" for an anonymous shopper
    endpoint: str
    items: tuple[str, ...]
    ts: float  # epoch seconds


@dataclass(frozen=True)
class Outcome:
    request_id: str | None
    user_id: str
    event_type: str  # view (a click on a shown item), cart, purchase
    item_id: str
    value: float  # price x quantity for a purchase, else 0
    ts: float


class SQLiteExperimentLog:
    """Tables in the event store's SQLite file; safe for threads and for several processes (WAL)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        # Exposures have their own connection with synchronous=NORMAL: under WAL a commit is in the log file
        # when it returns (it survives the process being killed) and is fsynced at the next checkpoint, so
        # only a crash of the machine (power, kernel) can lose the last commits. The writer commits every
        # 20 ms: FULL was an fsync each time (~50 a second under traffic).
        # Experiments and outcomes keep FULL on the connection above (an outcome is committed before /events
        # answers).
        self._exposure_lock = threading.Lock()
        self._exposure_db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._exposure_db.execute("PRAGMA synchronous=NORMAL")

    def _write(self, sql: str, rows: list[tuple], exposures: bool = False) -> None:
        db = self._exposure_db if exposures else self._db
        with self._exposure_lock if exposures else self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- experiments ---------------------------------------------------------------------------------
    def put_experiment(self, exp: Experiment, new: bool = False) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if new and self._db.execute("SELECT 1 FROM experiments WHERE name = ?", (exp.name,)).fetchone():
                    raise ExperimentError(f"experiment {exp.name!r} exists already (names are never reused: its "
                                          "exposures stay in the store)")
                self._db.execute("INSERT OR REPLACE INTO experiments VALUES (?,?,?)",
                                 (exp.name, exp.model_dump_json(), time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def experiments(self) -> list[Experiment]:
        return [Experiment.model_validate_json(d) for (d,) in self._query("SELECT definition FROM experiments ORDER BY name")]

    # -- exposures and outcomes ----------------------------------------------------------------------
    def add_exposures(self, rows: list[Exposure]) -> None:
        self._write("INSERT INTO exposures (request_id, experiment, variant, unit_id, user_id, endpoint, items, ts) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    [(e.request_id, e.experiment, e.variant, e.unit_id, e.user_id, e.endpoint, json.dumps(e.items),
                      e.ts) for e in rows], exposures=True)

    def add_outcomes(self, rows: list[Outcome]) -> None:
        self._write("INSERT INTO outcomes (request_id, user_id, event_type, item_id, value, ts) VALUES (?,?,?,?,?,?)",
                    [(o.request_id, o.user_id, o.event_type, o.item_id, o.value, o.ts) for o in rows])

    def exposures(self, experiment: str, columns: list[str] = EXPOSURE_COLUMNS) -> pd.DataFrame:
        """The experiment's exposures in the order logged; ``columns``: only those (a report reads neither the
        shown items nor the endpoint: most of the bytes)."""
        return self.exposures_after(experiment, None, columns)[0]

    def outcomes(self, since: float = float("-inf"), until: float = float("inf"),
                 columns: list[str] = OUTCOME_COLUMNS) -> pd.DataFrame:
        with self._lock:
            return pd.read_sql_query(f"SELECT {', '.join(_known(columns, OUTCOME_COLUMNS))} FROM outcomes "
                                     "WHERE ts >= ? AND ts <= ? ORDER BY id", self._db,
                                     params=(max(since, -1e18), min(until, 1e18)))

    def exposures_after(self, experiment: str, position: int | None, columns: list[str]) -> tuple[pd.DataFrame, int]:
        """The experiment's exposures logged after ``position`` (None: from the first), in the order logged, and
        the position to read from next time."""
        return self._after("exposures", "experiment = ?", (experiment,), position, _known(columns, EXPOSURE_COLUMNS))

    def outcomes_after(self, position: int | None, since: float, columns: list[str]) -> tuple[pd.DataFrame, int]:
        """The outcomes at or after ``since`` logged after ``position``, in the order logged, and the next position."""
        return self._after("outcomes", "ts >= ?", (max(since, -1e18),), position, _known(columns, OUTCOME_COLUMNS))

    def _after(self, table: str, where: str, args: tuple, position: int | None, columns: list[str]):
        if position:  # the new rows by their ids (a range of the table), not by the index on ``where``'s column
            where = "+" + where
        with self._lock:  # one read transaction: the rows and the position are of the same moment
            self._db.execute("BEGIN")
            try:
                last = self._db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
                rows = pd.read_sql_query(f"SELECT {', '.join(columns)} FROM {table} WHERE id > ? AND id <= ? AND {where} "
                                         "ORDER BY id", self._db, params=(position or 0, last, *args))
            finally:
                self._db.execute("COMMIT")
        return rows, max(last, position or 0)

    def deletions(self) -> int:
        """How many times rows were deleted (``forget``): rows read before stay right while this stays the same."""
        found = self._query("SELECT n FROM log_deletions WHERE id = 0")
        return found[0][0] if found else 0

    def rows_read_by(self, experiment: str, before_s: float, until: float) -> tuple:
        """What a report of ``experiment`` reads, in brief: its exposures and the outcomes from ``before_s``
        before its first exposure to ``until`` (count, newest id, first time); equal tuples, equal rows, as
        long as rows are only added and deleted (a cached report stays right: serving/experiments_page.py)."""
        exposed = self._query("SELECT COUNT(*), MAX(id), MIN(ts) FROM exposures WHERE experiment = ?", (experiment,))[0]
        if exposed[0] == 0:
            return exposed
        return exposed + self._query("SELECT COUNT(*), MAX(id) FROM outcomes WHERE ts >= ? AND ts <= ?",
                                     (exposed[2] - before_s, until))[0]

    def purchase_counts(self, since: float) -> dict[str, int]:
        """Distinct buyers per item since ``since`` (the trending policy)."""
        rows = self._query("SELECT item_id, COUNT(DISTINCT user_id) FROM outcomes WHERE event_type = 'purchase' "
                           "AND ts > ? GROUP BY item_id", (since,))
        return {item: n for item, n in rows}

    def forget(self, user_id: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute("DELETE FROM exposures WHERE user_id = ?", (user_id,)).rowcount
                n += self._db.execute("DELETE FROM outcomes WHERE user_id = ?", (user_id,)).rowcount
                if n:
                    self._db.execute("INSERT INTO log_deletions VALUES (0, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return n

    def close(self) -> None:
        with self._exposure_lock:
            self._exposure_db.close()
        with self._lock:
            self._db.close()


class RedisExperimentLog:
    """``<prefix>:experiments`` (hash), ``<prefix>:exposures:<name>`` and ``<prefix>:outcomes`` (streams)."""

    def __init__(self, url: str, prefix: str = "shoprec:exp"):
        import redis

        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)
        self._redis.ping()

    def put_experiment(self, exp: Experiment, new: bool = False) -> None:
        key = f"{self.prefix}:experiments"
        if new:
            if not self._redis.hsetnx(key, exp.name, exp.model_dump_json()):
                raise ExperimentError(f"experiment {exp.name!r} exists already (names are never reused: its "
                                      "exposures stay in the store)")
            return
        self._redis.hset(key, exp.name, exp.model_dump_json())

    def experiments(self) -> list[Experiment]:
        found = self._redis.hgetall(f"{self.prefix}:experiments")
        return [Experiment.model_validate_json(found[name]) for name in sorted(found)]

    def add_exposures(self, rows: list[Exposure]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for e in rows:
            pipe.xadd(f"{self.prefix}:exposures:{e.experiment}",
                      {"request_id": e.request_id, "variant": e.variant, "unit_id": e.unit_id, "user_id": e.user_id,
                       "endpoint": e.endpoint, "items": json.dumps(e.items), "ts": repr(e.ts)})
        pipe.execute()

    def add_outcomes(self, rows: list[Outcome]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for o in rows:
            pipe.xadd(f"{self.prefix}:outcomes", {"request_id": o.request_id or "", "user_id": o.user_id,
                                                  "event_type": o.event_type, "item_id": o.item_id,
                                                  "value": repr(o.value), "ts": repr(o.ts)})
        pipe.execute()

    def _stream(self, key: str, after: str | None = None) -> tuple[list[dict], str | None]:
        """The entries after the id ``after`` (None: all), and the last id read (``after`` when none)."""
        out, start = [], "-" if after is None else "(" + after
        while True:
            batch = self._redis.xrange(key, min=start, count=10_000)
            out.extend(fields for _, fields in batch)
            if batch:
                after = batch[-1][0]
            if len(batch) < 10_000:
                return out, after
            start = "(" + after

    def exposures(self, experiment: str, columns: list[str] = EXPOSURE_COLUMNS) -> pd.DataFrame:
        return self.exposures_after(experiment, None, columns)[0]

    def exposures_after(self, experiment: str, position: str | None, columns: list[str]) -> tuple[pd.DataFrame, str | None]:
        """As SQLite's; a position is a stream id."""
        entries, position = self._stream(f"{self.prefix}:exposures:{experiment}", position)
        df = pd.DataFrame([dict(r, experiment=experiment) for r in entries], columns=EXPOSURE_COLUMNS)
        df["ts"] = df["ts"].astype(float)
        return df[_known(columns, EXPOSURE_COLUMNS)], position

    def outcomes(self, since: float = float("-inf"), until: float = float("inf"),
                 columns: list[str] = OUTCOME_COLUMNS) -> pd.DataFrame:
        df = self.outcomes_after(None, since, columns + ["ts"])[0]
        return df.loc[df["ts"] <= until, _known(columns, OUTCOME_COLUMNS)].reset_index(drop=True)

    def outcomes_after(self, position: str | None, since: float, columns: list[str]) -> tuple[pd.DataFrame, str | None]:
        entries, position = self._stream(f"{self.prefix}:outcomes", position)
        df = pd.DataFrame(entries, columns=OUTCOME_COLUMNS)
        df["ts"], df["value"] = df["ts"].astype(float), df["value"].astype(float)
        df["request_id"] = df["request_id"].where(df["request_id"] != "", None)
        return df.loc[df["ts"] >= since, _known(columns, OUTCOME_COLUMNS)].reset_index(drop=True), position

    def deletions(self) -> int:
        """As SQLite's: a counter that ``forget`` moves."""
        return int(self._redis.get(f"{self.prefix}:deletions") or 0)

    def rows_read_by(self, experiment: str, before_s: float, until: float) -> tuple:
        """As SQLite's, coarser: the streams' lengths and newest ids (a stream is not indexed by time, so any
        new outcome counts as a change)."""
        keys = (f"{self.prefix}:exposures:{experiment}", f"{self.prefix}:outcomes")
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.xlen(key)
            pipe.xrevrange(key, count=1)
        length_e, last_e, length_o, last_o = pipe.execute()
        return length_e, [i for i, _ in last_e], length_o, [i for i, _ in last_o]

    def purchase_counts(self, since: float) -> dict[str, int]:
        """Read from the stream's entries added since ``since`` (stream ids are insertion times), not the whole log."""
        buyers: dict[str, set] = {}
        start = f"{max(int(since * 1000), 0)}-0"
        while True:
            batch = self._redis.xrange(f"{self.prefix}:outcomes", min=start, count=10_000)
            for _, f in batch:
                if f["event_type"] == "purchase" and float(f["ts"]) > since:
                    buyers.setdefault(f["item_id"], set()).add(f["user_id"])
            if len(batch) < 10_000:
                return {item: len(users) for item, users in buyers.items()}
            start = "(" + batch[-1][0]

    def forget(self, user_id: str) -> int:
        n = 0
        keys = [f"{self.prefix}:outcomes", *self._redis.scan_iter(match=f"{self.prefix}:exposures:*")]
        for key in keys:
            ids = [i for i, f in self._redis.xrange(key) if f.get("user_id") == user_id]
            if ids:
                n += self._redis.xdel(key, *ids)
        if n:
            self._redis.incr(f"{self.prefix}:deletions")
        return n

    def close(self) -> None:
        self._redis.close()


class ReportRows:
    """What a report reads of one experiment, kept between reads: its exposures, and the outcomes from
    ``before_s`` before its first exposure on. Each read asks the log only for the rows logged since the last
    one (a running experiment's report is built on every load of the marketers' page: reading 600k exposures
    and 400k outcomes took ~3 s of it); a deletion in the log (a forgotten shopper) makes the next read read
    everything again. The frames equal what ``exposures`` and ``outcomes`` read whole, row for row."""

    def __init__(self, experiment: str, before_s: float, exposure_columns: list[str], outcome_columns: list[str]):
        self.experiment, self.before_s = experiment, before_s
        self.columns = (exposure_columns, outcome_columns)
        self._log = self._deletions = None
        self._exposures = self._outcomes = self._since = None
        self._at = (None, None)  # positions in the exposures and the outcomes
        self._lock = threading.Lock()

    def read(self, log_store) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(exposures, outcomes) as the log holds them now."""
        with self._lock:
            deletions = log_store.deletions()  # before the rows: a deletion after it is seen next time
            if log_store is not self._log or deletions != self._deletions:
                self._log, self._deletions = log_store, deletions
                self._exposures, self._outcomes, self._since, self._at = None, None, None, (None, None)
            new, ex_at = log_store.exposures_after(self.experiment, self._at[0], self.columns[0])
            self._exposures = _appended(self._exposures, new)
            if self._exposures.empty:  # no start yet: the outcomes before the report's own time
                self._at = (ex_at, None)
                return self._exposures, log_store.outcomes(since=time.time() - self.before_s, columns=self.columns[1])
            since = float(self._exposures["ts"].min()) - self.before_s
            out_at = self._at[1] if since == self._since else None
            if out_at is None:
                self._outcomes = None
            new, out_at = log_store.outcomes_after(out_at, since, self.columns[1])
            self._outcomes, self._since, self._at = _appended(self._outcomes, new), since, (ex_at, out_at)
            return self._exposures, self._outcomes


def _appended(kept: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    if kept is None or kept.empty:
        return new
    return pd.concat([kept, new], ignore_index=True).infer_objects() if len(new) else kept  # dtypes as if read at once


def _known(columns: list[str], known: list[str]) -> list[str]:
    """``columns`` in the log's order, after checking each is one of ``known`` (they name SQL columns)."""
    if unknown := sorted(set(columns) - set(known)):
        raise ValueError(f"no such column in the experiment log: {unknown} (known: {known})")
    return [c for c in known if c in columns]


def open_experiment_log(url: str):
    """The experiment log of the event store at ``url`` (``sqlite:///PATH`` or ``redis://...``)."""
    kind, where = store_location(url)
    return SQLiteExperimentLog(where) if kind == "sqlite" else RedisExperimentLog(where)


def forget_in_experiments(event_store, user_id: str) -> int:
    """Delete a forgotten shopper's exposures and outcomes from the experiment log beside ``event_store``
    (features/event_store.py; called by features/privacy.py ``forget_user``); returns the rows removed."""
    from features.event_store import RedisEventStore, SQLiteEventStore

    if isinstance(event_store, SQLiteEventStore):
        log_store = SQLiteExperimentLog(event_store.path)
    elif isinstance(event_store, RedisEventStore):
        log_store = RedisExperimentLog.__new__(RedisExperimentLog)
        log_store.prefix = "shoprec:exp"
        import redis

        kwargs = dict(event_store._redis.connection_pool.connection_kwargs, decode_responses=True)
        log_store._redis = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=event_store._redis.connection_pool.connection_class, **kwargs))
    else:
        return 0
    try:
        return log_store.forget(user_id)
    finally:
        log_store.close()


class ExposureWriter:
    """Exposures queued by requests, committed in batches by one thread: the first exposure after a quiet
    spell wakes it (idle, it costs nothing), it waits ``every_s`` and drains the queue. An exposure is
    stored at most ``every_s`` after the answer, plus the commit; it is lost only if the process dies within
    that time, or, on SQLite, if the machine crashes before the next checkpoint fsyncs the log
    (synchronous=NORMAL). A request only appends to the queue, so no request hands the interpreter to the
    writer thread (waking it per exposure cost ~13% of a busy worker). ``flush`` waits until everything
    queued so far is committed."""

    def __init__(self, log_store, every_s: float = 0.02, batch: int = 500):
        self.store = log_store
        self.every_s, self.batch = every_s, batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="shoprec-exposures", daemon=True)
        self._thread.start()

    def put(self, exposure: Exposure) -> None:
        self._queue.put(exposure)

    def flush(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        """Commit what is queued and stop the thread; safe to call twice (the service also calls it at exit)."""
        if not self._thread.is_alive():
            return
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()  # idle: blocked here, no wake-ups while no experiment is running
            if isinstance(first, Exposure):
                time.sleep(self.every_s)  # the exposures of the next every_s join this commit without waking us
            rows, signals = [], []
            item = first
            while not stop:
                if isinstance(item, Exposure):
                    rows.append(item)
                elif isinstance(item, threading.Event):
                    signals.append(item)
                elif item is None:
                    stop = True
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            for start in range(0, len(rows), self.batch):
                try:
                    self.store.add_exposures(rows[start : start + self.batch])
                except Exception:  # the answers went out; say how many exposures were lost
                    log.exception("could not store %d exposures", len(rows[start : start + self.batch]))
            for s in signals:
                s.set()

"""Durable stores of real-time shopper events (views, cart adds, purchases).

An event is acknowledged only after it is committed: SQLite in WAL mode with
``synchronous=FULL`` (embedded default, one service process), or Redis (several service
replicas; run it with ``appendonly yes`` and ``appendfsync always`` so that an
acknowledged write survives a restart). The next ``recommend`` folds the shopper's
events in; ``export`` hands them to the next training as a contract events table.
Both stores have the same methods and pass the same tests.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL CHECK (event_type IN ('view', 'cart', 'purchase')),
    ts TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, received_at);
"""


@dataclass(frozen=True)
class Event:
    item_id: str
    event_type: str
    ts: str  # ISO 8601, as sent (or the time received)
    session_id: str = ""


class SQLiteEventStore:
    """One SQLite file; safe for the threads of one service process. Reads have their own
    connection: in WAL mode they see the last commit and never wait for a writer's fsync."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)

    def append(self, user_id: str, events: list[Event]) -> int:
        """Store the events durably; returns how many were stored."""
        now = time.time()
        rows = [(user_id, e.session_id, e.item_id, e.event_type, e.ts, now) for e in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (user_id, session_id, item_id, event_type, ts, received_at) VALUES (?,?,?,?,?,?)",
                    rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def recent(self, user_id: str, since: float = 0.0, limit: int = 500) -> list[tuple[str, str]]:
        """The shopper's (item_id, event_type) received after ``since`` (epoch seconds), oldest first."""
        with self._read_lock:
            cur = self._reader.execute(
                "SELECT item_id, event_type FROM (SELECT id, item_id, event_type FROM events WHERE user_id = ? "
                "AND received_at > ? ORDER BY id DESC LIMIT ?) ORDER BY id", (user_id, since, limit))
            return [(r[0], r[1]) for r in cur.fetchall()]

    def forget(self, user_id: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount

    def export(self) -> pd.DataFrame:
        """All stored events as a contract events table (for the next training)."""
        with self._lock:
            df = pd.read_sql_query("SELECT ts, user_id, session_id, event_type, item_id FROM events ORDER BY id", self._db)
        df["session_id"] = df["session_id"].where(df["session_id"] != "", "rt-" + df["user_id"])
        return df

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()


class RedisEventStore:
    """One Redis list per shopper (``<prefix>:<user_id>``), JSON entries, oldest first."""

    def __init__(self, url: str, prefix: str = "shoprec:events"):
        import redis

        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._redis.ping()

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:{user_id}"

    def append(self, user_id: str, events: list[Event]) -> int:
        now = time.time()
        entries = [json.dumps({"item_id": e.item_id, "event_type": e.event_type, "ts": e.ts,
                               "session_id": e.session_id, "received_at": now}) for e in events]
        self._redis.rpush(self._key(user_id), *entries)
        return len(entries)

    def recent(self, user_id: str, since: float = 0.0, limit: int = 500) -> list[tuple[str, str]]:
        entries = [json.loads(x) for x in self._redis.lrange(self._key(user_id), -limit, -1)]
        return [(e["item_id"], e["event_type"]) for e in entries if e["received_at"] > since]

    def forget(self, user_id: str) -> int:
        pipe = self._redis.pipeline()  # MULTI/EXEC: count and delete atomically
        pipe.llen(self._key(user_id))
        pipe.delete(self._key(user_id))
        count, _ = pipe.execute()
        return int(count)

    def export(self) -> pd.DataFrame:
        rows = []
        for key in sorted(self._redis.scan_iter(match=f"{self.prefix}:*")):
            user_id = key.decode()[len(self.prefix) + 1 :]
            for raw in self._redis.lrange(key, 0, -1):
                e = json.loads(raw)
                rows.append({"ts": e["ts"], "user_id": user_id, "session_id": e["session_id"] or f"rt-{user_id}",
                             "event_type": e["event_type"], "item_id": e["item_id"]})
        return pd.DataFrame(rows, columns=["ts", "user_id", "session_id", "event_type", "item_id"])

    def close(self) -> None:
        self._redis.close()


def store_location(url: str) -> tuple[str, Path | str]:
    """Where the event store URL points (the events and the experiment log beside them read it alike):
    ``("sqlite", database file)`` for ``sqlite:///PATH``, ``("redis", url)`` for ``redis://``, ``rediss://``
    or ``unix://``; anything else is a ValueError naming the URL."""
    if url.startswith("sqlite:///"):
        return "sqlite", Path(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis", url
    raise ValueError(f"event store URL {url!r}: expected sqlite:///PATH or redis://HOST:PORT/DB")


def open_event_store(url: str):
    """``sqlite:///path/to/events.db`` (the embedded default) or ``redis://host:port/db``."""
    kind, where = store_location(url)
    return SQLiteEventStore(where) if kind == "sqlite" else RedisEventStore(where)

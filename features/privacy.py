"""Forgetting a shopper (GDPR art. 17, PIPL art. 47) and pseudonymous ids for logs.

A shopper appears here only as a keyed hash of their id (HMAC-SHA256): logs carry
``Pseudonymizer.short(id)`` and the forgotten-users list stores full digests, so the list
itself names nobody. The key comes from ``SHOPREC_PSEUDO_KEY`` or from a key file generated
once in the privacy folder (``SHOPREC_PRIVACY_DIR``, default ``data/privacy``). The list
records the key's fingerprint: a changed key is an error, never a list that silently
matches no one.

Forgetting (``forget_user``) adds the shopper to the list first (from then on ingest rejects
their rows as "forgotten user" and the service treats them as anonymous), then removes them
from the canonical tables (each rewritten atomically) and from the real-time event store.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from features.validate import FORGOTTEN  # the reject reason of their rows

KEY_ENV, DIR_ENV = "SHOPREC_PSEUDO_KEY", "SHOPREC_PRIVACY_DIR"
DEFAULT_DIR = Path("data/privacy")
KEY_FILE, LIST_FILE, LOCK_FILE = "pseudonym.key", "forgotten.txt", ".forgotten.lock"
REDACTED = "{}"  # the reject record of a forgotten shopper's row: nothing of it is kept
USER_TABLES = ("events", "orders")  # canonical tables with a user_id column
_MEMO_LIMIT = 2_000_000


class PrivacyError(RuntimeError):
    """The forgotten list cannot be honoured (no key, or a key that does not match the list)."""


def privacy_dir(environ=os.environ) -> Path:
    return Path(environ.get(DIR_ENV) or DEFAULT_DIR)


class Pseudonymizer:
    """Keyed hashes of shopper ids: ``digest`` (64 hex) for the list, ``short`` for logs."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise PrivacyError("the pseudonymisation key must be at least 16 bytes")
        self._key = key
        self.fingerprint = hashlib.sha256(b"shoprec-pseudonym-key:" + key).hexdigest()[:16]

    def digest(self, user_id: str) -> str:
        return hmac.new(self._key, str(user_id).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def short(self, user_id: str) -> str:
        """The form logs carry: ``ps_`` and 16 hex digits of the keyed hash."""
        return "ps_" + self.digest(user_id)[:16]


def load_key(directory: Path, environ=os.environ, create: bool = False) -> bytes | None:
    """The key from ``SHOPREC_PSEUDO_KEY``, else from the key file; with ``create``, a new random
    key file (mode 0600) when there is none. Creation is atomic: concurrent creators agree."""
    if environ.get(KEY_ENV):
        return environ[KEY_ENV].strip().encode("utf-8")
    path = Path(directory) / KEY_FILE
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise PrivacyError(f"{path} is empty: restore the key (the forgotten list needs the same key)")
    return bytes.fromhex(key)


class ForgetList:
    """The forgotten shoppers as keyed digests, one per line in ``forgotten.txt`` after a
    ``# key <fingerprint>`` header. Safe to share between threads and processes (an flock
    guards each change; each change rewrites the file atomically)."""

    def __init__(self, directory: Path, pseudonymizer: Pseudonymizer | None, digests: Iterable[str] = (),
                 environ=os.environ):
        self.directory = Path(directory)
        self.pseudonymizer = pseudonymizer
        self._environ = environ
        self._digests = frozenset(digests)
        self._memo: dict[str, bool] = {}
        self._stamp = self._file_stamp()

    @classmethod
    def open(cls, directory: Path | None = None, environ=os.environ, create_key: bool = False) -> "ForgetList":
        """The list in ``directory`` (default: the privacy folder); empty when there is none.
        Raises ``PrivacyError`` when a list exists but its key is missing or different."""
        directory = Path(directory) if directory is not None else privacy_dir(environ)
        key = load_key(directory, environ, create=create_key)
        pseudonymizer = Pseudonymizer(key) if key is not None else None
        digests = _read_list(directory / LIST_FILE, pseudonymizer)
        return cls(directory, pseudonymizer, digests, environ)

    @property
    def path(self) -> Path:
        return self.directory / LIST_FILE

    def __len__(self) -> int:
        return len(self._digests)

    def contains(self, user_id: str) -> bool:
        return bool(self._digests) and self.pseudonymizer.digest(user_id) in self._digests

    def mask(self, ids) -> np.ndarray:
        """Boolean array: which of ``ids`` (missing values never) are forgotten. Each distinct id
        is hashed once; answers are memoised, so the same table again costs only lookups."""
        values = pd.Series(ids, dtype="string")
        if not self._digests:
            return np.zeros(len(values), dtype=bool)
        if len(self._memo) > _MEMO_LIMIT:
            self._memo = {}
        memo, digests, digest = self._memo, self._digests, self.pseudonymizer.digest
        hit = []
        for value in values.dropna().unique():
            found = memo.get(value)
            if found is None:
                found = memo[value] = digest(value) in digests
            if found:
                hit.append(value)
        return values.isin(hit).fillna(False).to_numpy(dtype=bool) if hit else np.zeros(len(values), dtype=bool)

    def add(self, user_id: str) -> str:
        """Add a shopper (idempotent); returns their digest. Other processes' additions are kept."""
        self.ensure_key()
        with self.locked():
            return self._add_locked(user_id)

    def ensure_key(self) -> Pseudonymizer:
        """The pseudonymizer, creating the key file first if there is no key yet."""
        if self.pseudonymizer is None:
            self.pseudonymizer = Pseudonymizer(load_key(self.directory, self._environ, create=True))
        return self.pseudonymizer

    def _add_locked(self, user_id: str) -> str:
        digest = self.pseudonymizer.digest(user_id)
        current = _read_list(self.path, self.pseudonymizer)
        if digest not in current:
            lines = [f"# key {self.pseudonymizer.fingerprint}"] + sorted(current | {digest})
            _write_atomic(self.path, lambda p: p.write_text("\n".join(lines) + "\n", encoding="ascii"))
        self._digests = frozenset(current | {digest})
        self._memo = {}
        self._stamp = self._file_stamp()
        return digest

    def refresh(self) -> bool:
        """Re-read the file if another process changed it (one ``stat``); True if it changed."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        if self.pseudonymizer is None:
            key = load_key(self.directory, self._environ)
            self.pseudonymizer = Pseudonymizer(key) if key is not None else None
        self._digests = frozenset(_read_list(self.path, self.pseudonymizer))
        self._memo = {}
        self._stamp = stamp
        return True

    def _file_stamp(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across threads and processes (each holder opens its own lock file handle)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read_list(path: Path, pseudonymizer: Pseudonymizer | None) -> set[str]:
    if not path.exists():
        return set()
    lines = [line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    if not lines:
        return set()
    if pseudonymizer is None:
        raise PrivacyError(f"{path} lists forgotten shoppers but there is no key ({KEY_ENV} or "
                           f"{path.parent / KEY_FILE}): their rows cannot be recognised")
    header = lines[0].split()
    if header[:2] != ["#", "key"] or len(header) != 3 or header[2] != pseudonymizer.fingerprint:
        raise PrivacyError(f"{path} was written with another key (fingerprint {header[2:] or '?'}, "
                           f"ours {pseudonymizer.fingerprint}): restore the key the list was written with")
    return {line for line in lines[1:] if not line.startswith("#")}


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``path`` (unique per process and thread), fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- ingest ---------------------------------------------------------------------------------
def record_user_ids(records: pd.Series) -> pd.Series:
    """The shopper id of each reject record (raw row as JSON), as validation would read it:
    ``user_id`` (contract), ``CustomerID`` (Online Retail, "17850.0" -> "17850") or
    ``session`` (OTTO); <NA> where there is none."""
    out = []
    for raw in records.fillna(REDACTED):
        try:
            record = json.loads(raw)
        except (TypeError, ValueError):
            out.append(None)
            continue
        keys = {str(k).strip().lower(): v for k, v in record.items()} if isinstance(record, dict) else {}
        value = next((keys[k] for k in ("user_id", "customerid", "session") if keys.get(k) not in (None, "")), None)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = None if value is None else str(value).strip()
        out.append(text[:-2] if text and text.endswith(".0") and text[:-2].isdigit() else text)
    return pd.Series(out, index=records.index, dtype="string")


def redact_rejects(rejects: pd.DataFrame, forgotten: ForgetList) -> pd.DataFrame:
    """Rejects with nothing left of forgotten shoppers' rows: their records become ``{}``
    (the row number and reason stay, so every row is still accounted for)."""
    if not len(forgotten) or not len(rejects):
        return rejects
    gone = (rejects["reason"] == FORGOTTEN).fillna(False).to_numpy(dtype=bool)
    gone |= forgotten.mask(record_user_ids(rejects["record"]))
    if gone.any():
        rejects = rejects.copy()
        rejects.loc[gone, "record"] = REDACTED
    return rejects


# -- forgetting -----------------------------------------------------------------------------
@dataclass
class ForgetReport:
    pseudonym: str
    canonical_rows: dict[str, int] = field(default_factory=dict)  # table file -> rows removed
    events: int = 0  # events removed from the real-time store
    experiment_rows: int = 0  # A/B tests' exposures and outcomes removed from the experiment log

    def summary(self) -> str:
        rows = ", ".join(f"{name} {n:,}" for name, n in self.canonical_rows.items()) or "no canonical rows"
        nothing = not any(self.canonical_rows.values()) and not self.events and not self.experiment_rows
        return (f"forgot {self.pseudonym}: removed {rows}; {self.events:,} real-time events; "
                f"{self.experiment_rows:,} experiment exposures and outcomes"
                + ("\nnothing of this id was found (a typo? ids are matched exactly); it is on the forgotten list all "
                   "the same, so a later file with it is refused" if nothing else ""))


def forget_user(user_id: str, forgotten: ForgetList, canonical_dir: Path | None = None,
                event_store=None) -> ForgetReport:
    """Forget a shopper everywhere we keep them. Idempotent; the list comes first, so a failure
    later (an event store that is down) leaves them refused and the rerun finishes the job."""
    forgotten.ensure_key()
    with forgotten.locked():  # one forget at a time rewrites the tables
        forgotten._add_locked(user_id)
        report = ForgetReport(forgotten.pseudonymizer.short(user_id))
        if canonical_dir is not None and Path(canonical_dir).is_dir():
            report.canonical_rows = remove_from_canonical(Path(canonical_dir), user_id, forgotten)
    if event_store is not None:
        from features.exposures import forget_in_experiments

        report.events = int(event_store.forget(user_id))
        report.experiment_rows = int(forget_in_experiments(event_store, user_id))  # the A/B tests' rows of them
    return report


def remove_from_canonical(out_dir: Path, user_id: str, forgotten: ForgetList) -> dict[str, int]:
    """Rewrite (atomically, file by file) the canonical tables of an ingest output folder
    without the shopper's rows; their reject records are redacted and the report's counts
    moved from accepted to rejected ("forgotten user"), so read = accepted + rejected holds."""
    from features.ingest import REJECTS_FILE, REPORT_FILE, TABLE_FILES, write_canonical

    removed: dict[str, int] = {}
    for table in USER_TABLES:
        path = out_dir / TABLE_FILES[table]
        if not path.exists():
            continue
        df = pd.read_parquet(path)
        mine = (df["user_id"] == user_id).fillna(False).to_numpy(dtype=bool)
        if mine.any():
            kept = df[~mine].reset_index(drop=True)
            _write_atomic(path, lambda p, kept=kept: write_canonical(kept, p))
            removed[TABLE_FILES[table]] = int(mine.sum())
    rejects_path = out_dir / REJECTS_FILE
    if rejects_path.exists():
        rejects = pd.read_csv(rejects_path, dtype={"source": "string", "reason": "string", "record": "string"},
                              keep_default_na=False)
        if len(rejects):
            before = (rejects["record"] == REDACTED).sum()
            redacted = redact_rejects(rejects, forgotten)
            n = int((redacted["record"] == REDACTED).sum() - before)
            if n:
                _write_atomic(rejects_path, lambda p: redacted.to_csv(p, index=False, lineterminator="\n"))
                removed[REJECTS_FILE] = n
    report_path = out_dir / REPORT_FILE
    if report_path.exists() and any(k in removed for k in (TABLE_FILES[t] for t in USER_TABLES)):
        report = json.loads(report_path.read_text(encoding="utf-8"))
        for table in USER_TABLES:
            n = removed.get(TABLE_FILES[table], 0)
            if not n:
                continue
            report["tables"][table] = report["tables"].get(table, n) - n
            entry = next((f for f in report.get("files", []) if f.get("table") == table), None)
            if entry is not None:
                entry["accepted"] -= n
                entry["rejected"] += n
                entry["by_reason"][FORGOTTEN] = entry["by_reason"].get(FORGOTTEN, 0) + n
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        _write_atomic(report_path, lambda p: p.write_text(text, encoding="utf-8"))
    return removed

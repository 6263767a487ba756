"""The record of customer-data access (GDPR art. 30 / PIPL records of processing): one JSON line per
marketing- or admin-scope call with the time, the key's name (never the key), the endpoint, the
status and how many customers the answer held. Appended by every worker and replica (``O_APPEND``,
one write per line); read by ``shoprec keys audit``.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("shoprec.access")


@dataclass(frozen=True)
class Access:
    at: str  # ISO 8601, UTC
    key: str  # the key's name
    scope: str
    endpoint: str
    status: int
    customers: int


class AccessLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._ready = False

    def record(self, key: str, scope: str, endpoint: str, status: int, customers: int) -> Access | None:
        """Append the entry; None when it could not be written (the caller then must not hand out customer data)."""
        entry = Access(dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"), key, scope, endpoint,
                       status, customers)
        line = (json.dumps(asdict(entry), ensure_ascii=True) + "\n").encode()
        try:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._ready = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:  # the log line below still tells of the call; the caller refuses to hand out data
            log.error("cannot append to the access log %s: %s", self.path, e)
            entry = None
        log.info("access key=%s scope=%s endpoint=%s status=%d customers=%d", key, scope, endpoint, status, customers)
        return entry

    def read(self, since: dt.datetime | None = None) -> list[Access]:
        """Entries at or after ``since`` (aware, or naive = UTC), oldest first; a torn last line is skipped."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                entry = Access(**json.loads(line))
            except (ValueError, TypeError):
                continue
            if since is None or dt.datetime.fromisoformat(entry.at) >= since:
                out.append(entry)
        return out

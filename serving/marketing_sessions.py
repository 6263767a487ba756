"""Sign-in sessions of the marketers' page, kept server-side so that signing out ends them everywhere.

A session is a random token in an HttpOnly cookie; the server keeps only its SHA-256 with the key's
name and hash and an expiry (12 hours), in a JSON file shared by workers and replicas
(``SHOPREC_SESSIONS_FILE``; written under a lock, replaced atomically). Signing out deletes it; a
session also ends when its key is revoked (the page checks the key ring on each request). Each
lookup checks whether the file changed, so a sign-out on one worker holds on all at once.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from features.locked_file import locked, signature, write_json

SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    key_name: str
    key_sha256: str
    expires: float  # epoch seconds


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore:
    def __init__(self, path: Path, lifetime_s: float = SESSION_SECONDS):
        self.path = Path(path)
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, Session] = {}
        self._seen: tuple | None = None
        self._lock = threading.Lock()

    def create(self, key_name: str, key_sha256: str) -> str:
        """A new session for the key; returns its token (for the cookie; not stored)."""
        token = secrets.token_urlsafe(32)
        session = Session(key_name, key_sha256, time.time() + self.lifetime_s)
        self._rewrite(lambda sessions: sessions | {_digest(token): session})
        return token

    def get(self, token: str | None) -> Session | None:
        """The live session of this token; None for no token, an unknown, ended or expired one."""
        if not token:
            return None
        with self._lock:
            if (seen := signature(self.path)) != self._seen:
                self._sessions, self._seen = self._read(), seen
            session = self._sessions.get(_digest(token))
        return session if session is not None and session.expires > time.time() else None

    def end(self, token: str | None) -> bool:
        """End the token's session (sign out); False when there was none."""
        if not token:
            return False
        ended = []
        self._rewrite(lambda sessions: {h: s for h, s in sessions.items() if h != _digest(token) or ended.append(h)})
        return bool(ended)

    def _read(self) -> dict[str, Session]:
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {h: Session(**s) for h, s in data["sessions"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # unreadable: nobody is signed in (they sign in again), never the other way round

    def _rewrite(self, change) -> None:
        with locked(self.path):
            now = time.time()
            sessions = {h: s for h, s in self._read().items() if s.expires > now}  # expired ones go
            write_json(self.path, {"sessions": {h: asdict(s) for h, s in change(sessions).items()}})

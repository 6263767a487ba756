"""API keys: a file of hashed keys with a name, a scope and a creation time, and the service's view of it.

``shoprec keys create`` draws a random key, prints it once and stores only its SHA-256 (a key has
256 random bits, so a fast hash is as good as a slow one); ``revoke`` marks the key revoked (the
record stays, for the audit). Writers take a lock file and replace the store atomically (temp file,
then rename), so the CLI and several replicas can share one file. ``KeyRing`` is what a running
server holds: it re-reads the file when it changes (checked every ``refresh_s`` seconds) and adds
the keys given in the environment, each named after its variable.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from features.locked_file import locked, signature, write_json

SCOPES = ("storefront", "marketing", "admin")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
log = logging.getLogger("shoprec.keys")


class KeyStoreError(ValueError):
    """A request the key store refuses (bad scope or name, unknown key, unreadable file); the message says why."""


@dataclass(frozen=True)
class StoredKey:
    name: str
    scope: str
    sha256: str
    created_at: str  # ISO 8601, UTC
    revoked_at: Optional[str] = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and scope (never the key)."""

    name: str
    scope: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def key_of(scope: str) -> str:
    """'an admin key', 'a marketing key': what a refusal says the caller needs."""
    return f"{'an' if scope[:1] in 'aeiou' else 'a'} {scope} key"


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise KeyStoreError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return scope


class KeyStore:
    """The key file (JSON: ``{"keys": [...]}``); created on the first ``create``, mode 0600."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[StoredKey]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [StoredKey(**k) for k in data["keys"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KeyStoreError(f"cannot read the key store {self.path}: {type(e).__name__}: {e}") from e

    def create(self, scope: str, name: str | None = None) -> tuple[StoredKey, str]:
        """A new key of ``scope``: (its record, the key itself, which is not stored)."""
        check_scope(scope)
        if name is not None and (not re.match(NAME_PATTERN, name) or name.upper().startswith("SHOPREC_")):
            raise KeyStoreError(f"name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                                "digit, not starting with SHOPREC_ (the names of keys from the environment)")
        key = f"sk_{scope}_{secrets.token_urlsafe(32)}"
        with self._locked() as keys:
            name = name or f"{scope}-{secrets.token_hex(3)}"
            if any(k.name == name and k.active for k in keys):
                raise KeyStoreError(f"an active key is already named {name!r} (revoke it first, or choose another name)")
            record = StoredKey(name, scope, digest(key), _now())
            self._write(keys + [record])
        return record, key

    def revoke(self, name: str) -> StoredKey:
        with self._locked() as keys:
            hits = [i for i, k in enumerate(keys) if k.name == name and k.active]
            if not hits:
                raise KeyStoreError(f"no active key named {name!r} (see `shoprec keys list`)")
            keys = list(keys)
            for i in hits:
                keys[i] = StoredKey(**{**asdict(keys[i]), "revoked_at": _now()})
            self._write(keys)
        return keys[hits[0]]

    @contextlib.contextmanager
    def _locked(self):
        """Yields the keys while holding the store's lock (one writer at a time, across processes)."""
        with locked(self.path):
            yield self.read()

    def _write(self, keys: list[StoredKey]) -> None:
        write_json(self.path, {"keys": [asdict(k) for k in keys]})


class KeyRing:
    """The keys a server accepts: the store's active keys (re-read when the file changes) and the
    environment's keys (``{variable name: (scope, key)}``). ``lookup`` is safe from any thread."""

    def __init__(self, store: KeyStore, env_keys: dict[str, tuple[str, str]] | None = None, refresh_s: float = 2.0):
        self.store = store
        self.refresh_s = refresh_s
        self._env = {digest(key): Principal(name, check_scope(scope)) for name, (scope, key) in (env_keys or {}).items()}
        self._stored: dict[str, Principal] = {}
        self._seen: tuple | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._refresh()

    def lookup(self, key: str | None) -> Principal | None:
        """The key's principal, or None for a missing, unknown or revoked key."""
        return self.by_digest(digest(key)) if key else None

    def by_digest(self, sha256: str) -> Principal | None:
        """The principal of the active key with this SHA-256 (a sign-in session holds it, not the key)."""
        if time.monotonic() - self._checked >= self.refresh_s:
            self._refresh()
        return self._env.get(sha256) or self._stored.get(sha256)

    def _refresh(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is at it; this request uses the keys as they are
        try:
            self._checked = time.monotonic()
            seen = signature(self.store.path)
            if seen == self._seen:
                return
            try:
                keys = self.store.read()
            except KeyStoreError as e:  # keep the keys we have; say so
                log.error("%s: keeping the %d keys read before", e, len(self._stored))
                return
            self._stored = {k.sha256: Principal(k.name, k.scope) for k in keys if k.active}
            self._seen = seen
            log.info("key store %s: %d active keys", self.store.path, len(self._stored))
        finally:
            self._lock.release()

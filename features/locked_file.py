"""A small JSON file that several processes (CLI, workers, replicas) read and one at a time rewrites:
writers hold a lock file and replace the file atomically (temp file, fsync, rename), mode 0600."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path):
    """Hold ``path``'s lock file (``.<name>.lock`` beside it) for a read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def signature(path: Path) -> tuple | None:
    """Changes whenever the file is replaced or rewritten; None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size

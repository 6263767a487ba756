"""New connections shared out between a server's workers, not all taken by whichever worker runs first.

BentoML's workers (and uvicorn's, with ``--workers``) all listen on one socket handed down by their process
manager. When connections arrive together (a client or a load balancer opening its keep-alive pool), the worker
that gets a core first accepts them one after the other while the others wait to be scheduled: measured on 2
workers with 16 connections opened at once (benchmarks/serving_floors.py), all 16 went to one worker in 4 of 8
saturation runs, one core idle and the throughput halved for as long as the connections lived.

``install`` gives the workers of one server a shared board (a small memory-mapped file per port in the temporary
directory, each worker a slot with its pid and how many connections it holds) and changes how each accepts: one
connection per turn of its event loop, and a worker holding more than the fewest held by another live worker
steps back once, 1 ms per connection it holds beyond that (at most 10 ms), so that a less busy worker takes the
connection; if none does in that time, it takes it itself (a busy or hung neighbour never leaves a connection
waiting longer than that). A worker takes its slot when it starts listening. asyncio has no setting for this:
the accept loop is the selector event loop's private ``_accept_connection`` (Python 3.11, checked at install),
and a worker's open connections are its ``asyncio.Server``'s count.
"""
from __future__ import annotations

import asyncio.selector_events as selector_events
import fcntl
import inspect
import logging
import mmap
import os
import struct
import tempfile
from pathlib import Path

STEP_BACK_S = 0.001  # per connection held beyond the fewest another worker holds
STEP_BACK_MAX_S = 0.01
SLOTS = 64
_SLOT = struct.Struct("<ii")  # pid, connections held
_ORIGINAL = selector_events.BaseSelectorEventLoop._accept_connection
_ORIGINAL_START = selector_events.BaseSelectorEventLoop._start_serving
log = logging.getLogger("shoprec.accept")


class Board:
    """The workers of one server (same parent process, same port): a slot each, (pid, connections held)."""

    def __init__(self, path: Path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # claim a slot while no other worker claims one
            if os.fstat(fd).st_size < SLOTS * _SLOT.size:
                os.ftruncate(fd, SLOTS * _SLOT.size)
            self._map = mmap.mmap(fd, SLOTS * _SLOT.size)
            self.slot = self._claim()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _claim(self) -> int:
        me = os.getpid()
        for i in range(SLOTS):
            pid, _ = _SLOT.unpack_from(self._map, i * _SLOT.size)
            if pid in (0, me) or not _alive(pid):
                _SLOT.pack_into(self._map, i * _SLOT.size, me, 0)
                return i
        raise RuntimeError(f"more than {SLOTS} workers on one socket")

    def publish(self, held: int) -> None:
        _SLOT.pack_into(self._map, self.slot * _SLOT.size, os.getpid(), held)

    def fewest_held_by_others(self) -> int | None:
        fewest = None
        for i in range(SLOTS):
            if i == self.slot:
                continue
            pid, held = _SLOT.unpack_from(self._map, i * _SLOT.size)
            if pid and (fewest is None or held < fewest) and _alive(pid):
                fewest = held
        return fewest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: whether the process exists (PermissionError: it does, another user's)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


_boards: dict[int, Board | None] = {}
_stepped_back: set[int] = set()


def _board(sock) -> Board | None:
    fd = sock.fileno()
    if fd not in _boards:
        try:
            name = sock.getsockname()  # one server per TCP port at a time; a Unix socket's server by its parent
            where = f"port-{name[1]}" if isinstance(name, tuple) else f"unix-{os.getppid()}"
            _boards[fd] = Board(Path(tempfile.gettempdir()) / f"shoprec-accept-{where}")
        except (OSError, RuntimeError) as e:
            log.warning("connections not shared out between workers: %s", e)
            _boards[fd] = None
    return _boards[fd]


def _start_shared(self, protocol_factory, sock, *args, **kwargs):
    """A worker takes its slot on the board when it starts listening, so that the others count it before its
    first connection (a worker still waiting for a core would otherwise not be seen)."""
    if (board := _board(sock)) is not None:
        board.publish(0)
    return _ORIGINAL_START(self, protocol_factory, sock, *args, **kwargs)


def _accept_shared(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kwargs):
    board = _board(sock)
    if board is None:
        return _ORIGINAL(self, protocol_factory, sock, sslcontext, server, backlog, *args, **kwargs)
    fd = sock.fileno()
    held = getattr(server, "_active_count", 0)
    board.publish(held)
    fewest = board.fewest_held_by_others()
    if fd not in _stepped_back and fewest is not None and held > fewest:
        # let a less busy worker take it; take it ourselves if none has within the step back (longer the more we hold)
        _stepped_back.add(fd)
        self._remove_reader(fd)
        self.call_later(min(STEP_BACK_MAX_S, STEP_BACK_S * (held - fewest)), self._add_reader, fd,
                        self._accept_connection, protocol_factory, sock, sslcontext, server, backlog,
                        *args, *kwargs.values())
        return None
    _stepped_back.discard(fd)
    return _ORIGINAL(self, protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)


def install(workers: int) -> bool:
    """With several workers, patch this process's selector event loop (idempotent). False, and nothing changed,
    with one worker or when asyncio's accept loop does not have the shape this relies on."""
    loop_class = selector_events.BaseSelectorEventLoop
    if loop_class._accept_connection is _accept_shared:
        return True
    expected = ["self", "protocol_factory", "sock", "sslcontext", "server", "backlog"]
    shapes = [list(inspect.signature(f).parameters)[:6] for f in (_ORIGINAL, _ORIGINAL_START)]
    if workers <= 1 or shapes != [expected, expected] or not hasattr(loop_class, "_remove_reader"):
        return False
    loop_class._accept_connection = _accept_shared
    loop_class._start_serving = _start_shared
    return True

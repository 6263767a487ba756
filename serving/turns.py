"""The storefront endpoints' model work, run back to back for the requests that reach it in one turn of the
event loop.

A busy worker holds several requests at once (the serving benchmark's client keeps 8 per worker), and each
request alternates between BentoML's code (middlewares, tracing, parsing, the reply) and ours (the search, the
fold-in, the event-store read). Interleaved one request at a time, each side finds the processor's caches full of
the other's code and data. Measured in one process on the benchmark's mix, 8 requests at a time (`python -m
benchmarks.serving_inproc`, benchmarks/results/serving-inproc.md): one by one, the framework's share of a request
cost 0.474 ms beside our work against 0.365 beside a constant answer, and our work 0.205 ms; grouped, 0.394 and
0.177 (0.570 ms of CPU a request in all, against 0.678).

``WorkTurns.run`` queues the work and runs every request's queued work in one callback on the next turn of the
loop, in arrival order, each in its own request's context (``contextvars``); the requests then reply one after the
other. The framework's parts of those requests run back to back as well (``serving/limits.py``'s
``CountTowardsConcurrency`` already lets every ready request start before any runs its endpoint).

A lone request (100 requests/s) waits one turn of the loop (microseconds). At most ``MAX_GROUP`` works run in one
callback, so one reply waits for at most that many others' work; the rest run on the next turn. A request cancelled
while it waits (BentoML's timeout, a client gone) is skipped, its work not done. The work itself is synchronous
and stays on the event loop, as before: only its order changes.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Callable, TypeVar

T = TypeVar("T")
MAX_GROUP = 16  # works per callback: a reply waits for at most 15 other requests' work (~0.3 ms each)


class WorkTurns:
    """Runs synchronous work for async endpoints, grouped by turn of the event loop (one instance per worker)."""

    def __init__(self, max_group: int = MAX_GROUP) -> None:
        self.max_group = max_group
        self._queued: list[tuple[Callable[[], object], asyncio.Future, contextvars.Context]] = []
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop that will run the queue next
        self.groups = 0  # callbacks that ran work (with ``works``: the mean group size, for tests and benchmarks)
        self.works = 0

    async def run(self, work: Callable[[], T]) -> T:
        """``work()``'s result (or exception), computed on the next turn of the loop with the others queued."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if self._due_on is not loop:  # (a loop that stopped with work queued, as in tests, leaves it to this one)
            self._due_on = loop
            loop.call_soon(self._run_queued)
        self._queued.append((work, done, contextvars.copy_context()))
        return await done

    def _run_queued(self) -> None:
        group, self._queued = self._queued[: self.max_group], self._queued[self.max_group:]
        if self._queued:  # more than a group: the rest on the next turn, after these requests reply
            asyncio.get_running_loop().call_soon(self._run_queued)
        else:
            self._due_on = None
        ran = 0
        for work, done, context in group:
            if done.done() or done.get_loop().is_closed():  # cancelled while queued; its loop gone
                continue
            ran += 1
            try:
                done.set_result(context.run(work))
            except Exception as e:  # the request's own error, raised where it awaits
                done.set_exception(e)
        self.groups += ran > 0
        self.works += ran

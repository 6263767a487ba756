"""New connections shared out between the workers of one server (serving/accept_share.py): two worker processes
listening on one socket, as BentoML's do, get 16 connections opened at once; each must hold a fair part of them
(without the sharing, the worker that runs first often took all 16). One worker: nothing is patched."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time

from serving import accept_share

CONNECTIONS = 16


class SayPid(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(f"{os.getpid()}\n".encode())  # and keep the connection open, as a keep-alive pool does


def worker(sock: socket.socket, ready) -> None:
    assert accept_share.install(2)

    async def serve():
        server = await asyncio.get_running_loop().create_server(SayPid, sock=sock)
        ready.release()
        await server.serve_forever()

    asyncio.run(serve())


def test_sixteen_connections_opened_at_once_are_shared_between_two_workers():
    ctx = multiprocessing.get_context("fork")
    results = []
    for attempt in range(3):  # three fresh servers: the sharing must hold each time, not on average
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        listener.setblocking(False)
        ready = ctx.Semaphore(0)
        procs = [ctx.Process(target=worker, args=(listener, ready), daemon=True) for _ in range(2)]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                assert ready.acquire(timeout=30)
            time.sleep(0.2)  # both workers idle in their event loops, waiting on the socket
            clients = [socket.create_connection(listener.getsockname(), timeout=10) for _ in range(CONNECTIONS)]
            pids = [c.makefile().readline().strip() for c in clients]
            held = sorted(pids.count(str(p.pid)) for p in procs)
            results.append(held)
            assert sum(held) == CONNECTIONS, pids
            for c in clients:
                c.close()
        finally:
            for p in procs:
                p.kill()
                p.join(10)
            listener.close()
    assert all(h[0] >= 4 for h in results), results  # each worker holds at least a quarter of the connections


def test_one_worker_is_left_as_asyncio_made_it():
    before = asyncio.selector_events.BaseSelectorEventLoop._accept_connection
    assert accept_share.install(1) is False
    assert asyncio.selector_events.BaseSelectorEventLoop._accept_connection is before

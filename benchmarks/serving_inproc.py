"""Where a request's CPU goes, without sockets: BentoML's ASGI app driven in one process with the serving
benchmark's mix, ``--concurrency`` requests at a time (default 8: the serving benchmark's 16 connections on 2
workers), for the service; the same service with each request's work run at once instead of grouped by event-loop
turn (serving/turns.py); the same service with its storefront endpoints answering a constant, with and without
walking the 0.8 MB of item vectors a search reads first; the service's endpoints doing their work and then
answering the constant; and the trivial BentoML endpoint (floor 1 of ``benchmarks.serving_floors``).

    python -m benchmarks.serving_inproc [--rounds 5] [--concurrency 8]

Needs what ``python -m benchmarks.serving_floors`` leaves in data/bench/work (the published 1M x 100k model in
bentoml_home-floors, its event store and the mix's 4,000 bodies). Each round starts one fresh process per
variant (rotating order), makes one pass over the mix to warm up and measures the next: the process's CPU time per
request and the time in our work (the storefront's work run by serving/turns.py; the whole endpoint where it
answers a constant). No client, no kernel sockets: the constant-answer variant against the trivial endpoint is
what the rest of our stack costs (middlewares, reply); the service's time outside its work against the
constant-answer variant's is how much slower the same framework code runs beside the work; the work-then-constant
variant says whether that comes from the work or from its answers, the walking variant how much of it reading the
model's memory alone causes, the one-by-one variant what grouping the work by loop turn saves.
Writes benchmarks/results/serving-inproc.json and .md (``-c1`` in the name at concurrency 1).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from benchmarks.common import DATA, emit, fmt_spread, machine, machine_markdown, run_child, summary, write_results

VARIANTS = {
    "service": "shoprec (`serving.service:Shoprec`)",
    "service-one-by-one": "the same service, each request's work run as soon as it arrives (not grouped by loop "
                          "turn, serving/turns.py)",
    "service-constant": "the same service, its /recommend and /session answering a constant (same size of answer)",
    "service-constant-walk": "the same constant answer after a product with the model's 2,048 longest item vectors "
                             "(the memory a search's first block reads, 0.8 MB), timed as endpoint work",
    "service-work": "the service's endpoints doing their work, then answering the constant instead of their answer",
    "trivial": "BentoML, same schemas, constant answer (`benchmarks.trivial_bento:Trivial`)",
}
HOME = DATA / "work" / "bentoml_home-floors"
MIX = DATA / "work" / "floors-mix.json"


def task_variant(variant: str, concurrency: int = 1) -> None:
    """One process: build the app, warm up on the mix, measure one pass, ``concurrency`` requests at a time."""
    from tests.server import STOREFRONT_KEY, server_env

    os.environ.update(server_env(HOME, {"SHOPREC_EVENTS_URL": f"sqlite:///{HOME}/events.db",
                                        "SHOPREC_RATE_PER_KEY": "1000000/second"}))
    if variant == "trivial":
        from benchmarks.trivial_bento import Trivial as service
    else:
        from serving.service import Shoprec as service
    timed = [0.0]
    if variant != "trivial":
        _time_work(variant, timed)
        for name in ("recommend", "session"):
            endpoint = _endpoint(variant, service.apis[name].func)
            service.apis[name].func = _timed(endpoint, timed) if variant.startswith("service-constant") else endpoint
    from bentoml._internal.context import server_context

    server_context.service_name = server_context.bento_name = service.name
    server_context.service_type, server_context.bento_version = "entry_service", "n/a"
    import logging

    logging.getLogger("shoprec.requests").setLevel(logging.WARNING)  # served: the note rides on the access line
    app = service.to_asgi(is_main=True)
    requests = [(b["path"], json.dumps(b["body"]).encode()) for b in json.loads(MIX.read_text())]
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"authorization", b"Bearer " + STOREFRONT_KEY.encode())]

    async def call(path: str, body: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers + [(b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000)}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # never: the body is read once
        sent = []

        async def send(message):
            sent.append(message)
        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{path}: {sent[0]['status']} {sent[1:]}")

    async def passes() -> tuple[float, float]:
        async with app.router.lifespan_context(app):
            for at in (0, 1):  # a warm-up pass, then the measured one
                timed[0], start = 0.0, time.process_time()
                for i in range(0, len(requests), concurrency):
                    await asyncio.gather(*(call(path, body) for path, body in requests[i:i + concurrency]))
            return (time.process_time() - start) / len(requests) * 1e3, timed[0] / len(requests) * 1e3
    cpu_ms, endpoint_ms = asyncio.run(passes())
    emit(0.0, cpu_ms=cpu_ms, endpoint_ms=endpoint_ms if variant.startswith("service") else None)


def _endpoint(variant: str, func):
    """What a service variant's /recommend or /session runs: the service's own endpoint ``func``, or a constant
    answer (the trivial endpoint's) after ``func``'s work, after reading the search's first block, or alone."""
    if variant in ("service", "service-one-by-one"):
        return func
    from starlette.responses import Response

    from benchmarks.trivial_bento import ANSWER

    body = ANSWER.model_dump_json().encode()

    async def endpoint(self, ctx, **req):
        if variant == "service-work":
            await func(self, ctx, **req)
        elif variant == "service-constant-walk":  # what the length-pruned search reads first; nothing of it used
            search = self.models.current.store._user_index
            search.vectors[: search.FIRST_BLOCK] @ search.vectors[0]
        return Response(body, media_type="application/json")
    return endpoint


def _time_work(variant: str, total: list) -> None:
    """Adds the CPU time of the storefront's work (serving/turns.py) to ``total``; the one-by-one variant runs each
    request's work at once instead of on the next loop turn with the others."""
    from serving import turns

    if variant == "service-one-by-one":
        async def at_once(self, work):
            start = time.process_time()
            try:
                return work()
            finally:
                total[0] += time.process_time() - start
        turns.WorkTurns.run = at_once
        return
    run_queued = turns.WorkTurns._run_queued

    def timed(self):
        start = time.process_time()
        try:
            run_queued(self)
        finally:
            total[0] += time.process_time() - start
    turns.WorkTurns._run_queued = timed


def _timed(func, total: list):
    async def endpoint(self, ctx, **req):
        start = time.process_time()
        try:
            return await func(self, ctx, **req)
        finally:
            total[0] += time.process_time() - start
    return endpoint


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8: the serving "
                   "benchmark's 16 connections on 2 workers)")
    args = p.parse_args(argv)
    name = "serving-inproc" + ("" if args.concurrency == 8 else f"-c{args.concurrency}")
    if not MIX.exists() or not (HOME / "events.db").exists():
        raise SystemExit(f"{MIX} or {HOME}/events.db missing: run `python -m benchmarks.serving_floors` first")
    runs = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for r in range(args.rounds):
        for v in names[r % len(names):] + names[: r % len(names)]:
            res = run_child(["benchmarks.serving_inproc", "task", v, str(args.concurrency)], timeout=900,
                            env={"OPENBLAS_NUM_THREADS": "1"})
            if not res.ok:
                raise SystemExit(f"{v}: {res.error}")
            runs[v].append(res.payload)
            print(f"round {r + 1} {v}: {res.payload['cpu_ms']:.3f} ms", flush=True)
    cpu = {v: summary([x["cpu_ms"] for x in runs[v]]) for v in VARIANTS}
    endpoint = summary([x["endpoint_ms"] for x in runs["service"]])
    inside = {v: summary([x["endpoint_ms"] for x in runs[v]]) for v in VARIANTS if v.startswith("service")}
    outside = {v: summary([x["cpu_ms"] - x["endpoint_ms"] for x in runs[v]]) for v in inside}
    outside["trivial"] = cpu["trivial"]
    out = {"machine": machine(), "rounds": args.rounds, "concurrency": args.concurrency, "cpu_ms": cpu,
           "service_endpoint_ms": endpoint, "endpoint_ms": inside, "outside_endpoint_ms": outside, "runs": runs}
    command = "python -m benchmarks.serving_inproc" + (f" --concurrency {args.concurrency}" if args.concurrency != 8 else "")
    lines = [f"# Serving without sockets: where a request's CPU goes (`{command}`)", "",
             machine_markdown(out["machine"]), "",
             f"BentoML's ASGI app driven in one process with the mix of `benchmarks.serving_floors` (4,000 bodies of "
             f"the 1M x 100k model), {args.concurrency} request(s) at a time, one fresh process per variant and round, "
             f"{args.rounds} rounds in rotating order; CPU time of one pass after a warm-up pass. Our work: the "
             "storefront's (event-store read, arm, answer; serving/turns.py), or the whole endpoint where it answers a "
             "constant. Median (min–max, n).", "",
             "| variant | what it does | CPU ms / request | of which our work | the rest (framework, middlewares, reply) |",
             "|---|---|---|---|---|"]
    lines += [f"| {v} | {VARIANTS[v]} | {fmt_spread(cpu[v], 3)} | {fmt_spread(inside.get(v), 3)} | "
              f"{fmt_spread(outside[v], 3)} |" for v in VARIANTS]
    lines += ["", f"The storefront's work in the service's /recommend and /session (in the stack): "
              f"{fmt_spread(endpoint, 3)} ms a request of the mix.", ""]
    write_results(name, out, "\n".join(lines))
    print(f"wrote benchmarks/results/{name}.json and .md")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "task":
        task_variant(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        main()

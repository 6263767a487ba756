"""Where a request's CPU goes, without sockets: BentoML's ASGI app driven in one process with the serving
benchmark's mix, for the service; the same service with its storefront endpoints answering a constant, with and
without walking the 0.8 MB of item vectors a search reads first; the service's endpoints doing their work and then
answering the constant; and the trivial BentoML endpoint (floor 1 of ``benchmarks.serving_floors``).

    python -m benchmarks.serving_inproc [--rounds 5]

Needs what ``python -m benchmarks.serving_floors`` leaves in data/bench/work (the published 1M x 100k model in
bentoml_home-floors, its event store and the mix's 4,000 bodies). Each round starts one fresh process per
variant (rotating order), makes one pass over the mix to warm up and measures the next: the process's CPU time per
request and the time inside the endpoints (the rest: the framework and our middlewares). No client, no kernel
sockets: the constant-answer variant against the trivial endpoint is what the rest of our stack costs
(middlewares, reply); the service's time outside its endpoints against the constant-answer variant's is how much
slower the same framework code runs beside the endpoints' work; the work-then-constant variant says whether that
comes from the work or from its answers, the walking variant how much of it reading the model's memory alone causes.
Writes benchmarks/results/serving-inproc.json and .md.
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
    "service-constant": "the same service, its /recommend and /session answering a constant (same size of answer)",
    "service-constant-walk": "the same constant answer after a product with the model's 2,048 longest item vectors "
                             "(the memory a search's first block reads, 0.8 MB), timed as endpoint work",
    "service-work": "the service's endpoints doing their work, then answering the constant instead of their answer",
    "trivial": "BentoML, same schemas, constant answer (`benchmarks.trivial_bento:Trivial`)",
}
HOME = DATA / "work" / "bentoml_home-floors"
MIX = DATA / "work" / "floors-mix.json"


def task_variant(variant: str) -> None:
    """One process: build the app, warm up on the mix, measure one pass."""
    from tests.server import STOREFRONT_KEY, server_env

    os.environ.update(server_env(HOME, {"SHOPREC_EVENTS_URL": f"sqlite:///{HOME}/events.db",
                                        "SHOPREC_RATE_PER_KEY": "1000000/second"}))
    if variant == "trivial":
        from benchmarks.trivial_bento import Trivial as service
    else:
        from serving.service import Shoprec as service
    timed = [0.0]
    if variant != "trivial":
        for name in ("recommend", "session"):
            service.apis[name].func = _timed(_endpoint(variant, service.apis[name].func), timed)
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
            for path, body in requests:
                await call(path, body)
            timed[0] = 0.0
            start = time.process_time()
            for path, body in requests:
                await call(path, body)
            return (time.process_time() - start) / len(requests) * 1e3, timed[0] / len(requests) * 1e3
    cpu_ms, endpoint_ms = asyncio.run(passes())
    emit(0.0, cpu_ms=cpu_ms, endpoint_ms=endpoint_ms if variant.startswith("service") else None)


def _endpoint(variant: str, func):
    """What a service variant's /recommend or /session runs: the service's own endpoint ``func``, or a constant
    answer (the trivial endpoint's) after ``func``'s work, after reading the search's first block, or alone."""
    if variant == "service":
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
    args = p.parse_args(argv)
    if not MIX.exists() or not (HOME / "events.db").exists():
        raise SystemExit(f"{MIX} or {HOME}/events.db missing: run `python -m benchmarks.serving_floors` first")
    runs = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for r in range(args.rounds):
        for v in names[r % len(names):] + names[: r % len(names)]:
            res = run_child(["benchmarks.serving_inproc", "task", v], timeout=900, env={"OPENBLAS_NUM_THREADS": "1"})
            if not res.ok:
                raise SystemExit(f"{v}: {res.error}")
            runs[v].append(res.payload)
            print(f"round {r + 1} {v}: {res.payload['cpu_ms']:.3f} ms", flush=True)
    cpu = {v: summary([x["cpu_ms"] for x in runs[v]]) for v in VARIANTS}
    endpoint = summary([x["endpoint_ms"] for x in runs["service"]])
    inside = {v: summary([x["endpoint_ms"] for x in runs[v]]) for v in VARIANTS if v.startswith("service")}
    outside = {v: summary([x["cpu_ms"] - x["endpoint_ms"] for x in runs[v]]) for v in inside}
    outside["trivial"] = cpu["trivial"]
    out = {"machine": machine(), "rounds": args.rounds, "cpu_ms": cpu, "service_endpoint_ms": endpoint,
           "endpoint_ms": inside, "outside_endpoint_ms": outside, "runs": runs}
    lines = ["# Serving without sockets: where a request's CPU goes (`python -m benchmarks.serving_inproc`)", "",
             machine_markdown(out["machine"]), "",
             f"BentoML's ASGI app driven in one process with the mix of `benchmarks.serving_floors` (4,000 bodies of "
             f"the 1M x 100k model), one fresh process per variant and round, {args.rounds} rounds in rotating order; "
             "CPU time of one pass after a warm-up pass. Median (min–max, n).", "",
             "| variant | what it does | CPU ms / request | of which in the endpoints | the rest (framework, middlewares) |",
             "|---|---|---|---|---|"]
    lines += [f"| {v} | {VARIANTS[v]} | {fmt_spread(cpu[v], 3)} | {fmt_spread(inside.get(v), 3)} | "
              f"{fmt_spread(outside[v], 3)} |" for v in VARIANTS]
    lines += ["", f"Inside the service's /recommend and /session (the endpoints' own work, in the stack): "
              f"{fmt_spread(endpoint, 3)} ms a request of the mix.", ""]
    write_results("serving-inproc", out, "\n".join(lines))
    print("wrote benchmarks/results/serving-inproc.json and .md")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "task":
        task_variant(sys.argv[2])
    else:
        main()

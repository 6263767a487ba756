"""The serving floor: a bare Starlette app under uvicorn that reads the JSON body and returns a
precomputed list shaped like a shoprec answer, on every path the load test calls.

    python -m benchmarks.floor_app --port N
"""
from __future__ import annotations

import argparse
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = json.dumps({"items": [{"item_id": f"i{i:05d}", "score": round(1 - i / 100, 6), "reason": None} for i in range(10)],
                     "source": "model:als", "model_version": "floor"}).encode()


async def answer(request: Request) -> Response:
    json.loads(await request.body())  # the same body parse any real endpoint does
    return Response(ANSWER, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"ok")


PATHS = ("/recommend", "/similar_items", "/rerank", "/propensity", "/bought_together", "/session")
app = Starlette(routes=[Route(p, answer, methods=["POST"]) for p in PATHS] + [Route("/readyz", ready)])

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)

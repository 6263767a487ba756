"""Serving floor 2, everything but the framework: a bare Starlette app under uvicorn that does shoprec's
work for /recommend and /session through the same code and the same model store: the service class's own
``__init__`` (model from the BentoML store, event store, privacy, keys, experiments, drift monitor) and its
endpoint methods, behind the same ASGI middlewares (replica header, keys and scopes, body limit), with
BentoML's HTTP layer (its ASGI app, IO descriptors, traffic control, metrics, tracing) left out.

    python -m benchmarks.starlette_floor --port N --workers W     (environment as for the service)
"""
from __future__ import annotations

import argparse
import contextlib
from types import SimpleNamespace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PATHS = ("/recommend", "/session")
_state = SimpleNamespace(service=None)


@contextlib.asynccontextmanager
async def lifespan(app):
    from serving.service import Shoprec

    _state.service = Shoprec.inner()  # the service's own construction, once per worker process
    yield


def endpoint(name: str):
    async def handle(request: Request) -> Response:
        from pydantic import ValidationError

        from serving.service import Shoprec

        spec = Shoprec.apis[name].input_spec  # validated as BentoML does (the endpoint trusts its arguments)
        try:
            parsed = spec.model_validate_json(await request.body() or b"{}")
        except ValidationError as e:
            return JSONResponse({"error": "invalid request", "detail": e.errors(include_input=False)}, status_code=400)
        ctx = SimpleNamespace(request=request, response=SimpleNamespace(status_code=200, headers={}))
        out = await getattr(_state.service, name)(ctx, **{k: getattr(parsed, k) for k in type(parsed).model_fields})
        if isinstance(out, Response):
            return out
        return Response(out.model_dump_json(), status_code=ctx.response.status_code, media_type="application/json")

    return handle


async def ready(request: Request) -> Response:
    return Response(b"ok" if _state.service is not None and _state.service.models.ready else b"not ready",
                    status_code=200 if _state.service is not None and _state.service.models.ready else 503)


def build():
    from serving.auth import ScopedKeys
    from serving.limits import BodySizeLimit, CountTowardsConcurrency
    from serving.served_by import ServedBy

    app = Starlette(routes=[Route(p, endpoint(p.strip("/")), methods=["POST"]) for p in PATHS]
                    + [Route("/readyz", ready)], lifespan=lifespan)
    # the service's middlewares, innermost first (BentoML mounts them in the reverse order of add_asgi_middleware)
    inner = CountTowardsConcurrency(app)
    inner = BodySizeLimit(inner, max_bytes=64 * 1024)
    inner = ScopedKeys(inner, control=lambda: _state.service.access)
    return ServedBy(inner)


app = build()

if __name__ == "__main__":
    import socket

    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    config = uvicorn.Config("benchmarks.starlette_floor:app", host="127.0.0.1", port=args.port, workers=args.workers,
                            log_level="warning", access_log=False)
    # The listening socket is made here, with proto TCP: uvicorn's own (Config.bind_socket, used with workers > 1)
    # has proto 0, asyncio then leaves TCP_NODELAY off on its connections, and every answer (headers and body
    # written apart) waited ~40 ms for the client's delayed ACK (measured: sequential p50 44 ms, 3.6 with one worker).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.set_inheritable(True)
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])

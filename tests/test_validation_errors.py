"""serving/validation_errors.py in-process: only BentoML's validation answers are reworded."""
import json

import anyio
import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from serving.validation_errors import ReadableValidationErrors, reworded

BENTO = {"error": "2 validation error for ChurnRiskRequestIODescriptor", "detail": [
    {"type": "less_than_equal", "loc": ["min_probability"], "msg": "Input should be less than or equal to 1",
     "url": "https://errors.pydantic.dev/2.14/v/less_than_equal"},
    {"type": "greater_than_equal", "loc": ["page"], "msg": "Input should be greater than or equal to 1",
     "url": "https://errors.pydantic.dev/2.14/v/greater_than_equal"}]}


def test_the_headline_names_the_fields_and_the_links_go():
    out = json.loads(reworded(json.dumps(BENTO).encode()))
    assert out["error"] == ("invalid request: min_probability: Input should be less than or equal to 1; "
                            "page: Input should be greater than or equal to 1")
    assert [set(e) for e in out["detail"]] == [{"type", "loc", "msg"}] * 2
    for other in (b'{"error": "min_price 9 is above max_price 2"}', b"not json", b'{"error": "1 validation error for X"}',
                  b'[1, 2]'):
        assert reworded(other) is None


def test_the_middleware_rewords_only_those_answers():
    async def bento(request):
        return JSONResponse(BENTO, status_code=400)

    async def ours(request):
        return JSONResponse({"error": "min_price 9 is above max_price 2"}, status_code=400)

    async def text(request):
        return PlainTextResponse("1 validation error for X", status_code=400)

    app = ReadableValidationErrors(Starlette(routes=[Route("/b", bento), Route("/o", ours), Route("/t", text)]))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.get(p) for p in ("/b", "/o", "/t")]

    b, o, t = anyio.run(go)
    assert b.status_code == 400 and b.json()["error"].startswith("invalid request: min_probability:")
    assert int(b.headers["content-length"]) == len(b.content)
    assert o.json() == {"error": "min_price 9 is above max_price 2"} and t.text == "1 validation error for X"


def test_an_id_with_surrounding_space_is_refused_in_words():
    from serving.schemas import ID_PATTERN

    bento = {"error": "1 validation error for RecommendRequestIODescriptor", "detail": [
        {"type": "string_pattern_mismatch", "loc": ["user_id"], "msg": f"String should match pattern '{ID_PATTERN}'"}]}
    out = json.loads(reworded(json.dumps(bento).encode()))
    assert out["error"] == ("invalid request: user_id: an id must not start or end with whitespace, nor hold control "
                            "characters") and ID_PATTERN not in json.dumps(out)

"""Every bad request gets an OpenAI-shaped JSON error with the right status, and the
server keeps serving; the API key, the body size limit and a full queue."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

from .serve_helpers import char_served, running_server  # noqa: E402

KEY = "sk-test-key"
GOOD = {"model": "tiny", "prompt": "ab", "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def url():
    with running_server(char_served(), api_key=KEY, max_body=4096, max_queue=8) as (u, _):
        yield u


def _post(url, path, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(url + path, content=body, headers=headers, **kw)
    return httpx.post(url + path, json=body, headers=headers, **kw)


def _still_serving(url):
    r = _post(url, "/v1/completions", GOOD)
    assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 3


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "path,body,status,words",
    [
        (CHAT, b"{not json", 400, "not valid JSON"),
        (CHAT, b"[1, 2]", 400, "JSON object"),
        (CHAT, {"model": "tiny"}, 400, "messages"),
        (CHAT, {"model": "tiny", "messages": "hi"}, 400, "messages"),
        (CHAT, {"model": "tiny", "messages": [{"content": "x"}]}, 400, "role"),
        (CHAT, {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "robot"),
        (CHAT, {"model": "tiny", "messages": MSGS, "max_tokens": "3"}, 400, "max_tokens"),
        (CHAT, {"model": "tiny", "messages": MSGS, "stream": "yes"}, 400, "stream"),
        (CHAT, {"model": "tiny", "messages": MSGS, "temperature": "hot"}, 400, "temperature"),
        (CHAT, {"model": "gpt-9", "messages": MSGS}, 404, "gpt-9"),
        (COMPLETIONS, {**GOOD, "prompt": 5}, 400, "prompt"),
        (COMPLETIONS, {**GOOD, "prompt": [999999]}, 400, "token ids"),
        (COMPLETIONS, {**GOOD, "max_tokens": 100}, 400, "context is 64 tokens"),
        (COMPLETIONS, {**GOOD, "n": 17}, 400, "n must be"),
        (COMPLETIONS, {**GOOD, "temperature": -0.5}, 400, "temperature"),
        (COMPLETIONS, {**GOOD, "top_p": 0}, 400, "top_p"),
        (COMPLETIONS, {**GOOD, "top_p": 1.5}, 400, "top_p"),
        (COMPLETIONS, {**GOOD, "top_k": 0}, 400, "top_k"),
        (COMPLETIONS, {**GOOD, "stop": [1, 2]}, 400, "stop"),
        (COMPLETIONS, {**GOOD, "logprobs": 9}, 400, "logprobs"),
    ],
)
def test_bad_request_gets_an_openai_error(url, path, body, status, words):
    r = _post(url, path, body)
    assert r.status_code == status
    err = r.json()["error"]
    assert words in err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    _still_serving(url)


def test_context_error_says_the_numbers(url):
    r = _post(url, COMPLETIONS, {**GOOD, "prompt": "hello", "max_tokens": 60})
    msg = r.json()["error"]["message"]
    assert r.status_code == 400 and "5 tokens" in msg and "60" in msg and "65" in msg


def test_body_over_the_limit_is_413(url):
    r = _post(url, CHAT, {"model": "tiny", "messages": [{"role": "user", "content": "a" * 5000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: counted while read
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    r = httpx.post(url + COMPLETIONS, content=chunks(), headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413
    _still_serving(url)


@pytest.mark.parametrize("key", [None, "wrong", KEY + "x"])
def test_wrong_or_missing_api_key_is_401(url, key):
    for path in ("/v1/models", "/health", "/metrics"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        assert httpx.get(url + path, headers=headers).status_code == 401
    r = _post(url, COMPLETIONS, GOOD, key=key)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    _still_serving(url)


def test_openai_client_raises_its_own_error_types(url):
    with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as c:
        with pytest.raises(openai.NotFoundError):
            c.completions.create(model="nope", prompt="a", max_tokens=1)
        with pytest.raises(openai.BadRequestError, match="top_p"):
            c.completions.create(model="tiny", prompt="a", top_p=2.0)
    bad = openai.OpenAI(base_url=url + "/v1", api_key="bad", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_full_queue_is_429(url):
    r = _post(url, COMPLETIONS, {**GOOD, "prompt": ["ab"] * 3, "n": 3})  # 9 > 8 waiting
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    _still_serving(url)


def test_unknown_route_is_an_openai_error(url):
    r = httpx.get(url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "error" in r.json()

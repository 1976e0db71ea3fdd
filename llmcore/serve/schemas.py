"""Request bodies of ``/v1/chat/completions`` and ``/v1/completions`` parsed and checked
into one :class:`GenRequest`, and errors in OpenAI's shape.

Fields follow OpenAI's API; ``top_k``, ``min_p``, ``typical_p`` and ``repetition_penalty``
are llmcore's own samplers. Unknown fields are ignored, as clients send fields that not
every server knows. A bad field raises :class:`ApiError` naming it and what is valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from llmcore.errors import LLMCoreError

#: the most choices one request may ask for
MAX_N = 16
#: the most ``top_logprobs`` alternatives per token (OpenAI's limit)
MAX_TOP_LOGPROBS = 20
#: ``max_tokens`` of a completion when the request gives none (OpenAI's default)
DEFAULT_COMPLETION_TOKENS = 16


class ApiError(LLMCoreError):
    """An error answered as OpenAI does: ``status`` and ``{"error": {...}}``."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind = kind or {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
        }.get(status, "server_error")

    def body(self) -> dict:
        code = {404: "model_not_found", 401: "invalid_api_key", 413: "request_too_large"}
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": code.get(self.status),
            }
        }


@dataclass
class Sampling:
    """How the tokens of one request are chosen."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None


@dataclass
class GenRequest:
    """One parsed request: what to generate and how to answer."""

    chat: bool
    model: str | None
    prompts: list  # chat: [messages]; completions: strings or lists of ids
    max_tokens: int | None
    sampling: Sampling
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    echo: bool = False
    user: str | None = None


def parse_json(body: bytes) -> dict:
    """The body as a JSON object, or a 400 saying why not."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _num(d: dict, name: str, default, lo=None, hi=None, *, lo_open=False, integer=False):
    v = d.get(name)
    if v is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds):
        want = "an integer" if integer else "a number"
        raise ApiError(400, f"{name} must be {want}, found {v!r}", name)
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    if low_bad or (hi is not None and v > hi):
        left = "(" if lo_open else "["
        raise ApiError(400, f"{name} must be in {left}{lo}, {hi}], found {v!r}", name)
    return v


def _sampling(d: dict) -> Sampling:
    return Sampling(
        temperature=float(_num(d, "temperature", 1.0, 0, 2)),
        top_p=float(_num(d, "top_p", 1.0, 0, 1, lo_open=True)),
        top_k=_num(d, "top_k", None, 1, None, integer=True),
        min_p=_num(d, "min_p", None, 0, 1),
        typical_p=_num(d, "typical_p", None, 0, 1, lo_open=True),
        repetition_penalty=_num(d, "repetition_penalty", None, 0, None, lo_open=True),
        presence_penalty=float(_num(d, "presence_penalty", 0.0, -2, 2)),
        frequency_penalty=float(_num(d, "frequency_penalty", 0.0, -2, 2)),
        seed=_num(d, "seed", None, integer=True),
    )


def _stop(d: dict) -> list[str]:
    stop = d.get("stop")
    if stop is None:
        return []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of up to 4 strings", "stop")
    return [s for s in stop if s]


def _messages(d: dict) -> list[dict]:
    msgs = d.get("messages")
    if msgs is None:
        raise ApiError(400, "missing required field 'messages'", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"{where} must be an object with a string 'role'", where)
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text parts carry text here
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if not all(isinstance(t, str) for t in parts):
                raise ApiError(400, f"{where}.content: parts must be text parts", where)
            content = "".join(parts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string or text parts", where)
        out.append({"role": m["role"], "content": content})
    return out


def _prompts(d: dict) -> list:
    p = d.get("prompt")
    if p is None:
        raise ApiError(400, "missing required field 'prompt'", "prompt")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(isinstance(x, str) for x in p):
            return list(p)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            return [list(p)]
        if all(isinstance(x, list) and all(isinstance(i, int) for i in x) for x in p):
            return [list(x) for x in p]
    raise ApiError(
        400, "prompt must be a string, a list of strings, or a list of token id lists", "prompt"
    )


def parse_request(d: dict, *, chat: bool) -> GenRequest:
    """A checked :class:`GenRequest` from the JSON object ``d``."""
    model = d.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, found {model!r}", "model")
    name = "max_completion_tokens" if d.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _num(d, name, None, 0, None, integer=True)
    opts = d.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    if chat:
        want_lp = d.get("logprobs") or False
        if not isinstance(want_lp, bool):
            raise ApiError(400, f"logprobs must be true or false, found {want_lp!r}", "logprobs")
        top = _num(d, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)
    else:  # completions: logprobs is the number of alternatives per token
        top = _num(d, "logprobs", None, 0, 5, integer=True)
        want_lp, top = top is not None, top or 0
    for flag in ("stream", "echo"):
        if d.get(flag) is not None and not isinstance(d.get(flag), bool):
            raise ApiError(400, f"{flag} must be true or false, found {d.get(flag)!r}", flag)
    return GenRequest(
        chat=chat,
        model=model,
        prompts=[_messages(d)] if chat else _prompts(d),
        max_tokens=max_tokens,
        sampling=_sampling(d),
        n=_num(d, "n", 1, 1, MAX_N, integer=True),
        stop=_stop(d),
        stream=bool(d.get("stream")),
        include_usage=bool(opts.get("include_usage")),
        logprobs=want_lp,
        top_logprobs=top,
        echo=bool(d.get("echo")) and not chat,
        user=d.get("user") if isinstance(d.get("user"), str) else None,
    )

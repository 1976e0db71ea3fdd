"""The HTTP routes (Starlette): ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions``, ``/health`` and ``/metrics``.

Every request is checked for the bearer key (constant-time) and a body size limit before
anything else; every failure is answered as OpenAI shapes errors. One log line per request
gives its id, tokens in and out, time to first token and total time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from llmcore.errors import LLMCoreError
from llmcore.serve.engine import Engine
from llmcore.serve.prepare import build_sequences
from llmcore.serve.responses import Choices
from llmcore.serve.schemas import ApiError, GenRequest, parse_json, parse_request

log = logging.getLogger("llmcore.serve")

#: the largest request body accepted (bytes)
MAX_BODY = 1 << 20
#: seconds between checks that a non-streaming client is still connected
DISCONNECT_POLL = 0.25


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


class Server:
    """The routes around one :class:`~llmcore.serve.engine.Engine`."""

    def __init__(self, engine: Engine, *, api_key: str | None = None, max_body: int = MAX_BODY):
        self.engine, self.api_key, self.max_body = engine, api_key, max_body
        self.served = engine.served

    def app(self) -> Starlette:
        routes = [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.add_exception_handler(404, self._not_found)
        app.add_exception_handler(405, self._not_allowed)
        return app

    async def _not_found(self, request, exc):
        return _error(ApiError(404, f"no route {request.url.path}"))

    async def _not_allowed(self, request, exc):
        return _error(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        want = f"Bearer {self.api_key}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')")

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise ApiError(413, f"the request body is over {self.max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise ApiError(413, f"the request body is over {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- routes ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as exc:
            return _error(exc)
        ok = self.engine.error is None
        return JSONResponse({"status": "ok" if ok else "error"}, status_code=200 if ok else 500)

    async def metrics(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as exc:
            return _error(exc)
        return PlainTextResponse(self.engine.metrics.render())

    async def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as exc:
            return _error(exc)
        card = {"id": self.served.name, "object": "model", "created": 0, "owned_by": "llmcore"}
        return JSONResponse({"object": "list", "data": [card]})

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        t0 = time.perf_counter()
        try:
            self._authorize(request)
            req = parse_request(parse_json(await self._body(request)), chat=chat)
            if req.model is not None and req.model != self.served.name:
                raise ApiError(
                    404, f"model {req.model!r} does not exist; this server serves "
                    f"{self.served.name!r}", "model"
                )  # fmt: skip
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()

            def emit(delta) -> None:  # called from the engine's thread
                loop.call_soon_threadsafe(queue.put_nowait, delta)

            seqs = build_sequences(self.served, req, emit, self.engine.context)
            self.engine.submit(seqs)
        except ApiError as exc:
            return _error(exc)
        except LLMCoreError as exc:  # a sampler rejecting its value, a prompt it cannot encode
            return _error(ApiError(400, str(exc)))
        tok = self.served.tokenizer
        prompts = [(s.prompt, _prompt_text(tok, req, s.prompt)) for s in seqs]
        choices = Choices(chat, self.served.name, tok, req.n, prompts)
        run = _Run(self, req, seqs, choices, queue, t0, request)
        if req.stream:
            return StreamingResponse(run.stream(), media_type="text/event-stream")
        return await run.whole()


def _prompt_text(tok, req: GenRequest, ids: list[int]) -> str:
    return tok.decode(ids) if req.echo else ""


class _Run:
    """One request in flight: its sequences, what they produced, and how it is answered."""

    def __init__(self, server: Server, req: GenRequest, seqs, choices: Choices, queue, t0, request):
        self.server, self.req, self.seqs, self.choices = server, req, seqs, choices
        self.queue, self.t0, self.request = queue, t0, request

    def _usage(self) -> dict:
        return self.choices.usage([s.generated for s in self.seqs])

    async def whole(self) -> Response:
        try:
            while not self.choices.done:
                try:
                    self.choices.add(await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL))
                except asyncio.TimeoutError:
                    if await self.request.is_disconnected():  # nobody waits for the answer
                        return Response(status_code=499)
        finally:
            self._end()
        return JSONResponse(
            self.choices.body(self.req.logprobs, self.req.echo, [s.generated for s in self.seqs])
        )

    async def stream(self):
        first = [True] * len(self.seqs)
        try:
            while not self.choices.done:
                d = await self.queue.get()
                self.choices.add(d)
                if not d.tokens and d.finish_reason is None:
                    continue
                chunk = self.choices.chunk(d, self.req.logprobs, first[d.index], self.req.echo)
                first[d.index] = False
                yield f"data: {json.dumps(chunk)}\n\n"
            if self.req.include_usage:
                yield f"data: {json.dumps(self.choices.wrap([], self._usage()))}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # also when the client went away: the engine frees the slots at its next step
            self._end()

    def _end(self) -> None:
        for s in self.seqs:
            s.cancel()
        firsts = [s.t_first for s in self.seqs if s.t_first is not None]
        ttft = min(firsts) - self.t0 if firsts else None
        self.server.engine.metrics.observe_request(ttft)
        u = self._usage()
        log.info(
            "%s prompt_tokens=%d completion_tokens=%d ttft=%s total=%.3fs",
            self.choices.id,
            u["prompt_tokens"],
            u["completion_tokens"],
            "-" if ttft is None else f"{ttft:.3f}s",
            time.perf_counter() - self.t0,
        )


class Running:
    """A server on a thread (tests, benchmarks): ``url``, and ``stop()`` that always ends it."""

    def __init__(self, engine: Engine, host: str, port: int, **server_kw) -> None:
        import threading

        import uvicorn

        self.engine = engine
        app = Server(engine, **server_kw).app()
        config = uvicorn.Config(app, host=host, port=port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="llmcore-http", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 30.0) -> Running:
        """Start serving and wait until the socket listens."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.engine.stop()

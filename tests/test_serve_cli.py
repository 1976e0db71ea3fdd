"""``llmcore serve`` from the command line on a saved checkpoint, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from llmcore import generate, load_checkpoint  # noqa: E402
from llmcore.checkpoint import save_checkpoint  # noqa: E402
from llmcore.cli import build_parser  # noqa: E402

from .serve_helpers import char_served, free_port  # noqa: E402


def test_serve_flags_and_defaults():
    args = build_parser().parse_args(["serve", "some/run"])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, None)
    args = build_parser().parse_args(
        ["serve", "r", "--port", "9", "--api-key", "k", "--max-batch", "4", "--max-queue", "7"]
    )
    assert (args.port, args.api_key, args.max_batch, args.max_queue) == (9, "k", 4, 7)


@pytest.mark.parametrize(("flags", "reuse"), [([], True), (["--no-prefix-cache"], False)])
def test_serve_passes_the_prefix_cache_choice_to_the_engine(monkeypatch, flags, reuse):
    import llmcore.serve.engine as engine_module
    import llmcore.serve.prepare as prepare_module

    seen = {}

    class Stop(Exception):
        pass

    def fake_engine(served, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(engine_module, "Engine", fake_engine)
    monkeypatch.setattr(prepare_module, "load_served", lambda model, device: object())
    args = build_parser().parse_args(["serve", "some/run", *flags])
    with pytest.raises(Stop):
        args.func(args)
    assert seen["prefix_cache"] is reuse


def test_serve_a_saved_checkpoint(tmp_path):
    served = char_served()
    save_checkpoint(tmp_path / "run", 1, served.model, served.config, served.tokenizer)
    port = free_port()
    cmd = [sys.executable, "-m", "llmcore", "serve", str(tmp_path / "run"), "--port", str(port)]
    cmd += ["--api-key", "k"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ}, text=True
    )
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", headers=auth).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the server did not start: " + (proc.stdout.read() or ""))
            time.sleep(0.2)
        name = httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["id"]
        body = {"model": name, "prompt": "hello", "max_tokens": 8, "temperature": 0}
        text = httpx.post(url + "/v1/completions", json=body, headers=auth).json()
        loaded = load_checkpoint(tmp_path / "run")
        ref = generate(loaded.model, loaded.tokenizer, "hello", max_new_tokens=8)[0].text
        assert text["choices"][0]["text"] == ref
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "prompt_tokens=5 completion_tokens=8" in out  # the request's log line

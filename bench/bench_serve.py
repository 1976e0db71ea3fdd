"""``llmcore serve`` under load, loopback only, bounded in count and time.

The model is a GGUF file (``--model F``, or a random-weight GPT-2 of ``bench_generate.py``'s
6-layer, 384-wide shape with GPT-2's own tokenizer, written with llmcore's GGUF writer).
Each server runs in a process of its own (``llmcore serve F``, and with ``--peer llamacpp``
llama.cpp's OpenAI server ``llama_cpp.server`` on the same file, from the venv of
``bench/llamacpp_peer.py``); the clients are this process's asyncio tasks. Phases, all
streaming completions at temperature 0:

1. throughput: the same text prompts (one per request, different from each other) sent by
   1 client, then by 16 concurrent clients; aggregate generated tokens/s (tokens as each
   server's ``usage`` counts them), p50/p99 time to first token, and the 16-vs-1 ratio,
   for llmcore and then for the peer;
2. soak (llmcore only): ``--requests`` (1,000) requests of mixed prompt and answer lengths
   from 32 concurrent clients, about one in ten hanging up mid-stream. Every finished
   stream is checked: SSE lines that parse, ``[DONE]`` at the end, a finish reason, usage
   within ``max_tokens``, and the same text as every other finished stream of the same
   prompt (greedy). (U+FFFD is no sign of garbling here: random weights emit byte
   fragments of GPT-2's vocabulary that form no character, which decode as U+FFFD.)
   Lost and garbled requests are counted, the server's RSS read after warm-up and at the
   end, and its KV slots in use once the load is gone. The soak
   model is ``--soak-shape`` (default ``baby``: 4 layers, 128 wide, GPT-2's vocabulary),
   so that 1,000 requests fit in minutes on two cores; ``--soak-shape 6l384`` soaks the
   throughput model instead.

The peer serves one request at a time: llama-cpp-python's server holds its one model
behind a lock (no batching across requests), and by default a new request cuts off the
stream in flight (``interrupt_requests``), which the bench turns off so that requests
queue instead. Every phase stops at ``--time-limit`` seconds in all. On a machine other
work keeps busy, ``--threads 1`` keeps both servers off threads that wait for each other.

    python bench/bench_serve.py --peer llamacpp      # full size (minutes)
    python bench/bench_serve.py --smoke              # seconds: a tiny model, few requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "baby": ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=1024"],
    "6l384": ["model.n_layer=6", "model.n_head=6", "model.n_embd=384", "model.block_size=1024"],
}
GPT2_TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "gpt2"
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "it",
    "an",
    "be",
    "this",
]


def write_gguf(shape: str, out: Path, pre: str | None = None) -> Path:
    """A random-weight GPT-2 (biases, tied head, 50,304 rows) of ``shape`` with GPT-2's
    tokenizer, as f16 GGUF. Weights are spread wide (std 0.3) so that greedy choices are
    clear: a few rounding bits never flip a token. ``pre`` renames GPT-2's pre-tokenizer
    in ``tokenizer.ggml.pre``: llama.cpp calls it ``gpt-2`` where llmcore writes ``gpt2``
    (the same regex), so the peer gets a copy with its own name for it."""
    import torch

    import llmcore
    from llmcore import build_model
    from llmcore.config import load_config
    from llmcore.gguf import writer

    cfg = load_config("shakespeare-char", [*SHAPES[shape], "model.bias=true"])
    cfg.model.init_std = 0.3
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=50304).eval()
    names = dict(writer.PRE_NAMES)
    if pre:
        writer.PRE_NAMES["gpt2"] = pre
    try:
        return writer.save_gguf(
            model, llmcore.load_tokenizer(GPT2_TOKENIZER), out, "f16", name=shape
        )
    finally:
        writer.PRE_NAMES.update(names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free 127.0.0.1 port, stopped on exit."""

    def __init__(self, kind: str, model: Path, threads: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if kind == "llmcore":
            cmd = [sys.executable, "-m", "llmcore", "serve", str(model), "--port", str(self.port)]
            cmd += ["--max-batch", "32", "--max-queue", "4096"]
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            if threads:
                env["OMP_NUM_THREADS"] = str(threads)
        else:
            from bench.llamacpp_peer import peer_python

            cmd = [str(peer_python()), "-m", "llama_cpp.server", "--model", str(model)]
            cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024"]
            cmd += ["--n_threads", str(threads or os.cpu_count() or 2)]
            # a new request must queue behind a running stream, not cut it off
            cmd += ["--interrupt_requests", "False"]
        self.kind, self.model_name = kind, None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> Server:
        import httpx

        for _ in range(1200):
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"{self.kind} server exited:\n{self.log.read()[-3000:].decode()}")
            try:
                r = httpx.get(self.url + "/v1/models", timeout=2)
                if r.status_code == 200:
                    self.model_name = r.json()["data"][0]["id"]
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"{self.kind} server did not come up")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def metric(self, name: str) -> float:
        import httpx

        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


async def one_stream(client, server, prompt, max_tokens, hang_up_after=None):
    """Stream one completion: ``(status, ttft, tokens, text)`` with status
    ok|hung_up|lost|garbled."""
    body = {"model": server.model_name, "prompt": prompt, "max_tokens": max_tokens}
    body |= {"temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0, ttft, text, usage, done, chunks, reason = time.perf_counter(), None, "", None, 0, 0, None
    try:
        async with client.stream("POST", server.url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return "lost", None, 0, ""
            async for line in r.aiter_lines():
                if not line:
                    continue
                if not line.startswith("data: ") or done:
                    return "garbled", ttft, 0, text
                if line[6:] == "[DONE]":
                    done = 1
                    continue
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
                for c in chunk.get("choices") or ():
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text += c.get("text") or ""
                    reason = c.get("finish_reason") or reason
                    chunks += 1
                if hang_up_after is not None and chunks >= hang_up_after:
                    return "hung_up", ttft, 0, text
    except Exception:  # a broken connection or body: the request was lost
        return "lost", ttft, 0, text
    # a server without usage in streams (the peer): "length" means max_tokens tokens;
    # else count chunks (at least one token each)
    n = usage["completion_tokens"] if usage else max_tokens if reason == "length" else chunks
    if not done or reason not in ("stop", "length"):
        return "lost", ttft, n, text
    if not 0 < n <= max_tokens:
        return "garbled", ttft, n, text
    return "ok", ttft, n, text


async def run_clients(server, jobs, concurrency, deadline):
    """Run ``jobs`` (prompt, max_tokens, hang_up_after) from ``concurrency`` clients;
    returns the results in job order and the seconds taken."""
    import httpx

    results: list = [None] * len(jobs)
    todo = list(reversed(range(len(jobs))))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker():
            while todo and time.monotonic() < deadline:
                i = todo.pop()
                results[i] = await one_stream(client, server, *jobs[i])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None], time.perf_counter() - t0


def quantile(xs, q):
    xs = sorted(x for x in xs if x is not None)
    return round(xs[min(int(q * len(xs)), len(xs) - 1)], 4) if xs else None


def throughput(server, prompts, tokens, deadline) -> dict:
    """Tokens/s and time to first token at 1 and 16 clients (warm-up first)."""
    out = {}
    warm = [(p, 4, None) for p in prompts[:4]]
    asyncio.run(run_clients(server, warm, 4, deadline))
    for conc, count in ((1, 4), (16, 32)):
        jobs = [(p, tokens, None) for p in prompts[:count]]
        res, secs = asyncio.run(run_clients(server, jobs, conc, deadline))
        ok = [r for r in res if r[0] == "ok"]
        out[f"clients_{conc}"] = {
            "requests": len(res),
            "ok": len(ok),
            "tokens": sum(r[2] for r in ok),
            "seconds": round(secs, 2),
            "tokens_per_s": round(sum(r[2] for r in ok) / secs, 2),
            "ttft_p50": quantile([r[1] for r in ok], 0.5),
            "ttft_p99": quantile([r[1] for r in ok], 0.99),
        }
    out["speedup_16_vs_1"] = round(
        out["clients_16"]["tokens_per_s"] / max(out["clients_1"]["tokens_per_s"], 1e-9), 2
    )
    return out


def soak_jobs(n: int, rng: random.Random, block: int) -> list:
    """``n`` (prompt ids, max_tokens, hang_up_after) of mixed lengths; 50 distinct
    prompt/length pairs repeat, so that every answer can be compared with its twins."""
    pool = []
    for _ in range(50):
        n_prompt = rng.choice([4, 16, 64, 256, min(600, block // 2)])
        n_new = rng.choice([1, 8, 32, 128])
        pool.append(([rng.randrange(50257) for _ in range(n_prompt)], n_new))
    jobs = []
    for i in range(n):
        prompt, n_new = pool[rng.randrange(len(pool))]
        hang = rng.randint(1, 4) if i % 10 == 3 and n_new > 4 else None
        jobs.append((prompt, n_new, hang))
    return jobs


def soak(server, n: int, deadline, rng: random.Random) -> dict:
    """The soak phase (see the module docstring); RSS is read after a warm-up that sends
    every distinct prompt once, then after each quarter of the requests."""
    jobs = soak_jobs(n, rng, 1024)
    pool = list({(tuple(p), k): (p, k, None) for p, k, _ in jobs}.values())
    asyncio.run(run_clients(server, pool, 32, deadline))
    rss = [round(server.rss_mib(), 1)]
    res, secs = [], 0.0
    quarter = max(1, -(-n // 4))
    for i in range(0, n, quarter):
        r, t = asyncio.run(run_clients(server, jobs[i : i + quarter], 32, deadline))
        res, secs = res + r, secs + t
        rss.append(round(server.rss_mib(), 1))
    texts: dict = {}
    for (prompt, n_new, _), r in zip(jobs, res):
        if r[0] == "ok":
            texts.setdefault((tuple(prompt), n_new), set()).add(r[3])
    twins = sum(len(t) - 1 for t in texts.values())  # differing answers to one prompt
    counts = {k: sum(1 for r in res if r[0] == k) for k in ("ok", "hung_up", "lost", "garbled")}
    counts["garbled"] += twins
    for _ in range(100):  # the hung-up rows leave within a step or so
        if server.metric("llmcore_kv_slots_in_use") == 0:
            break
        time.sleep(0.1)
    return {
        **counts,
        "answers_differing_from_their_twins": twins,
        "sent": len(res),
        "planned": n,
        "seconds": round(secs, 1),
        "tokens_per_s": round(sum(r[2] for r in res if r[0] == "ok") / secs, 1),
        "ttft_p50": quantile([r[1] for r in res if r[0] == "ok"], 0.5),
        "ttft_p99": quantile([r[1] for r in res if r[0] == "ok"], 0.99),
        "rss_mib_after_warmup_then_each_quarter": rss,
        "kv_slots_in_use_after": server.metric("llmcore_kv_slots_in_use"),
        "prefix_cache_reused_tokens": server.metric("llmcore_prefix_cache_reused_tokens_total"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a GGUF file (default: a random 6l384)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="6l384")
    ap.add_argument("--soak-shape", choices=sorted(SHAPES), default="baby")
    ap.add_argument("--peer", choices=["none", "llamacpp"], default="none")
    ap.add_argument("--requests", type=int, default=1000, help="soak requests (0: no soak)")
    ap.add_argument("--tokens", type=int, default=64, help="answer length in phase 1")
    ap.add_argument("--threads", type=int, default=None, help="threads of each server")
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds, all phases")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 24 soak requests")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.shape, args.requests, args.tokens = "baby", 24, 16
    deadline = time.monotonic() + args.time_limit
    rng = random.Random(0)
    prompts = [f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(12)) for i in range(32)]
    out: dict = {"shape": args.model or args.shape, "threads": args.threads or os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else write_gguf(args.shape, Path(tmp) / "m.gguf")
        files = {"llmcore": model}
        if args.peer == "llamacpp":
            files["llamacpp"] = (
                model
                if args.model
                else write_gguf(args.shape, Path(tmp) / "peer.gguf", pre="gpt-2")
            )
        for kind, file in files.items():
            with Server(kind, file, args.threads) as server:
                out[kind] = throughput(server, prompts, args.tokens, deadline)
        if args.peer == "llamacpp":
            out["llmcore_vs_peer_at_16"] = round(
                out["llmcore"]["clients_16"]["tokens_per_s"]
                / max(out["llamacpp"]["clients_16"]["tokens_per_s"], 1e-9),
                2,
            )
        if args.requests:
            same = args.soak_shape == args.shape and not args.model
            soak_model = model if same else write_gguf(args.soak_shape, Path(tmp) / "soak.gguf")
            out["soak_shape"] = args.shape if same else args.soak_shape
            with Server("llmcore", soak_model, args.threads) as server:
                out["soak"] = soak(server, args.requests, deadline, rng)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    s = out.get("soak")
    return 1 if s and (s["lost"] or s["garbled"] or s["kv_slots_in_use_after"]) else 0


if __name__ == "__main__":
    sys.exit(main())

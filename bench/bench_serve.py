"""``llmcore serve`` under load, loopback only, bounded in count and time.

A server runs in this process on a free 127.0.0.1 port (a random-weight model of
``bench_generate.py``'s 6-layer, 384-wide shape by default, or ``--model PATH``: anything
``llmcore serve`` loads). Three phases, all streaming completions:

1. throughput: aggregate tokens/s of 1 client, then of 16 concurrent clients (same
   requests), the ratio, and p50/p99 time to first token at 16;
2. soak: ``--requests`` (1,000) requests of mixed prompt and answer lengths from 32
   concurrent clients, about one in ten hanging up mid-stream; every finished stream is
   checked (parses, ends with ``[DONE]``, as many tokens as its usage says): lost and
   garbled requests are counted;
3. memory: this process's RSS after warm-up and at the end.

Every phase stops at ``--time-limit`` seconds in all. Prompts are token ids, so the
tokenizer does not enter the timing. The llama.cpp peer of the issue is not run here.

    python bench/bench_serve.py                       # full size (minutes)
    python bench/bench_serve.py --smoke               # seconds: a tiny model, few requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcore import build_model  # noqa: E402
from llmcore.config import load_config  # noqa: E402
from llmcore.serve import Engine, Served  # noqa: E402
from llmcore.serve.app import Running  # noqa: E402

SHAPES = {
    "baby": ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=512"],
    "6l384": ["model.n_layer=6", "model.n_head=6", "model.n_embd=384", "model.block_size=1024"],
}


class IdTokenizer:
    """Ids stand for themselves; each decodes to one ASCII character."""

    eot_id = None

    def encode(self, text: str, allowed_special=()) -> list[int]:
        return [ord(c) % 128 for c in text]

    def decode_bytes(self, ids) -> bytes:
        return bytes(32 + i % 90 for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode()


def random_served(shape: str, vocab: int) -> Served:
    cfg = load_config("shakespeare-char", SHAPES[shape])
    torch.manual_seed(0)
    return Served(shape, build_model(cfg, vocab_size=vocab).eval(), IdTokenizer(), cfg)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stream(client, url, model, prompt, max_tokens, hang_up_after=None):
    """Stream one completion; returns (status, ttft, tokens) with status ok|hung_up|lost|garbled."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    t0, ttft, text, usage, done, chunks = time.perf_counter(), None, "", None, False, 0
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return "lost", None, 0
            async for line in r.aiter_lines():
                if not line:
                    continue
                if not line.startswith("data: "):
                    return "garbled", ttft, 0
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk["choices"]:
                    if ttft is None and c["text"]:
                        ttft = time.perf_counter() - t0
                    text += c["text"]
                chunks += 1
                if hang_up_after is not None and chunks >= hang_up_after:
                    return "hung_up", ttft, len(text)
    except Exception:  # a broken connection or body: the request was lost
        return "lost", ttft, 0
    if not done or usage is None:
        return "lost", ttft, len(text)
    if len(text) != usage["completion_tokens"] or "\ufffd" in text:
        return "garbled", ttft, len(text)
    return "ok", ttft, len(text)


async def clients(url, model, jobs, concurrency, deadline):
    """Run ``jobs`` (prompt, max_tokens, hang_up_after) from ``concurrency`` clients."""
    import httpx

    results, queue = [], list(reversed(jobs))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker():
            while queue and time.monotonic() < deadline:
                results.append(await one_stream(client, url, model, *queue.pop()))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - t0


def quantile(xs, q):
    xs = sorted(x for x in xs if x is not None)
    return xs[min(int(q * len(xs)), len(xs) - 1)] if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a model llmcore serve loads (default: random)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="6l384")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=64, help="answer length in phase 1")
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds, all phases")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 24 requests")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.smoke:
        args.shape, args.requests, args.tokens = "baby", 24, 16
    deadline = time.monotonic() + args.time_limit
    if args.model:
        from llmcore.serve.prepare import load_served

        served = load_served(args.model)
    else:
        served = random_served(args.shape, 50304 if args.shape == "6l384" else 65)
    vocab = served.model.config.vocab_size
    engine = Engine(served, max_batch=32, max_queue=4096).start()
    server = Running(engine, "127.0.0.1", free_port()).start()
    rng = random.Random(0)
    out: dict = {"model": args.model or args.shape, "torch_threads": torch.get_num_threads()}
    try:
        prompt = [rng.randrange(vocab) for _ in range(16)]
        warm = [(prompt, 8, None)] * 4
        asyncio.run(clients(server.url, served.name, warm, 4, deadline))
        for conc in (1, 16):
            jobs = [(prompt, args.tokens, None)] * (conc * 2)
            res, secs = asyncio.run(clients(server.url, served.name, jobs, conc, deadline))
            toks = sum(n for status, _, n in res if status == "ok")
            out[f"tokens_per_s_{conc}"] = toks / secs
            out[f"ttft_p50_{conc}"] = quantile([t for _, t, _ in res], 0.5)
            out[f"ttft_p99_{conc}"] = quantile([t for _, t, _ in res], 0.99)
        out["speedup_16_vs_1"] = out["tokens_per_s_16"] / max(out["tokens_per_s_1"], 1e-9)
        out["rss_mib_after_warmup"] = rss_mib()
        block = served.model.config.block_size
        jobs = []
        for i in range(args.requests):
            n_prompt = rng.choice([4, 16, 64, 256, min(600, block // 2)])
            n_new = rng.choice([1, 8, 32, 128])
            hang = rng.randint(1, 4) if i % 10 == 3 else None
            jobs.append(([rng.randrange(vocab) for _ in range(n_prompt)], n_new, hang))
        res, secs = asyncio.run(clients(server.url, served.name, jobs, 32, deadline))
        counts = {
            k: sum(1 for s, _, _ in res if s == k) for k in ("ok", "hung_up", "lost", "garbled")
        }
        out["soak"] = {
            **counts,
            "sent": len(res),
            "planned": len(jobs),
            "seconds": secs,
            "tokens_per_s": sum(n for s, _, n in res if s == "ok") / secs,
            "ttft_p50": quantile([t for s, t, _ in res if s == "ok"], 0.5),
            "ttft_p99": quantile([t for s, t, _ in res if s == "ok"], 0.99),
        }
        time.sleep(0.5)  # let hung-up rows leave
        out["slots_in_use_after"] = engine.cache.used
        out["rss_mib_end"] = rss_mib()
    finally:
        server.stop()
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    bad = out["soak"]["lost"] + out["soak"]["garbled"]
    return 1 if bad or out["slots_in_use_after"] else 0


if __name__ == "__main__":
    sys.exit(main())

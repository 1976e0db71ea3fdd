"""Tracing benchmark: ``llmcore.trace`` of a 256-token text against a plain forward pass of
the same model (the 6-layer, 384-wide shakespeare-char shape), interleaved repeat by repeat
so a busy neighbour slows both alike; figures are medians. The target is a ratio <= 3.

    python bench/bench_inspect.py                 # 256 tokens, every layer and head
    python bench/bench_inspect.py --tokens 32 --repeats 2 --n-layer 2 --n-embd 64   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmcore import build_model, trace
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.config import Component, ModelConfig

ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--attention", default="native")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = CharTokenizer(sorted(set(ALPHABET)))
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=max(256, args.tokens),
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        attention=Component(args.attention),
    )
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    text = "".join(ALPHABET[i] for i in torch.randint(len(ALPHABET), (args.tokens,), generator=g))
    ids = torch.tensor([tok.encode(text)])

    def plain() -> None:
        with torch.no_grad():
            model(ids)

    def traced() -> None:
        trace(model, tok, text)

    plain(), traced()  # warm up
    times: dict[str, list[float]] = {"forward": [], "trace": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", plain), ("trace", traced)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    fwd, tr = (statistics.median(times[k]) for k in ("forward", "trace"))
    print(
        f"{args.tokens} tokens, {args.n_layer} layers x {args.n_head} heads, {args.n_embd} wide, "
        f"attention {args.attention}, {torch.get_num_threads()} threads"
    )
    print(f"forward {fwd * 1e3:8.1f} ms   trace {tr * 1e3:8.1f} ms   ratio {tr / fwd:.2f}x")


if __name__ == "__main__":
    main()

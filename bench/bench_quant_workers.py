"""The two halves of bench_quant.py's timing runs, one engine per child process.

    python bench/bench_quant_workers.py llmcore  TASK FILE THREADS   # in llmcore's venv
    PEER/bin/python bench/bench_quant_workers.py llamacpp TASK FILE THREADS

TASK is ``decode`` (batch 1: a 32-token prompt, then 128 new tokens, greedy), ``prefill``
(a 512-token prompt), ``batch8`` (8 prompts of 32 tokens, 32 new tokens each) or ``ppl``
(perplexity of the token ids in the JSON file named by ``LLMCORE_BENCH_IDS``, in windows of
``LLMCORE_BENCH_CTX`` tokens). Each prints one JSON line: tokens/s of the timed part (or
the perplexity) and the peak resident memory. The llama.cpp half imports only llama_cpp and
numpy, so it runs in the peer's own venv. Token ids are fixed pseudo-random ones, the same
for both engines; generation never stops early (no end-of-text, no stop strings).
"""

from __future__ import annotations

import json
import os
import sys
import time

from peak_rss import peak_rss_mb  # noqa: E402  (bench/, run as a script)

PROMPT, NEW, LONG, BATCH, BATCH_NEW = 32, 128, 512, 8, 32
SMOKE = os.environ.get("LLMCORE_BENCH_SMOKE") == "1"
if SMOKE:
    PROMPT, NEW, LONG, BATCH, BATCH_NEW = 8, 8, 32, 2, 4


def prompt_ids(n: int, row: int = 0, vocab: int = 256) -> list[int]:
    """``n`` fixed ids in ``[3, vocab)`` (a linear congruential sequence, engine-free)."""
    out, x = [], 12345 + 7919 * row
    for _ in range(n):
        x = (1103515245 * x + 12345) % (1 << 31)
        out.append(3 + x % (vocab - 3))
    return out


def llmcore_task(task: str, path: str, threads: int) -> dict:
    import torch

    import llmcore
    from llmcore.generation import generate, stream

    torch.set_num_threads(threads)
    loaded = llmcore.load(path, quantized=path.endswith(".gguf"))  # a run: the dense model
    model, tok = loaded.model, loaded.tokenizer
    vocab = min(model.config.vocab_size, 256)
    greedy = llmcore.create("decoder", "greedy")
    kw = dict(decoder=greedy, samplers=[], eot=False)
    if task == "ppl":
        return {"ppl": llmcore_ppl(model), "peak_rss_mb": peak_rss_mb()}
    if task == "prefill":
        ids = prompt_ids(LONG, vocab=vocab)
        generate(model, tok, [ids[:16]], max_new_tokens=1, **kw)  # warm-up
        t = time.perf_counter()
        generate(model, tok, [ids], max_new_tokens=1, **kw)
        return {"tokens_per_s": LONG / (time.perf_counter() - t), "peak_rss_mb": peak_rss_mb()}
    if task == "batch8":
        prompts = [prompt_ids(PROMPT, r, vocab) for r in range(BATCH)]
        generate(model, tok, prompts, max_new_tokens=2, **kw)  # warm-up
        t = time.perf_counter()
        generate(model, tok, prompts, max_new_tokens=1, **kw)
        t1 = time.perf_counter()
        generate(model, tok, prompts, max_new_tokens=BATCH_NEW + 1, **kw)
        dt = (time.perf_counter() - t1) - (t1 - t)  # minus the prefill and first token
        return {"tokens_per_s": BATCH * BATCH_NEW / dt, "peak_rss_mb": peak_rss_mb()}
    ids = prompt_ids(PROMPT, vocab=vocab)
    list(stream(model, tok, ids, max_new_tokens=4, **kw))  # warm-up
    stamps, got = [], []
    for token in stream(model, tok, ids, max_new_tokens=NEW + 1, **kw):
        stamps.append(time.perf_counter())
        got.append(token.id)
    return {"tokens_per_s": NEW / (stamps[-1] - stamps[0]), "peak_rss_mb": peak_rss_mb(),
            "ids": got[:NEW]}  # fmt: skip


def _window_ids() -> tuple[list[int], int]:
    with open(os.environ["LLMCORE_BENCH_IDS"]) as f:
        return json.load(f), int(os.environ["LLMCORE_BENCH_CTX"])


def llmcore_ppl(model) -> float:
    import math

    import torch
    import torch.nn.functional as F

    ids, ctx = _window_ids()
    nll, n = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(ids) - 1, ctx):
            w = torch.tensor(ids[s : s + ctx + 1])
            if len(w) < 2:
                break
            logits = model(w[None, :-1])[0].float()
            nll += float(F.cross_entropy(logits, w[1:], reduction="sum"))
            n += len(w) - 1
    return math.exp(nll / n)


# -- llama.cpp ------------------------------------------------------------------------------------


def llamacpp_model(path: str, threads: int, n_ctx: int, logits_all: bool = False):
    import llama_cpp
    import llama_cpp.llama_cpp as C

    default = C.llama_model_default_params

    def params():  # AMX repacking segfaults in 0.3.36 on some CPUs: keep it off
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params
    return llama_cpp.Llama(
        path, n_ctx=n_ctx, n_batch=max(LONG, 512), n_ubatch=max(LONG, 512), n_threads=threads,
        n_threads_batch=threads, verbose=False, logits_all=logits_all,
    )  # fmt: skip


def _argmax_row(ptr, vocab: int) -> int:
    import ctypes

    import numpy as np

    row = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))
    return int(np.argmax(np.ctypeslib.as_array(row, shape=(vocab,))))


def llamacpp_task(task: str, path: str, threads: int) -> dict:
    if task == "ppl":
        return {"ppl": llamacpp_ppl(path, threads), "peak_rss_mb": peak_rss_mb()}
    if task == "batch8":
        return llamacpp_batch(path, threads)
    llm = llamacpp_model(path, threads, n_ctx=LONG + NEW + 16)
    vocab = min(llm.n_vocab(), 256)
    if task == "prefill":
        ids = prompt_ids(LONG, vocab=vocab)
        llm.eval(ids[:16])  # warm-up
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        return {"tokens_per_s": LONG / (time.perf_counter() - t), "peak_rss_mb": peak_rss_mb()}
    ids = prompt_ids(PROMPT, vocab=vocab)
    llm.eval(ids[:4])  # warm-up
    llm.reset()
    llm.eval(ids)
    n_vocab = llm.n_vocab()
    t = time.perf_counter()
    got = []
    for _ in range(NEW):  # greedy, as llmcore's half: the argmax of the last logits
        got.append(_argmax_row(llm._ctx.get_logits(), n_vocab))
        llm.eval([got[-1]])
    return {"tokens_per_s": NEW / (time.perf_counter() - t), "peak_rss_mb": peak_rss_mb(),
            "ids": got}  # fmt: skip


def llamacpp_batch(path: str, threads: int) -> dict:
    """BATCH sequences decoded together through llama.cpp's batch API, in a context of
    BATCH sequences of its own."""
    import llama_cpp.llama_cpp as C

    llm = llamacpp_model(path, threads, n_ctx=64)
    cp = C.llama_context_default_params()
    cp.n_ctx = BATCH * (PROMPT + BATCH_NEW + 8)
    cp.n_batch = cp.n_ubatch = BATCH * PROMPT
    cp.n_seq_max, cp.n_threads, cp.n_threads_batch = BATCH, threads, threads
    ctx = C.llama_init_from_model(llm._model.model, cp)
    vocab = llm.n_vocab()
    batch = C.llama_batch_init(BATCH * PROMPT, 0, BATCH)

    def run(items):  # items: (token, position, sequence, wants logits)
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, want) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, want
        if C.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    prompts = [prompt_ids(PROMPT, r, min(vocab, 256)) for r in range(BATCH)]
    run([(t, p, s, p == PROMPT - 1) for s, ids in enumerate(prompts) for p, t in enumerate(ids)])
    nxt = [
        _argmax_row(C.llama_get_logits_ith(ctx, s * PROMPT + PROMPT - 1), vocab)
        for s in range(BATCH)
    ]
    t = time.perf_counter()
    for step in range(BATCH_NEW):
        run([(nxt[s], PROMPT + step, s, True) for s in range(BATCH)])
        nxt = [_argmax_row(C.llama_get_logits_ith(ctx, s), vocab) for s in range(BATCH)]
    dt = time.perf_counter() - t
    C.llama_batch_free(batch)
    C.llama_free(ctx)
    return {"tokens_per_s": BATCH * BATCH_NEW / dt, "peak_rss_mb": peak_rss_mb()}


def llamacpp_ppl(path: str, threads: int) -> float:
    import math

    import numpy as np

    ids, ctx = _window_ids()
    llm = llamacpp_model(path, threads, n_ctx=max(ctx, 64), logits_all=True)
    nll, n = 0.0, 0
    for s in range(0, len(ids) - 1, ctx):
        w = ids[s : s + ctx + 1]
        if len(w) < 2:
            break
        llm.reset()
        llm.eval(w[:-1])
        logits = np.asarray(llm.scores[: len(w) - 1], dtype=np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(w) - 1), w[1:]].sum())
        n += len(w) - 1
    return math.exp(nll / n)


if __name__ == "__main__":
    engine, task, path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = llmcore_task if engine == "llmcore" else llamacpp_task
    print(json.dumps(run(task, path, threads)))

"""Decode speed: llmcore's generation engine against Hugging Face transformers' ``generate``.

The same random GPT-2 weights are loaded into HF ``GPT2LMHeadModel`` and into an llmcore
model (learned positions, LayerNorm, tanh-GELU MLP, tied head), and both decode 256 new
tokens after a 16-token prompt: greedy, and top-k 50 + top-p 0.9 sampling; batch 1 and 8;
at nanoGPT's baby shape and at a 6-layer / 384-wide / 50,304-token shape. Runs are
interleaved (ours, HF, ours, HF, ...) and medians quoted. Also measured: the per-token time
at position ~1000 against ~100, and the weight traffic per decoded token against a memory
bandwidth measured here (a large tensor sum).

    python bench/bench_generate.py                     # everything, writes JSON
    python bench/bench_generate.py --shapes baby --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcore import generate, load_hf  # noqa: E402
from llmcore.builtin.decoders import Greedy, Multinomial  # noqa: E402
from llmcore.builtin.samplers import TopK, TopP  # noqa: E402

SHAPES = {
    "baby": dict(n_layer=4, n_head=4, n_embd=128, vocab=65, block=512),
    "6l384": dict(n_layer=6, n_head=6, n_embd=384, vocab=50304, block=1024),
}


class IdTokenizer:
    """Ids stand for themselves (the bench measures decoding, not tokenization)."""

    eot_id = None

    def encode(self, text: str) -> list[int]:
        raise TypeError("the benchmark passes prompts as token ids, not text")

    def decode_bytes(self, ids) -> bytes:
        return bytes(i % 128 for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode()


def build_pair(shape: dict, seed: int = 0):
    """HF GPT2LMHeadModel with random weights, and the same weights in an llmcore model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hcfg = GPT2Config(
        vocab_size=shape["vocab"],
        n_positions=shape["block"],
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    hf = GPT2LMHeadModel(hcfg).eval()
    # The same weights through llmcore's own Hugging Face loader.
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours, _ = load_hf(tmp)
    ours.eval()
    with torch.no_grad():
        x = torch.randint(0, shape["vocab"], (1, 16))
        err = (ours(x) - hf(x).logits).abs().max().item()
    assert err < 1e-3, f"weight mapping is wrong: logits differ by {err}"
    return ours, hf


def ours_run(model, prompts: torch.Tensor, n: int, mode: str, seed: int = 0) -> list[list[int]]:
    if mode == "greedy":
        samplers, decoder = [], Greedy()
    else:
        samplers, decoder = [TopK(50), TopP(0.9)], Multinomial()
    out = generate(
        model,
        IdTokenizer(),
        prompts.tolist(),
        max_new_tokens=n,
        samplers=samplers,
        decoder=decoder,
        seed=seed,
        eot=False,
    )
    assert all(len(g.ids) == n for g in out)
    return [g.ids for g in out]


def hf_run(hf, prompts: torch.Tensor, n: int, mode: str, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    kw = dict(do_sample=False) if mode == "greedy" else dict(do_sample=True, top_k=50, top_p=0.9)
    with torch.inference_mode():
        out = hf.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=n,
            min_new_tokens=n,
            eos_token_id=None,
            pad_token_id=0,
            use_cache=True,
            **kw,
        )
    assert out.shape[1] == prompts.shape[1] + n
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed2(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all its threads). On a shared machine
    the CPU time is the steadier measure of the work done; both are reported."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bandwidth(repeats: int = 7) -> float:
    """Read bandwidth in GB/s: summing a 512 MB fp32 tensor."""
    x = torch.ones(128 * 1024 * 1024)
    x.sum()
    ts = [timed(lambda: x.sum()) for _ in range(repeats)]
    return x.numel() * 4 / statistics.median(ts) / 1e9


def weight_bytes(model) -> int:
    """Bytes read per decoded token: every parameter once (tied ones once), except the
    position table, of which one row is read."""
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or name.endswith("wpe.weight"):
            continue
        seen.add(id(p))
        n += p.numel() * p.element_size()
    return n


def per_token_at(model, hf, vocab: int, pos: int, repeats: int) -> dict:
    """Decode time per token near ``pos``: (t(prompt, 32 new) - t(prompt, 8 new)) / 24."""
    g = torch.Generator().manual_seed(pos)
    prompt = torch.randint(0, vocab, (1, pos - 8), generator=g)
    res = {"ours": [], "hf": [], "ours_cpu": [], "hf_cpu": []}
    for _ in range(repeats):
        for key, fn, m in (("ours", ours_run, model), ("hf", hf_run, hf)):
            a = timed2(partial(fn, m, prompt, 8, "greedy"))
            b = timed2(partial(fn, m, prompt, 32, "greedy"))
            res[key].append((b[0] - a[0]) / 24)
            res[key + "_cpu"].append((b[1] - a[1]) / 24)
    return {k: statistics.median(v) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="baby,6l384")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--modes", default="greedy,topk50_topp0.9")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-position-test", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generate.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    bw = bandwidth()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, ", end="")
    print(f"{torch.get_num_threads()} threads, memory read bandwidth {bw:.1f} GB/s")
    rows, extra = [], {}
    n = args.new_tokens
    for sname in args.shapes.split(","):
        shape = SHAPES[sname]
        ours, hf = build_pair(shape)
        wbytes = weight_bytes(ours)
        for batch in [int(b) for b in args.batches.split(",")]:
            prompts = torch.randint(
                0, shape["vocab"], (batch, args.prompt_tokens), generator=torch.Generator()
            )
            for mode in args.modes.split(","):
                mode_key = "greedy" if mode == "greedy" else "topkp"
                if mode_key == "greedy":  # same tokens as HF (a correctness check on the side)
                    same = (
                        ours_run(ours, prompts, 32, mode_key)
                        == hf_run(hf, prompts, 32, mode_key)[:, args.prompt_tokens :].tolist()
                    )
                else:
                    same = None
                ours_run(ours, prompts, 8, mode_key)  # warm-up
                hf_run(hf, prompts, 8, mode_key)
                t_ours, t_hf, c_ours, c_hf = [], [], [], []
                for r in range(args.repeats):
                    w, c = timed2(partial(ours_run, ours, prompts, n, mode_key, r))
                    t_ours.append(w)
                    c_ours.append(c)
                    w, c = timed2(partial(hf_run, hf, prompts, n, mode_key, r))
                    t_hf.append(w)
                    c_hf.append(c)
                mo, mh = statistics.median(t_ours), statistics.median(t_hf)
                co, ch = statistics.median(c_ours), statistics.median(c_hf)
                row = {
                    "shape": sname,
                    "batch": batch,
                    "mode": mode,
                    "ours_s": mo,
                    "hf_s": mh,
                    "ours_tok_s": batch * n / mo,
                    "hf_tok_s": batch * n / mh,
                    "ours_ms_per_step": 1000 * mo / n,
                    "hf_ms_per_step": 1000 * mh / n,
                    "speedup": mh / mo,
                    "ours_cpu_ms_per_step": 1000 * co / n,
                    "hf_cpu_ms_per_step": 1000 * ch / n,
                    "speedup_cpu_time": ch / co,
                    "ours_all_s": t_ours,
                    "hf_all_s": t_hf,
                    "ours_all_cpu_s": c_ours,
                    "hf_all_cpu_s": c_hf,
                    "greedy_tokens_equal_hf": same,
                }
                if batch == 1:
                    row["ours_weight_GB_s"] = wbytes / (mo / n) / 1e9
                    row["hf_weight_GB_s"] = wbytes / (mh / n) / 1e9
                    row["ours_weight_GB_s_cpu_time"] = wbytes / (co / n) / 1e9
                rows.append(row)
                print(
                    f"{sname:6s} B={batch} {mode:18s} llmcore {row['ours_tok_s']:8.1f} tok/s "
                    f"({row['ours_ms_per_step']:.2f} ms/step)  HF {row['hf_tok_s']:8.1f} tok/s "
                    f"({row['hf_ms_per_step']:.2f} ms/step)  x{row['speedup']:.2f}  "
                    f"[CPU time {row['ours_cpu_ms_per_step']:.2f} vs {row['hf_cpu_ms_per_step']:.2f}"
                    f" ms/step: x{row['speedup_cpu_time']:.2f}]"
                    + (f"  weights {row['ours_weight_GB_s']:.1f} GB/s" if batch == 1 else "")
                    + ("" if same is None else f"  same tokens: {same}"),
                    flush=True,
                )
        extra[sname] = {"weight_bytes": wbytes}
        if not args.no_position_test and shape["block"] >= 1024:
            p100 = per_token_at(ours, hf, shape["vocab"], 100, args.repeats)
            p1000 = per_token_at(ours, hf, shape["vocab"], 1000, args.repeats)
            extra[sname]["per_token_ms"] = {
                "ours_pos100": 1000 * p100["ours"],
                "ours_pos1000": 1000 * p1000["ours"],
                "ours_ratio": p1000["ours"] / p100["ours"],
                "hf_pos100": 1000 * p100["hf"],
                "hf_pos1000": 1000 * p1000["hf"],
                "hf_ratio": p1000["hf"] / p100["hf"],
                "ours_cpu_pos100": 1000 * p100["ours_cpu"],
                "ours_cpu_pos1000": 1000 * p1000["ours_cpu"],
                "ours_cpu_ratio": p1000["ours_cpu"] / p100["ours_cpu"],
            }
            e = extra[sname]["per_token_ms"]
            print(
                f"{sname:6s} per-token decode at position 100 / 1000: llmcore "
                f"{e['ours_pos100']:.2f} / {e['ours_pos1000']:.2f} ms (x{e['ours_ratio']:.2f}), "
                f"HF {e['hf_pos100']:.2f} / {e['hf_pos1000']:.2f} ms (x{e['hf_ratio']:.2f}); "
                f"llmcore CPU time {e['ours_cpu_pos100']:.2f} / {e['ours_cpu_pos1000']:.2f} ms "
                f"(x{e['ours_cpu_ratio']:.2f})",
                flush=True,
            )
        del ours, hf
    result = {
        "bench": "generate",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "memory_bandwidth_GB_s": bw,
        "new_tokens": n,
        "prompt_tokens": args.prompt_tokens,
        "repeats": args.repeats,
        "rows": rows,
        "shapes": extra,
        "command": " ".join(["python", "bench/bench_generate.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

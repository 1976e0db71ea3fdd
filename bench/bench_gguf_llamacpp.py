"""llama.cpp reads the GGUF files llmcore writes: tokens, logits and greedy continuations.

A tiny Llama-style llmcore model is trained for a few steps on Tiny Shakespeare with a
byte-level BPE trained the same way (``llmcore tokenizer train``, ``llmcore train``), then
written with ``llmcore convert RUN --to-gguf out.gguf --type T`` for each ``--types``. Each
file is loaded twice, by llmcore (``llmcore.load``) and by llama.cpp (llama-cpp-python, run
in its own venv: :mod:`bench.llamacpp_peer`), and the two compared on:

- the token ids of a few strings (no BOS, no special-token parsing);
- the logits of a prompt (max difference relative to llmcore's largest);
- the greedy continuation of that prompt, token by token (argmax of the logits, so no
  sampler setting can differ).

The f16 model is also written with each rotary scaling (linear, llama3, yarn; the Python
writer, as ``convert`` writes them) and compared on a prompt longer than the scaling's
original context. For f16 the ids and the continuation must be identical; for q8_0 and q4_0 the agreement is
reported (both engines read the same quantized weights, but compute their matmuls
differently: llama.cpp quantizes the activations to 8 bits for q8_0/q4_0 dot products).

    python bench/bench_gguf_llamacpp.py          # writes bench/results/gguf_llamacpp.json
    python bench/bench_gguf_llamacpp.py --iters 20 --tokens 16 --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRINGS = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "  leading spaces, tabs\tand numbers 12345 and 3.14!",
    "Ünïcödé — naïve café, 日本語 and emoji 🙂",
    "<|endoftext|> stays text",
]
PROMPT = "ROMEO:\nBut soft, what light"
# rotary scalings written as llama.cpp reads them (keys, or rope_freqs for llama3); an
# original context of 16 tokens, shorter than the prompt and continuation, so they matter
SCALINGS = {
    "linear": {"type": "linear", "factor": 4.0},
    "llama3": {
        "type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "yarn": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
}
LONG_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and"

PEER = r"""
import json, sys
import numpy as np
import llama_cpp

path, n_new = sys.argv[1], int(sys.argv[2])
job = json.loads(sys.stdin.read())
llm = llama_cpp.Llama(path, n_ctx=512, n_threads=2, verbose=False, logits_all=True)
ids = [llm.tokenize(s.encode(), add_bos=False, special=False) for s in job["strings"]]
prompt = llm.tokenize(job["prompt"].encode(), add_bos=False, special=False)
llm.reset()
llm.eval(prompt)
first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
out = []
for _ in range(n_new):  # greedy by argmax: no sampler involved
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out.append(nxt)
    llm.eval([nxt])
print(json.dumps({"ids": ids, "prompt": prompt, "logits": first.tolist(), "greedy": out,
                  "n_vocab": llm.n_vocab()}))
"""


def llmcore_cli(*args: str) -> None:
    cmd = [sys.executable, "-c", "from llmcore.cli import main; raise SystemExit(main())", *args]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def train_run(tmp: Path, iters: int) -> Path:
    """A tiny Llama (2 layers, 128 wide, GQA) trained for ``iters`` steps with a 512-token
    byte-level BPE, both on Tiny Shakespeare."""
    from llmcore.datasets import tinyshakespeare_path

    text = str(tinyshakespeare_path())
    tok, run = tmp / "tok", tmp / "run"
    llmcore_cli(
        "tokenizer", "train", text, "--vocab-size", "512", "--out", str(tok),
        "--special-token", "<|endoftext|>", "--pattern", "gpt2",
    )  # fmt: skip
    sets = {
        "tokenizer.name": "bpe",
        "tokenizer.params.path": str(tok),
        "model.n_layer": 2,
        "model.n_embd": 128,
        "model.n_head": 4,
        "model.n_kv_head": 2,
        "model.block_size": 128,
        "train.max_iters": iters,
        "train.batch_size": 8,
        "train.schedule.warmup_iters": 5,
        "train.schedule.decay_iters": iters,
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    llmcore_cli("train", "--preset", "llama-tiny", *args, "--out", str(run), "--no-progress")
    return run


def scaled_gguf(run: Path, kind: str | None, path: Path) -> Path:
    """The trained model of ``run`` with rotary scaling ``kind`` (None: as trained),
    written as f16 GGUF."""
    import copy

    import llmcore
    from llmcore.gguf import save_gguf

    loaded = llmcore.load(run)
    cfg = copy.deepcopy(loaded.config.model)
    if kind is not None:
        cfg.position.params["scaling"] = dict(SCALINGS[kind])
    model = llmcore.build_model(llmcore.Config(model=cfg))
    model.load_state_dict(loaded.model.state_dict())
    return save_gguf(model.eval(), loaded.tokenizer, path, "f16")


def ours(path: Path, n_new: int, prompt_text: str = PROMPT) -> dict:
    """llmcore's load of ``path``: the same figures as the peer's."""
    import torch

    import llmcore

    loaded = llmcore.load(path)
    tok, model = loaded.tokenizer, loaded.model
    prompt = tok.encode(prompt_text)
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0, -1].double()
        seq, out = list(prompt), []
        for _ in range(n_new):
            nxt = int(model(torch.tensor([seq]))[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
    return {
        "ids": [tok.encode(s) for s in STRINGS],
        "prompt": prompt,
        "logits": logits.tolist(),
        "greedy": out,
        "text": tok.decode(out),
    }


def peer(path: Path, n_new: int, prompt_text: str = PROMPT) -> dict:
    from bench.llamacpp_peer import peer_python

    job = json.dumps({"strings": STRINGS, "prompt": prompt_text})
    r = subprocess.run(
        [str(peer_python(build=False)), "-c", PEER, str(path), str(n_new)],
        input=job, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp could not run {path.name}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(a: dict, b: dict) -> dict:
    """llmcore's figures ``a`` against llama.cpp's ``b``."""
    n = len(a["logits"])
    scale = max(abs(x) for x in a["logits"])
    rel = max(abs(x - y) for x, y in zip(a["logits"], b["logits"][:n])) / scale
    agree = 0
    for x, y in zip(a["greedy"], b["greedy"]):
        if x != y:
            break
        agree += 1
    return {
        "token_ids_equal": a["ids"] == b["ids"],
        "strings_equal": sum(x == y for x, y in zip(a["ids"], b["ids"])),
        "prompt_ids_equal": a["prompt"] == b["prompt"],
        "logits_max_rel_diff": rel,
        "argmax_equal": max(range(n), key=a["logits"].__getitem__)
        == max(range(n), key=b["logits"].__getitem__),
        "greedy_equal": a["greedy"] == b["greedy"],
        "greedy_agreeing_prefix": agree,
        "greedy_positions_equal": sum(x == y for x, y in zip(a["greedy"], b["greedy"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--iters", type=int, default=150, help="training steps of the tiny model")
    ap.add_argument("--scalings", default="linear,llama3,yarn")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens compared")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gguf_llamacpp.json"))
    ap.add_argument("--work", help="keep the run and the files here (default: a temp folder)")
    args = ap.parse_args()
    result: dict = {
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(sys.argv[1:]),
        "strings": STRINGS,
        "prompt": PROMPT,
        "types": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        run = Path(tmp) / "run"
        if not run.exists():  # a kept run is reused
            run = train_run(Path(tmp), args.iters)
        for qtype in args.types.split(","):
            path = Path(tmp) / f"model-{qtype}.gguf"
            path.unlink(missing_ok=True)  # convert refuses to overwrite
            llmcore_cli("convert", str(run), "--to-gguf", str(path), "--type", qtype)
            a, b = ours(path, args.tokens), peer(path, args.tokens)
            cmp = compare(a, b)
            result["types"][qtype] = {**cmp, "llmcore": a, "llama_cpp": b}
            print(
                f"{qtype:5s}: token ids equal {cmp['token_ids_equal']} "
                f"({cmp['strings_equal']}/{len(STRINGS)} strings), logits rel diff "
                f"{cmp['logits_max_rel_diff']:.1e}, greedy {args.tokens} equal "
                f"{cmp['greedy_equal']} (first {cmp['greedy_agreeing_prefix']} agree, "
                f"{cmp['greedy_positions_equal']} positions equal)"
            )
            if qtype == "f16":
                print(f"       llmcore continues {PROMPT!r} with {a['text']!r}")
        result["rope_scaling"] = {}
        kinds = [k for k in args.scalings.split(",") if k]
        # how far each scaling moves the logits: llama.cpp must be much closer than that
        plain = (
            ours(scaled_gguf(run, None, Path(tmp) / "plain.gguf"), 0, LONG_PROMPT) if kinds else {}
        )
        for kind in kinds:
            path = scaled_gguf(run, kind, Path(tmp) / f"model-{kind}.gguf")
            a, b = ours(path, args.tokens, LONG_PROMPT), peer(path, args.tokens, LONG_PROMPT)
            cmp = compare(a, b)
            cmp["unscaled_logits_max_rel_diff"] = compare(a, {**plain, "greedy": []})[
                "logits_max_rel_diff"
            ]
            result["rope_scaling"][kind] = {**cmp, "scaling": SCALINGS[kind], "llmcore": a,
                                            "llama_cpp": b}  # fmt: skip
            print(
                f"f16 + {kind} rope scaling ({len(a['prompt'])}-token prompt): logits rel diff "
                f"{cmp['logits_max_rel_diff']:.1e} (the unscaled model's: "
                f"{cmp['unscaled_logits_max_rel_diff']:.1e}), greedy {args.tokens} equal "
                f"{cmp['greedy_equal']} (first {cmp['greedy_agreeing_prefix']} agree)"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

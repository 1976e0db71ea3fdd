"""Tokenizers as models ship them: llmcore vs the sentencepiece library and HF tokenizers,
ids checked equal and encode speed measured side by side in the same run.

    python bench/bench_tokenizer_models.py [--data ../shared/data] [--max-mb 4] [--repeat 2]
                                           [--out bench/results/tokenizer_models.json]

Kinds:
- ``llama2-model``: ``tokenizers/llama2_tokenizer.model`` read by llmcore (no sentencepiece)
  vs ``sentencepiece.SentencePieceProcessor`` on the same file;
- ``llama2-json``: that model as a SentencePiece-style tokenizer.json (byte fallback, ▁
  prefix, merges from the pieces' scores) in llmcore vs HF tokenizers;
- ``<pre>-bytelevel``: a byte-level BPE trained with HF tokenizers on the corpus, with three
  single bytes removed and two added tokens, for each llama.cpp pre-tokenizer name, in llmcore
  vs HF tokenizers.
Each corpus file (cut to --max-mb) is encoded whole, single thread, best of --repeat.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"


def best(fn, text: str, repeat: int) -> tuple[float, list[int]]:
    times, ids = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ids = fn(text)
        times.append(time.perf_counter() - t0)
    return min(times), ids


def corpus(data: Path, max_mb: float) -> dict[str, str]:
    files = sorted((data / "corpus").glob("*"))
    limit = int(max_mb * 2**20)
    return {f.name: f.read_text(encoding="utf-8", errors="replace")[:limit] for f in files}


def llama2_json(model_file: Path, out: Path):
    """The Llama 2 model as a tokenizer.json the way transformers converts it."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models
    from tokenizers import normalizers as nm

    ref = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = [ref.id_to_piece(i) for i in range(ref.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    found = []
    for i, p in enumerate(pieces):
        for k in range(1, len(p)):
            if p[:k] in vocab and p[k:] in vocab:
                found.append((i, vocab[p[:k]], vocab[p[k:]], p[:k], p[k:]))
    merges = [(a, b) for *_, a, b in sorted(found)]
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = nm.Sequence([nm.Prepend("▁"), nm.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return tok


def bytelevel_json(texts: list[str], pre: str, out: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, trainers
    from tokenizers import pre_tokenizers as pt

    from llmcore.tokenizers.bytelevel import to_text
    from llmcore.tokenizers.pretokenizers import PRE_TOKENIZERS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([t[: 2**20] for t in texts], trainer)
    data = json.loads(tok.to_str())
    for b in (b"\x04", b"\xc0", b"\xff"):
        c = to_text(b)
        data["model"]["vocab"].pop(c, None)
        data["model"]["merges"] = [m for m in data["model"]["merges"] if c not in m]
    order = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    data["model"]["vocab"] = {k: i for i, (k, _) in enumerate(order)}
    tok = Tokenizer.from_str(json.dumps(data))
    splits = [pt.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZERS[pre]]
    tok.pre_tokenizer = pt.Sequence(
        [*splits, pt.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.add_special_tokens(["<|endoftext|>"])
    tok.add_tokens(["<tool>"])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return tok


def compare(kind: str, ours, ref_encode, texts: dict[str, str], repeat: int) -> list[dict]:
    rows = []
    for name, text in texts.items():
        mb = len(text.encode("utf-8")) / 2**20
        t_ours, a = best(ours, text, repeat)
        t_ref, b = best(ref_encode, text, repeat)
        rows.append(
            dict(kind=kind, file=name, mb=round(mb, 3), ids_equal=a == b, tokens=len(b),
                 llmcore_mb_s=round(mb / t_ours, 2), reference_mb_s=round(mb / t_ref, 2))
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-mb", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tokenizer_models.json")
    args = ap.parse_args()

    import sentencepiece as spm

    import llmcore

    texts = corpus(args.data, args.max_mb)
    rows: list[dict] = []
    model_file = args.data / "tokenizers" / "llama2_tokenizer.model"
    if model_file.exists():
        ref = spm.SentencePieceProcessor(model_file=str(model_file))
        ours = llmcore.load_tokenizer(model_file)
        rows += compare("llama2-model", ours.encode, ref.encode, texts, args.repeat)
        with tempfile.TemporaryDirectory() as d:
            hf = llama2_json(model_file, Path(d))
            ours = llmcore.load_tokenizer(Path(d))
            enc = lambda t: hf.encode(t, add_special_tokens=False).ids  # noqa: E731
            rows += compare("llama2-json", ours.encode, enc, texts, args.repeat)
    from llmcore.tokenizers.pretokenizers import PRE_TOKENIZERS

    for pre in PRE_TOKENIZERS:
        with tempfile.TemporaryDirectory() as d:
            hf = bytelevel_json(list(texts.values()), pre, Path(d))
            ours = llmcore.load_tokenizer(Path(d) / "tokenizer.json")
            enc = lambda t, hf=hf: hf.encode(t, add_special_tokens=False).ids  # noqa: E731
            ours_enc = lambda t, o=ours: o.encode(t, allowed_special="all")  # noqa: E731
            rows += compare(f"{pre}-bytelevel", ours_enc, enc, texts, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}; all ids equal: {all(r['ids_equal'] for r in rows)}")


if __name__ == "__main__":
    main()

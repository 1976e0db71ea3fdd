"""Tokenizers as models ship them: llmcore vs HF tokenizers, the sentencepiece library and
tiktoken, ids checked equal and encode speed measured side by side in the same run.

    python bench/bench_tokenizer_models.py [--data ../shared/data] [--max-mb 0.5] [--runs 3]
        [--kinds llama-bpe qwen2 llama2-model llama2-json unigram-model]
        [--out bench/results/tokenizer_models.json]

Kinds (``--kinds``; every llama.cpp pre-tokenizer name is also a byte-level kind):
- ``llama-bpe``, ``qwen2`` (and ``smollm``, ``starcoder``, ...): a byte-level BPE trained by
  HF tokenizers on the corpus, three single bytes removed and an added token, with that
  pre-tokenizer, in llmcore vs HF tokenizers; tiktoken runs the same ranks with the same
  regex where it can (its ids are reported, not required: its regex engine differs);
- ``llama2-model``: ``tokenizers/llama2_tokenizer.model`` (SentencePiece BPE) read by llmcore
  vs ``sentencepiece`` on the file; HF tokenizers on its tokenizer.json conversion for speed;
- ``llama2-json``: that conversion (byte fallback, ▁ prefix, merges) in llmcore vs HF;
- ``unigram-model``: a SentencePiece unigram model (NFKC, byte fallback) trained here, in
  llmcore vs ``sentencepiece``; HF tokenizers on an equivalent Unigram for speed.
Texts: every corpus file (each cut to --max-mb; 0 = whole), Tiny Shakespeare and generated
hostile text. Each text is encoded whole, single thread; the runs of the engines alternate
and each figure is the median of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"
DEFAULT_KINDS = ["llama-bpe", "qwen2", "llama2-model", "llama2-json", "unigram-model"]


def hostile_text(seed: int = 14, size: int = 200_000) -> str:
    """Random Unicode (characters Python's Unicode tables assign, so that the references'
    older tables agree), long runs of spaces, digits and newlines, and odd mixtures."""
    rng = random.Random(seed)
    frags = [" " * 5000, "1" * 3000, "\n" * 1000, "\r\n" * 500, "\t \u00a0\u3000" * 200]
    frags += ["it's IT'S 'ſ x'LL", "<tool><tool>x", "<|endoftext|>", "<0x41> \u2581\u2581 \u2581"]
    frags += [
        "\x00\x01\x1f\x7f\x85",
        "\U0001f469\u200d\U0001f4bb",
        "\u0928\u092e\u0938\u094d\u0924\u0947",
    ]
    frags += ["12345678901234567890", "²½Ⅷ٣٤", "a" * 2000, "ﬁ ① Ａ ㌀", "  \n \n  "]
    out, n = [], 0
    while n < size:
        if rng.random() < 0.2:
            s = rng.choice(frags)
        else:
            s = "".join(_assigned(rng) for _ in range(rng.randrange(1, 40)))
        out.append(s + rng.choice(["", " ", "  ", "\n", "\t", ".", "0"]))
        n += len(out[-1])
    return "".join(out)


def _assigned(rng: random.Random) -> str:
    while True:
        c = chr(rng.randrange(1, 0x30000) if rng.random() < 0.5 else rng.randrange(32, 0x800))
        if unicodedata.category(c) not in ("Cn", "Cs"):
            return c


def texts_of(data: Path, max_mb: float) -> dict[str, str]:
    limit = int(max_mb * 2**20) if max_mb > 0 else None
    files = sorted((data / "corpus").glob("*")) + [data / "tinyshakespeare.txt"]
    texts = {f.name: f.read_text(encoding="utf-8", errors="replace")[:limit] for f in files}
    texts["hostile"] = hostile_text()
    return texts


def measure(engines: dict, text: str, runs: int) -> tuple[dict[str, float], dict[str, list]]:
    """Median seconds per engine over ``runs`` alternating runs, and each engine's ids."""
    times: dict[str, list[float]] = {k: [] for k in engines}
    ids: dict[str, list] = {}
    for _ in range(runs):
        for name, fn in engines.items():
            t0 = time.perf_counter()
            ids[name] = fn(text)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, ids


def compare(kind: str, engines: dict, reference: str, texts: dict, runs: int, map_ids=None):
    """Rows of one kind: ``engines['llmcore']`` must give ``engines[reference]``'s ids."""
    rows = []
    for name, text in texts.items():
        mb = len(text.encode("utf-8", errors="surrogatepass")) / 2**20
        secs, ids = measure(engines, text, runs)
        row = dict(kind=kind, file=name, mb=round(mb, 3), tokens=len(ids[reference]))
        row["ids_equal"] = ids["llmcore"] == ids[reference]
        for other in engines:
            if other not in ("llmcore", reference):
                got = map_ids(ids[other]) if other == "tiktoken" and map_ids else ids[other]
                row[f"{other}_ids_equal"] = got == ids[reference]
        row.update({f"{k}_mb_s": round(mb / max(s, 1e-9), 2) for k, s in secs.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ---- the models -------------------------------------------------------------------------
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
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return tok


def train_bytelevel(texts: list[str]) -> dict:
    """A byte-level BPE trained by HF tokenizers, as its JSON, without three single bytes."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from tokenizers import pre_tokenizers as pt

    from llmcore.tokenizers.bytelevel import to_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([t[: 2**19] for t in texts], trainer)
    data = json.loads(tok.to_str())
    for b in (b"\x04", b"\xc0", b"\xff"):
        c = to_text(b)
        data["model"]["vocab"].pop(c, None)
        data["model"]["merges"] = [m for m in data["model"]["merges"] if c not in m]
    order = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    data["model"]["vocab"] = {k: i for i, (k, _) in enumerate(order)}
    return data


def bytelevel_tokenizer(data: dict, pre: str, out: Path):
    from tokenizers import Regex, Tokenizer
    from tokenizers import pre_tokenizers as pt

    from llmcore.tokenizers.pretokenizers import PRE_TOKENIZERS

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


def tiktoken_of(ours, pre: str):
    """``(encode, rank -> id mapper)`` of tiktoken on our vocabulary's ranks with the
    pre-tokenizer's regex, or None where tiktoken cannot run it (a regex sequence)."""
    try:
        import tiktoken
    except ImportError:
        return None
    from llmcore.tokenizers.pretokenizers import PRE_TOKENIZERS

    regexes = PRE_TOKENIZERS[pre]
    if len(regexes) != 1:
        return None
    v = ours.vocabulary()
    ranks = dict(zip(v.tokens, v.ranks))
    rank_to_id = dict(zip(v.ranks, v.ids or v.ranks))
    top = max(ranks.values()) + 1
    for b in range(256):  # tiktoken needs every byte; valid UTF-8 text never uses these
        if bytes([b]) not in ranks:
            ranks[bytes([b])] = top
            top += 1
    extra = {**ours.special_tokens, **(v.extra.get("added_tokens") or {})}  # text -> id
    specials = {s: top + k for k, s in enumerate(extra)}
    rank_to_id.update({top + k: extra[s] for k, s in enumerate(extra)})
    enc = tiktoken.Encoding(
        f"llmcore-{pre}", pat_str=regexes[0], mergeable_ranks=ranks, special_tokens=specials
    )
    return (lambda t: enc.encode(t, allowed_special="all")), (
        lambda ids: [rank_to_id.get(i, -1) for i in ids]
    )


def train_unigram(texts: list[str], out: Path) -> Path:
    import sentencepiece as spm

    train = out / "train.txt"
    train.write_text("\n".join(t[: 2**18] for t in texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(train), model_prefix=str(out / "unigram"), vocab_size=16000,
        model_type="unigram", byte_fallback=True, character_coverage=0.995, minloglevel=2,
        hard_vocab_limit=False,
    )  # fmt: skip
    return out / "unigram.model"


def hf_unigram(model_file: Path):
    """HF tokenizers' Unigram on the same pieces and character map (transformers' recipe)."""
    from tokenizers import Regex, Tokenizer, models
    from tokenizers import normalizers as nm
    from tokenizers import pre_tokenizers as pt

    from llmcore.tokenizers.sentencepiece import parse_model_proto

    opts = parse_model_proto(model_file.read_bytes())
    vocab = [(p, s) for p, s, _ in opts["pieces"]]
    tok = Tokenizer(models.Unigram(vocab, unk_id=opts["unk_id"], byte_fallback=True))
    tok.normalizer = nm.Sequence(
        [nm.Precompiled(opts["charsmap"]), nm.Replace(Regex(" {2,}"), "▁")]
    )
    tok.pre_tokenizer = pt.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


# ---- the kinds --------------------------------------------------------------------------
def bytelevel_kind(pre: str, data: dict, texts: dict, runs: int) -> list[dict]:
    import llmcore

    with tempfile.TemporaryDirectory() as d:
        hf = bytelevel_tokenizer(data, pre, Path(d))
        ours = llmcore.load_tokenizer(Path(d) / "tokenizer.json")
    engines = {
        "llmcore": lambda t: ours.encode(t, allowed_special="all"),
        "hf": lambda t: hf.encode(t, add_special_tokens=False).ids,
    }
    tk = tiktoken_of(ours, pre)
    if tk is not None:
        engines["tiktoken"] = tk[0]
    print(f"# {pre}: llmcore core {type(ours._core).__name__} ({ours.pattern})", flush=True)
    return compare(pre, engines, "hf", texts, runs, tk[1] if tk else None)


def sentencepiece_kinds(kinds: list[str], data: Path, texts: dict, runs: int) -> list[dict]:
    import sentencepiece as spm

    import llmcore

    rows: list[dict] = []
    model_file = data / "tokenizers" / "llama2_tokenizer.model"
    with tempfile.TemporaryDirectory() as d:
        if "llama2-model" in kinds or "llama2-json" in kinds:
            hf = llama2_json(model_file, Path(d) / "llama2")
            hf_enc = lambda t: hf.encode(t, add_special_tokens=False).ids  # noqa: E731
        if "llama2-model" in kinds:
            ref = spm.SentencePieceProcessor(model_file=str(model_file))
            ours = llmcore.load_tokenizer(model_file)
            engines = {"llmcore": ours.encode, "sentencepiece": ref.encode, "hf": hf_enc}
            rows += compare("llama2-model", engines, "sentencepiece", texts, runs)
        if "llama2-json" in kinds:
            ours = llmcore.load_tokenizer(Path(d) / "llama2")
            rows += compare(
                "llama2-json", {"llmcore": ours.encode, "hf": hf_enc}, "hf", texts, runs
            )
        if "unigram-model" in kinds:
            file = train_unigram(list(texts.values()), Path(d))
            ref = spm.SentencePieceProcessor(model_file=str(file))
            ours = llmcore.load_tokenizer(file)
            hu = hf_unigram(file)
            engines = {
                "llmcore": ours.encode,
                "sentencepiece": ref.encode,
                "hf": lambda t: hu.encode(t, add_special_tokens=False).ids,
            }
            rows += compare("unigram-model", engines, "sentencepiece", texts, runs)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per kind: ids equal on every text, and MB/s over all texts (total MB / total s)."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        mb = sum(r["mb"] for r in rs)
        row = dict(kind=kind, texts=len(rs), mb=round(mb, 2))
        row["ids_equal_all"] = all(r["ids_equal"] for r in rs)
        for key in (k for k in rs[0] if k.endswith("_mb_s")):
            secs = sum(r["mb"] / r[key] for r in rs if r[key] > 0)
            row[key] = round(mb / secs, 2) if secs else None
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max-mb", type=float, default=0.5, help="cut each file (0: whole files)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", nargs="+", default=DEFAULT_KINDS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tokenizer_models.json")
    args = ap.parse_args()
    from llmcore.tokenizers.pretokenizers import PRE_TOKENIZERS

    texts = texts_of(args.data, args.max_mb)
    rows: list[dict] = []
    pres = [k for k in args.kinds if k in PRE_TOKENIZERS]
    if pres:
        data = train_bytelevel(list(texts.values()))
        for pre in pres:
            rows += bytelevel_kind(pre, data, texts, args.runs)
    rows += sentencepiece_kinds(args.kinds, args.data, texts, args.runs)
    totals = summary(rows)
    for row in totals:
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(args=dict(max_mb=args.max_mb, runs=args.runs), summary=totals, rows=rows)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}; all ids equal: {all(r['ids_equal'] for r in rows)}")


if __name__ == "__main__":
    main()

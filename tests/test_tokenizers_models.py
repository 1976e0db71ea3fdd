"""Byte-level BPE tokenizers as models ship them, checked against Hugging Face tokenizers:
vocabularies missing single bytes, added and special tokens, llama.cpp's pre-tokenizers."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

import llmcore
from llmcore.builtin.bpe import BPETokenizer
from llmcore.errors import TokenizerError
from llmcore.ops import bpe as ops
from llmcore.tokenizers.bytelevel import to_text
from llmcore.tokenizers.pretokenizers import CPP_SPLITTER, GPT2_REGEX, PRE_TOKENIZERS
from llmcore.tokenizers.tokenizer_json import byte_level_vocabulary

hf = pytest.importorskip("tokenizers")
from tokenizers import Regex, decoders, models, trainers  # noqa: E402
from tokenizers import pre_tokenizers as pt  # noqa: E402

SAMPLES = Path(__file__).parent / "fixtures" / "tokenizers" / "samples"
SAMPLE_TEXTS = [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))]
MISSING = (b"\x04", b"\xc0", b"\xff")  # bytes a real vocabulary lacks


def _assigned(rng: random.Random, n: int) -> str:
    # code points Unicode 14 assigns: HF's regex engine has older tables than the regex
    # package for characters assigned later (see llmcore.builtin.bpe.regex_core)
    out = []
    while len(out) < n:
        c = chr(rng.randrange(1, 0x30000))
        if unicodedata.category(c) not in ("Cn", "Cs"):
            out.append(c)
    return "".join(out)


def _hostile() -> list[str]:
    rng = random.Random(14)
    texts = ["", " ", " " * 700, "\n\n\n", "a\x04b\x04\x04c", "\x00\x01\x1f\x7f\x85", "ÿ\xff"]
    texts += ["it's IT'S 123456 ²½ x\r\n\r\n  y  ", "\t \u00a0\u3000 z", "<tool>x <tool>"]
    texts += ["<|endoftext|>hi<|im_start|> magic word", "\u0928\u092e\u0938\u094d\u0924\u0947"]
    texts += [_assigned(rng, rng.randrange(1, 60)) for _ in range(25)]
    # long runs and mixtures the splitters must cut exactly (and in linear time)
    texts += ["1" * 2001, "\n" * 500 + "x", "\r\n \r\n\t" * 60, " \t" * 300 + "y", "x" * 3000]
    texts += ["it'S 'ſ 'Ll 'VE x'd'm", "a1b22c333d4444e55555 ٣٤٥ ²³ 12.5", "  \n  \n\n   z  "]
    pool = list(" \t\n\r'.,-0123456789aZé\u00a0\u2028\u3000日ँ") + ["<tool>", "'s"]
    texts += ["".join(rng.choice(pool) for _ in range(rng.randrange(50, 400))) for _ in range(20)]
    return texts


TEXTS = [t[:6000] for t in SAMPLE_TEXTS] + _hostile()


def _split_then_bytes(regexes) -> pt.PreTokenizer:
    splits = [pt.Split(Regex(r), behavior="isolated") for r in regexes]
    return pt.Sequence([*splits, pt.ByteLevel(add_prefix_space=False, use_regex=False)])


@pytest.fixture(scope="module")
def trained_json() -> dict:
    """A byte-level BPE trained by HF tokenizers, as its JSON."""
    tok = hf.Tokenizer(models.BPE())
    tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=900, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([t[:8000] for t in SAMPLE_TEXTS], trainer)
    return json.loads(tok.to_str())


def _without_bytes(data: dict, missing=MISSING) -> dict:
    data = json.loads(json.dumps(data))
    model = data["model"]
    for b in missing:
        c = to_text(b)
        model["vocab"].pop(c, None)
        model["merges"] = [m for m in model["merges"] if c not in m]
    order = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    model["vocab"] = {k: i for i, (k, _) in enumerate(order)}  # dense ids, as shipped
    return data


def _reference(data: dict, pre, added: bool) -> hf.Tokenizer:
    tok = hf.Tokenizer.from_str(json.dumps(data))
    tok.pre_tokenizer = pre
    if added:
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>"])
        tok.add_tokens(["<tool>", " magic"])
    return tok


def _check(ref: hf.Tokenizer, path: Path) -> BPETokenizer:
    ref.save(str(path))
    ours = llmcore.load_tokenizer(path)
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, allowed_special="all") == ids, repr(text[:80])
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False), repr(text[:80])
    return ours


@pytest.mark.parametrize("name", list(PRE_TOKENIZERS))
def test_each_llama_cpp_pre_tokenizer_matches_hf(trained_json, tmp_path, name):
    data = _without_bytes(trained_json)
    ours = _check(
        _reference(data, _split_then_bytes(PRE_TOKENIZERS[name]), True), tmp_path / "t.json"
    )
    assert ours.pattern in (name, "gpt2", "smollm")  # equal sequences share one name
    # the names with a hand-written splitter run in the C++ core, the others on regex
    assert (type(ours._core).__name__ == "Core") == (name in CPP_SPLITTER)


@pytest.mark.parametrize("name", [n for n in CPP_SPLITTER if n not in ("default", "gpt2")])
def test_cpp_splitters_cut_as_hf_splits(name):
    splits = [pt.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZERS[name]]
    ref = pt.Sequence(splits)
    for text in TEXTS:
        want = [piece for piece, _ in ref.pre_tokenize_str(text)]
        assert ops.split(text, CPP_SPLITTER[name]) == want, repr(text[:80])


def test_missing_bytes_are_dropped_as_hf_drops_them(trained_json, tmp_path):
    ref = _reference(_without_bytes(trained_json), pt.ByteLevel(add_prefix_space=False), False)
    ours = _check(ref, tmp_path / "tokenizer.json")
    assert ours.encode("\x04") == [] == ref.encode("\x04").ids


def test_full_vocabulary_keeps_the_cpp_core(trained_json, tmp_path):
    ref = _reference(trained_json, pt.ByteLevel(add_prefix_space=False), False)
    ours = _check(ref, tmp_path / "tokenizer.json")
    assert ours.pattern == "gpt2" and type(ours._core).__name__ == "Core"


def test_special_text_is_plain_unless_allowed(trained_json, tmp_path):
    ref = _reference(_without_bytes(trained_json), _split_then_bytes([GPT2_REGEX]), True)
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = llmcore.load_tokenizer(tmp_path / "tokenizer.json")
    eot = ours.special_tokens["<|endoftext|>"]
    assert eot not in ours.encode("a<|endoftext|>b")
    assert eot in ours.encode("a<|endoftext|>b", allowed_special={"<|endoftext|>"})
    # a non-special added token is matched in any text, as HF does
    tool = ref.token_to_id("<tool>")
    assert tool in ours.encode("x<tool>y") and tool in ref.encode("x<tool>y").ids


def test_save_and_load_keep_the_regex_sequence(trained_json, tmp_path):
    pre = _split_then_bytes(PRE_TOKENIZERS["qwen2"])
    ref = _reference(_without_bytes(trained_json), pre, True)
    ours = _check(ref, tmp_path / "tokenizer.json")
    ours.save(tmp_path / "saved")
    back = llmcore.load_tokenizer(tmp_path / "saved")
    assert back.pattern == "qwen2"
    for text in TEXTS[:12]:
        assert back.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")


def test_vocabulary_from_lists_as_gguf_gives_them(trained_json, tmp_path):
    data = _without_bytes(trained_json)
    ref = _reference(data, _split_then_bytes(PRE_TOKENIZERS["llama-bpe"]), False)
    vocab = byte_level_vocabulary(
        data["model"]["vocab"], data["model"]["merges"], pre="llama-bpe", source="x.gguf"
    )
    ours = BPETokenizer.from_vocabulary(vocab)
    for text in TEXTS:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids
    with pytest.raises(TokenizerError, match=r"x\.gguf: unknown pre-tokenizer 'nope'.*llama-bpe"):
        byte_level_vocabulary({}, [], pre="nope", source="x.gguf")


def test_unsupported_pre_tokenizer_step_is_named(trained_json, tmp_path):
    data = json.loads(json.dumps(trained_json))
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="pre-tokenizer 'Whitespace' is not supported"):
        llmcore.load_tokenizer(tmp_path / "tokenizer.json")


def test_add_bos_token_is_honoured_when_asked(trained_json, tmp_path):
    ref = _reference(_without_bytes(trained_json), pt.ByteLevel(add_prefix_space=False), True)
    ref.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|endoftext|>", "add_bos_token": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = llmcore.load_tokenizer(tmp_path)
    bos = ref.token_to_id("<|im_start|>")
    assert (ours.bos_id, ours.eos_id) == (bos, ref.token_to_id("<|endoftext|>"))
    assert ours.encode("hi") == ref.encode("hi").ids
    assert ours.encode("hi", add_special=True) == [bos, *ref.encode("hi").ids]
    ours.save(tmp_path / "saved")
    assert llmcore.load_tokenizer(tmp_path / "saved").encode("hi", add_special=True)[0] == bos

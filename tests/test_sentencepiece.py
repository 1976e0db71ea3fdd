"""SentencePiece models read without the sentencepiece package, checked against it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import llmcore
from llmcore import plugins
from llmcore.builtin.sentencepiece import SentencePieceTokenizer
from llmcore.errors import TokenizerError
from llmcore.tokenizers.sentencepiece import from_pieces

spm = pytest.importorskip("sentencepiece")

SAMPLES = Path(__file__).parent / "fixtures" / "tokenizers" / "samples"
SAMPLE_TEXTS = [p.read_text(encoding="utf-8")[:4000] for p in sorted(SAMPLES.glob("*.txt"))]


def _hostile() -> list[str]:
    rng = random.Random(14)
    texts = ["", " ", "   ", " " * 500, "a" * 3000, "  two  spaces  ", "\t\n\r\x0b\x0c"]
    texts += ["a\x00b\x01c\x1fd\x7f", "ﬁ ① Ａ ½ ㌀ é", "\u3000x\u00a0y\u2028z", "<s> </s> <unk>"]
    texts += ["\u200b\u200d\ufeff", "\U0001f600\U0001f469\u200d\U0001f4bb", "\\x41 <0x41>"]
    for _ in range(20):  # random code points from the BMP and the planes above (no surrogates)
        cps = (rng.randrange(1, 0x30000) for _ in range(rng.randrange(1, 80)))
        texts.append("".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000))
    # long runs and mixtures: the C++ chunking, cache and Viterbi must stay exact
    texts += [" " * 3000 + "x", "1" * 3000, "\n" * 300, "x" * 5000, "\u2581\u2581x \u2581"]
    texts += ["<0x41><0xZZ><0x>", " \r\n\t " * 100, "the the  the   the" * 50]
    pool = list(" \t\n.,0123456789aZé\u00a0\u3000日ँ\u2581") + ["<tool>", "the", "ﬁ"]
    texts += ["".join(rng.choice(pool) for _ in range(rng.randrange(50, 400))) for _ in range(20)]
    return texts


TEXTS = SAMPLE_TEXTS + _hostile()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spm")
    (d / "train.txt").write_text("".join(SAMPLE_TEXTS), encoding="utf-8")
    return d


def _train(corpus: Path, name: str, **options) -> Path:
    prefix = corpus / name
    if not (corpus / f"{name}.model").exists():
        spm.SentencePieceTrainer.train(
            input=str(corpus / "train.txt"),
            model_prefix=str(prefix),
            vocab_size=options.pop("vocab_size", 1200),
            character_coverage=0.99,
            minloglevel=2,
            **options,
        )
    return corpus / f"{name}.model"


MODELS = {
    "bpe": dict(model_type="bpe"),
    "unigram": dict(model_type="unigram"),
    "bpe-bytes": dict(model_type="bpe", byte_fallback=True),
    "unigram-bytes-user": dict(
        model_type="unigram", byte_fallback=True, user_defined_symbols=["<tool>", "the"]
    ),
    "bpe-identity": dict(
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
    ),  # fmt: skip
    "unigram-nfkc-cf": dict(model_type="unigram", normalization_rule_name="nmt_nfkc_cf"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_ids_and_text_match_sentencepiece(corpus, name):
    file = _train(corpus, name, **MODELS[name])
    ref = spm.SentencePieceProcessor(model_file=str(file))
    tok = llmcore.load_tokenizer(file)
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.vocab_size == ref.get_piece_size()
    for text in TEXTS:
        ids = ref.encode(text)
        assert tok.encode(text) == ids, repr(text[:80])
        assert tok.decode(ids) == ref.decode(ids), repr(text[:80])
    assert tok.encode_batch(TEXTS[:3]) == ref.encode(TEXTS[:3])
    joined = "\n".join(TEXTS)[:12000]  # one call over many lines
    assert tok.encode(joined) == ref.encode(joined)


@pytest.mark.parametrize("name", ["unigram", "unigram-bytes-user", "unigram-nfkc-cf"])
def test_a_long_unigram_call_matches_sentencepiece(corpus, name):
    # Over a long call the path scores pass 1e5, where the library rebases them so that float32
    # ties stay rare; without that, ids drift from the library after some ten thousand pieces.
    file = _train(corpus, name, **MODELS[name])
    ref = spm.SentencePieceProcessor(model_file=str(file))
    tok = llmcore.load_tokenizer(file)
    text = "\n".join(SAMPLE_TEXTS + TEXTS[::-1] + SAMPLE_TEXTS[::-1])
    text = (text + " the<tool>the ") * 4
    ids = ref.encode(text)
    assert -sum(ref.get_score(i) for i in ids) > 2e5  # far past the rebasing point, twice
    assert tok.encode(text) == ids


def test_special_ids_and_control_text(corpus):
    file = _train(corpus, "bpe-bytes", **MODELS["bpe-bytes"])
    ref = spm.SentencePieceProcessor(model_file=str(file))
    tok = SentencePieceTokenizer.load(file)
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (ref.bos_id(), ref.eos_id(), ref.unk_id())
    assert tok.eot_id == ref.eos_id()
    assert tok.special_tokens == {"<s>": ref.bos_id(), "</s>": ref.eos_id(), "<unk>": 0}
    text = "hi <s> there</s>"
    assert tok.encode(text) == ref.encode(text)  # user text never becomes a control id
    got = tok.encode(text, allowed_special={"<s>"})
    assert got == ref.encode("hi ") + [ref.bos_id()] + ref.encode(" there</s>")
    assert tok.encode(text, allowed_special="all")[-1] == ref.eos_id()
    with pytest.raises(TokenizerError, match="lacks"):
        tok.encode(text, allowed_special={"<|im_end|>"})
    # the model asks for no bos/eos by default, as sentencepiece encodes
    assert tok.encode("hello", add_special=True) == ref.encode("hello")


def _pieces_of(ref):
    types = []
    for i in range(ref.get_piece_size()):  # the GGUF / SentencePiece type enum
        kinds = [(ref.is_unknown(i), 2), (ref.is_control(i), 3), (ref.is_unused(i), 5)]
        types.append(next((code for flag, code in kinds + [(ref.is_byte(i), 6)] if flag), 1))
    pieces = [ref.id_to_piece(i) for i in range(ref.get_piece_size())]
    scores = [ref.get_score(i) for i in range(ref.get_piece_size())]
    return pieces, scores, types


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_from_pieces_matches_a_llama_style_model(corpus, model):
    # Llama's normalizer: no character map, spaces kept as they are, a ▁ in front
    opts = dict(
        model_type=model, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )  # fmt: skip
    file = _train(corpus, f"{model}-llama", **opts)
    ref = spm.SentencePieceProcessor(model_file=str(file))
    pieces, scores, types = _pieces_of(ref)
    tok = from_pieces(
        pieces, scores, types, model=model, bos_id=ref.bos_id(), eos_id=ref.eos_id(),
        unk_id=ref.unk_id(), add_bos=True,
    )  # fmt: skip
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text), repr(text[:80])
        assert tok.encode(text, add_special=True) == ref.encode(text, add_bos=True)
    assert tok.decode(ref.encode(TEXTS[0])) == ref.decode(ref.encode(TEXTS[0]))


def test_from_pieces_checks_its_lists():
    with pytest.raises(TokenizerError, match="as many"):
        from_pieces(["a", "b"], [0.0], [1, 1])
    with pytest.raises(TokenizerError, match="valid are"):
        from_pieces(["a"], [0.0], [1], model="wordpiece")
    with pytest.raises(TokenizerError, match="unknown type 9"):
        from_pieces(["a"], [0.0], [9])


def test_save_and_load_round_trip(corpus, tmp_path):
    file = _train(corpus, "unigram-bytes-user", **MODELS["unigram-bytes-user"])
    tok = llmcore.load_tokenizer(file)
    tok.save(tmp_path / "saved")
    back = llmcore.load_tokenizer(tmp_path / "saved")
    assert isinstance(back, SentencePieceTokenizer)
    for text in TEXTS[:12]:
        assert back.encode(text) == tok.encode(text)
    assert back.special_tokens == tok.special_tokens


def test_detects_model_files_and_folders(corpus, tmp_path):
    file = _train(corpus, "bpe", **MODELS["bpe"])
    (tmp_path / "tokenizer.model").write_bytes(file.read_bytes())
    (tmp_path / "renamed").write_bytes(file.read_bytes())
    ref = spm.SentencePieceProcessor(model_file=str(file)).encode(TEXTS[1])
    for path in (tmp_path, tmp_path / "tokenizer.model", tmp_path / "renamed"):
        assert llmcore.load_tokenizer(path).encode(TEXTS[1]) == ref


def test_plugin_registered():
    assert plugins.factory("tokenizer", "sentencepiece") is SentencePieceTokenizer


@pytest.mark.parametrize(
    "content", [b"\n\x05hello", b"\n\xff\xff", b"\x0a\x03abc\x12\x01", b"not a model at all"]
)
def test_a_file_that_is_not_a_model_names_itself(tmp_path, content):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(content)
    with pytest.raises(TokenizerError, match=r"tokenizer\.model: not a SentencePiece model"):
        llmcore.load_tokenizer(bad)


def test_hf_folder_with_only_a_model_file(corpus, tmp_path):
    file = _train(corpus, "bpe", **MODELS["bpe"])
    (tmp_path / "tokenizer.model").write_bytes(file.read_bytes())
    ref = spm.SentencePieceProcessor(model_file=str(file))
    tok = llmcore.tokenizers.load_hf_tokenizer(tmp_path)
    assert tok.encode(TEXTS[2]) == ref.encode(TEXTS[2])


def test_a_gguf_llama_vocabulary_encodes_as_sentencepiece(corpus, tmp_path):
    """``tokenizer.ggml.model = llama``: the pieces, scores and token types a GGUF file
    carries (as llama.cpp's converter writes them from a ``tokenizer.model``) give the
    sentencepiece library's ids for a model without a normalizer, as Llama 2's is."""
    gguf = pytest.importorskip("gguf")
    from llmcore.gguf.reader import GGUFFile
    from llmcore.gguf.tokenizer import load_tokenizer as gguf_tokenizer

    # Llama 2's settings: no normalizer (GGUF carries none), byte fallback, split digits
    ref = spm.SentencePieceProcessor(
        model_file=str(_train(corpus, "bpe-identity", **MODELS["bpe-identity"]))
    )
    n = ref.get_piece_size()
    types = []
    for i in range(n):
        types.append(
            2 if ref.is_unknown(i) else 3 if ref.is_control(i) else 6 if ref.is_byte(i) else 1
        )
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([ref.id_to_piece(i) for i in range(n)])
    w.add_token_scores([ref.get_score(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(ref.bos_id())
    w.add_eos_token_id(ref.eos_id())
    w.add_unk_token_id(ref.unk_id())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = gguf_tokenizer(GGUFFile(tmp_path / "t.gguf"))
    for text in TEXTS[:40] + ["héllo wörld ✓ 日本語", "  two  spaces", "\u2603\U0001f600"]:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(ref.encode(text)) == ref.decode(ref.encode(text))

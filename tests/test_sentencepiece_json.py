"""SentencePiece-style tokenizer.json files (Llama 2, Mistral, Gemma), checked against
Hugging Face tokenizers and the sentencepiece library."""

from __future__ import annotations

import json

import pytest

import llmcore
from llmcore.builtin.sentencepiece import SentencePieceTokenizer
from tests.test_sentencepiece import TEXTS, _train

spm = pytest.importorskip("sentencepiece")
hf = pytest.importorskip("tokenizers")
from tokenizers import decoders, models  # noqa: E402
from tokenizers import normalizers as nm  # noqa: E402
from tokenizers import pre_tokenizers as pt  # noqa: E402

LLAMA = dict(
    model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
    remove_extra_whitespaces=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def llama_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("spmjson")
    from tests.test_sentencepiece import SAMPLE_TEXTS

    (d / "train.txt").write_text("".join(SAMPLE_TEXTS), encoding="utf-8")
    return spm.SentencePieceProcessor(model_file=str(_train(d, "llama", **LLAMA)))


def _pieces(ref):
    return [ref.id_to_piece(i) for i in range(ref.get_piece_size())]


def _merges(pieces):
    # every split of a piece into two pieces, by the merged piece's id (= score order), as
    # transformers converts SentencePiece BPE models
    vocab = {p: i for i, p in enumerate(pieces)}
    found = []
    for i, p in enumerate(pieces):
        for k in range(1, len(p)):
            if p[:k] in vocab and p[k:] in vocab:
                found.append((i, vocab[p[:k]], vocab[p[k:]], p[:k], p[k:]))
    return [(a, b) for *_, a, b in sorted(found)]


def _decoder():
    return decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
         decoders.Strip(" ", 1, 0)]
    )  # fmt: skip


def _save(tok, folder, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return llmcore.load_tokenizer(folder)


def _check(tok, ours, ref=None):
    assert isinstance(ours, SentencePieceTokenizer)
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, allowed_special="all") == ids, repr(text[:80])
        if ref is not None:
            assert ours.encode(text) == ref.encode(text), repr(text[:80])
        plain = [i for i in ids if i > 2]  # control pieces decode to nothing, as in sentencepiece
        assert ours.decode(plain) == tok.decode(plain), repr(text[:80])


@pytest.mark.parametrize("style", ["prepend-replace", "metaspace"])
def test_llama_style_bpe_json_matches_hf_and_sentencepiece(llama_model, tmp_path, style):
    pieces = _pieces(llama_model)
    vocab = {p: i for i, p in enumerate(pieces)}
    bpe = models.BPE(vocab, _merges(pieces), byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    tok = hf.Tokenizer(bpe)
    if style == "prepend-replace":  # Llama 2's files
        tok.normalizer = nm.Sequence([nm.Prepend("▁"), nm.Replace(" ", "▁")])
    else:  # Mistral's and newer Llama files
        tok.pre_tokenizer = pt.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = _decoder()
    ours = _save(tok, tmp_path / style, {"add_bos_token": True, "bos_token": "<s>"})
    # Metaspace adds no ▁ before a leading space, which sentencepiece does
    _check(tok, ours, llama_model if style == "prepend-replace" else None)
    for text in ("hi<s>there", "<s>x</s> y", "a</s>"):  # the ▁ after a special token
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, allowed_special="all") == ids, text
    assert ours.encode("hi", add_special=True) == [llama_model.bos_id(), *ours.encode("hi")]
    ours.save(tmp_path / "saved")
    back = llmcore.load_tokenizer(tmp_path / "saved")
    assert [back.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]


def test_unigram_json_matches_hf(tmp_path_factory, tmp_path):
    d = tmp_path_factory.mktemp("uni")
    from tests.test_sentencepiece import SAMPLE_TEXTS

    (d / "train.txt").write_text("".join(SAMPLE_TEXTS), encoding="utf-8")
    opts = dict(LLAMA, model_type="unigram")
    ref = spm.SentencePieceProcessor(model_file=str(_train(d, "uni", **opts)))
    vocab = [(ref.id_to_piece(i), ref.get_score(i)) for i in range(ref.get_piece_size())]
    tok = hf.Tokenizer(models.Unigram(vocab, unk_id=ref.unk_id(), byte_fallback=True))
    tok.normalizer = nm.Sequence([nm.Prepend("▁"), nm.Replace(" ", "▁")])
    tok.decoder = _decoder()
    _check(tok, _save(tok, tmp_path / "uni"))

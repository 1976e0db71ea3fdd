"""Training data: files, folders and JSONL into a cached token file, and batches of windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from llmcore.errors import DataError
from llmcore.train.data import (
    RandomWindows,
    SequentialWindows,
    input_files,
    load_tokens,
    read_documents,
    split_tokens,
)

FIX = Path(__file__).parent / "fixtures" / "tokenizers" / "gpt2"


def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding from the fixture files (no download)."""
    import tiktoken_ext.openai_public as pub
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(str(FIX / "vocab.bpe"), str(FIX / "encoder.json"))
    return tiktoken.Encoding(
        "gpt2",
        pat_str=pub.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


class Tiktoken:
    """tiktoken's GPT-2 encoding in the tokenizer shape llmcore expects (an independent
    reference for what the token file must hold)."""

    def __init__(self) -> None:
        self.enc = gpt2_encoding()
        self.vocab_size = self.enc.n_vocab
        self.eot_id = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def save(self, path) -> None:
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "id.txt").write_text("tiktoken-gpt2")


@pytest.fixture(scope="module")
def tok():
    return Tiktoken()


def test_folder_of_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / ".hidden").write_text("skipped")
    files = input_files(tmp_path)
    assert [f.name for f in files] == ["a.txt", "b.txt"]
    assert read_documents(files) == ["first", "second"]


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError, match="not found"):
        input_files(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        input_files(tmp_path / "empty")


def test_binary_and_non_utf8_files_are_refused(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x7fELF\x00\x00\x01")
    with pytest.raises(DataError, match=r"x\.bin: looks like a binary file"):
        read_documents([tmp_path / "x.bin"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8"):
        read_documents([tmp_path / "latin1.txt"])


def test_jsonl_field_and_errors_name_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "one"}\n\n{"text": "two", "id": 2}\n')
    assert read_documents([f]) == ["one", "two"]
    g = tmp_path / "g.jsonl"
    g.write_text('{"body": "x"}\n')
    assert read_documents([g], "body") == ["x"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not JSON"):
        read_documents([bad])
    with pytest.raises(DataError, match=r"g\.jsonl:1: the record has no string field 'text'"):
        read_documents([g])


def test_token_file_matches_tiktoken_with_eot_between_documents(tmp_path, tok):
    docs = ["Hello world, this is one.", "And here is another document!"]
    for i, d in enumerate(docs):
        (tmp_path / f"{i}.txt").write_text(d)
    files = input_files(tmp_path)
    tokens = load_tokens(files, tok, tmp_path / "cache", progress=False, tokenizer_id="gpt2")
    enc = gpt2_encoding()
    expected = []
    for d in docs:
        expected += enc.encode_ordinary(d) + [enc.eot_token]
    assert tokens.dtype == np.uint16  # 50257 ids fit
    assert tokens.tolist() == expected


def test_cache_is_reused_and_keyed_by_inputs(tmp_path, monkeypatch):
    from llmcore.builtin.char_tokenizer import CharTokenizer

    f = tmp_path / "t.txt"
    f.write_text("abcabcabc")
    tok = CharTokenizer.train(["abc"])
    first = load_tokens([f], tok, tmp_path / "c", progress=False)
    calls = []
    monkeypatch.setattr(
        "llmcore.train.data.read_documents", lambda *a, **k: calls.append(a) or ["abc"]
    )
    again = load_tokens([f], tok, tmp_path / "c", progress=False)
    assert calls == [] and again.tolist() == first.tolist()  # served from the cache
    f.write_text("cba")  # changed input: tokenized again
    load_tokens([f], tok, tmp_path / "c", progress=False)
    assert len(calls) == 1


def test_uint32_when_the_vocabulary_does_not_fit(tmp_path):
    class Big:
        vocab_size = 100_000
        eot_id = 99_999

        def encode(self, text):
            return [70_000 + ord(c) for c in text]

        def save(self, path):
            path.mkdir(parents=True, exist_ok=True)

    f = tmp_path / "t.txt"
    f.write_text("ab")
    tokens = load_tokens([f], Big(), tmp_path / "c", progress=False, tokenizer_id="big")
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == [70_097, 70_098, 99_999]


def test_corpus_smaller_than_a_block(tmp_path):
    with pytest.raises(DataError, match="fewer than one block"):
        split_tokens(np.arange(50), 0.1, 8, "small.txt")
    with pytest.raises(DataError, match="fewer than one block"):
        RandomWindows(np.arange(8), 8, 2, torch.Generator())


def test_random_windows_are_shifted_pairs_and_reproducible():
    data = np.arange(1000)
    a = RandomWindows(data, 16, 4, torch.Generator().manual_seed(3))
    b = RandomWindows(data, 16, 4, torch.Generator().manual_seed(3))
    x, y = a()
    assert x.shape == (4, 16) and torch.equal(y, x + 1)  # data is arange: y is x shifted
    assert torch.equal(b()[0], x)
    state = a.state_dict()
    nxt = a()[0]
    a.load_state_dict(state)
    assert torch.equal(a()[0], nxt)


def test_ranks_split_the_same_global_batch():
    data = np.arange(1000)
    whole = RandomWindows(data, 8, 6, torch.Generator().manual_seed(1))()[0]
    parts = [
        RandomWindows(data, 8, 6, torch.Generator().manual_seed(1), slice(r * 3, r * 3 + 3))()[0]
        for r in range(2)
    ]
    assert torch.equal(torch.cat(parts), whole)


def test_sequential_epochs_cover_every_window_once():
    data = np.arange(8 * 10 + 1)
    seq = SequentialWindows(data, 8, 5, torch.Generator().manual_seed(0))
    starts = sorted(int(r[0]) for _ in range(2) for r in seq()[0])
    assert starts == list(range(0, 80, 8))  # one epoch = 10 windows, each once
    assert seq.epoch == 0
    seq()
    assert seq.epoch == 1
    state = seq.state_dict()
    nxt = seq()[0]
    seq.load_state_dict(state)
    assert torch.equal(seq()[0], nxt)

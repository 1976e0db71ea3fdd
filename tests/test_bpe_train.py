"""Training: the C++ trainer equals a plain Python reference; its output loads in tiktoken."""

from __future__ import annotations

import collections
import random

import pytest
import regex

from llmcore.builtin.bpe import BPETokenizer
from llmcore.errors import TokenizerError
from llmcore.ops.bpe import PAT_STR
from tests.test_bpe_common import FIX, hostile_text


def reference_train(texts: list[str], vocab_size: int, pattern: str) -> list[bytes]:
    """Textbook BPE: recount every pair each step, merge the most frequent (ties: the
    smallest (left id, right id)), left to right without overlap. A merge whose bytes are
    already a token reuses that id (as Hugging Face does) and adds nothing."""
    pat = regex.compile(PAT_STR[pattern])
    words: collections.Counter[tuple[int, ...]] = collections.Counter()
    for t in texts:
        for piece in pat.findall(t):
            b = piece.encode()
            if len(b) >= 2:
                words[tuple(b)] += 1
    vocab = [bytes([i]) for i in range(256)]
    id_of = {b: i for i, b in enumerate(vocab)}
    while len(vocab) < vocab_size:
        pairs: collections.Counter[tuple[int, int]] = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        new = vocab[a] + vocab[b]
        if new in id_of:
            nid = id_of[new]
        else:
            nid = len(vocab)
            vocab.append(new)
            id_of[new] = nid
        merged: collections.Counter[tuple[int, ...]] = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(nid)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return vocab


def _texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    shakespeare = (FIX / "samples" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:6000]
    return (
        [shakespeare] + [hostile_text(rng, 40) for _ in range(20)] + ["aaaa aaaaa aaa", "abababab"]
    )


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k_base", "o200k_base"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_python_reference(pattern, seed):
    texts = _texts(seed)
    tok = BPETokenizer.train(texts, 256 + 300, pattern=pattern, progress=False)
    expect = reference_train(texts, 256 + 300, pattern)
    got = [tok.token_bytes(i) for i in range(len(expect))]
    assert got == expect
    assert tok.vocab_size == len(expect)


def test_threads_and_files_give_the_same_result(tmp_path):
    text = (FIX / "samples" / "tinyshakespeare.txt").read_text(encoding="utf-8") * 3
    f = tmp_path / "a.txt"
    f.write_text(text, encoding="utf-8")
    a = BPETokenizer.train([text], 600, num_threads=1, progress=False)
    b = BPETokenizer.train(f, 600, num_threads=2, progress=False)
    c = BPETokenizer.train([str(f)], 600, num_threads=3, progress=False)
    ids = [a.token_bytes(i) for i in range(a.vocab_size)]
    assert (
        ids
        == [b.token_bytes(i) for i in range(b.vocab_size)]
        == [c.token_bytes(i) for i in range(c.vocab_size)]
    )


def test_saved_tiktoken_file_loads_in_tiktoken(tmp_path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    texts = [s.read_text(encoding="utf-8") for s in sorted((FIX / "samples").glob("*.txt"))]
    tok = BPETokenizer.train(
        texts,
        1200,
        pattern="o200k_base",
        special_tokens=["<|endoftext|>"],
        out=tmp_path / "tok",
        progress=False,
    )
    assert tok.eot_id == tok.vocab_size - 1
    enc = tiktoken.Encoding(
        "trained",
        pat_str=tok.pat_str,
        mergeable_ranks=load_tiktoken_bpe(str(tmp_path / "tok" / "tokenizer.tiktoken")),
        special_tokens=tok.special_tokens,
    )
    rng = random.Random(5)
    for t in texts + [hostile_text(rng, 100) for _ in range(30)]:
        assert tok.encode(t) == enc.encode_ordinary(t)
    again = BPETokenizer.load(tmp_path / "tok")
    assert again.encode(texts[0]) == tok.encode(texts[0])
    assert again.special_tokens == {"<|endoftext|>": tok.vocab_size - 1}


def test_bad_training_input(tmp_path):
    with pytest.raises(TokenizerError):
        BPETokenizer.train(["abc"], 100)
    with pytest.raises(TokenizerError):
        BPETokenizer.train(["abc"], 300, pattern="nope")
    with pytest.raises(TokenizerError):
        BPETokenizer.train(str(tmp_path / "missing.txt"), 300)
    tok = BPETokenizer.train([""], 300, progress=False)  # nothing to learn: bytes only
    assert tok.vocab_size == 256


def test_one_long_line_of_text_trains_instead_of_failing_as_a_file_name():
    """A text of one line longer than the OS's name limit is a text, not a missing file."""
    from llmcore.builtin.bpe import BPETokenizer

    line = "the quick brown fox jumps over the lazy dog " * 40  # ~1,800 characters, no newline
    tok = BPETokenizer.train([line], vocab_size=270)
    assert tok.decode(tok.encode(line)) == line

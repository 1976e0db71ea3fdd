"""``llmcore tokenizer encode|decode|train|info``."""

from __future__ import annotations

import json

from llmcore.cli import main
from tests.test_bpe_common import FIX, ours

RANKS = str(FIX / "cl100k_base.tiktoken")


def test_encode_decode_info(capsys):
    assert main(["tokenizer", "encode", RANKS, "hello world"]) == 0
    out = capsys.readouterr().out.split()
    assert [int(x) for x in out] == ours("cl100k_base").encode("hello world")
    assert main(["tokenizer", "decode", RANKS, *out]) == 0
    assert capsys.readouterr().out == "hello world"
    assert main(["tokenizer", "encode", RANKS, "<|endoftext|>", "--allow-special", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [100257]
    assert main(["tokenizer", "info", RANKS, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 100277 and info["eot_id"] == 100257


def test_errors_are_one_line(capsys):
    assert main(["tokenizer", "decode", RANKS, "99999999"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmcore: error:") and "out of range" in err and err.count("\n") == 1
    assert main(["tokenizer", "info", "/nonexistent/tok"]) == 1
    assert main(["tokenizer", "encode", RANKS, "x", "--encoding", "bogus"]) == 1
    assert "unknown encoding" in capsys.readouterr().err


def test_train(tmp_path, capsys):
    out = tmp_path / "tok"
    sample = str(FIX / "samples" / "tinyshakespeare.txt")
    assert (
        main(
            [
                "tokenizer",
                "train",
                sample,
                "--vocab-size",
                "400",
                "--out",
                str(out),
                "--special-token",
                "<|endoftext|>",
                "--pattern",
                "gpt2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (out / "llmcore-tokenizer.json").exists() and (out / "tokenizer.tiktoken").exists()
    assert main(["tokenizer", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 400 and info["eot_id"] == 399 and info["pattern"] == "gpt2"
    assert (
        main(
            [
                "tokenizer",
                "train",
                str(tmp_path / "missing.txt"),
                "--vocab-size",
                "300",
                "--out",
                str(out),
            ]
        )
        == 1
    )

"""The CLI's rough edges: tokenizer training that cannot give the vocabulary asked for, an
existing ``--out`` (never overwritten without ``--force``, never half-written), what
``tokenizer encode`` accepts, and an empty config file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import llmcore
from llmcore.checkpoint import save_checkpoint
from llmcore.cli import main
from llmcore.errors import TokenizerWarning

SHAKESPEARE = Path(llmcore.__file__).parent / "datasets" / "tinyshakespeare.txt"


def _digest(root: Path) -> str:
    """sha256 over a folder's relative file names and contents."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture
def text(tmp_path) -> Path:
    f = tmp_path / "text.txt"
    f.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return f


def _train(*args: str) -> int:
    return main(["tokenizer", "train", *args])


# -- tokenizer train: too little text, binary text ------------------------------------------


@pytest.mark.parametrize(
    "content, said",
    [(b"", "(empty)"), (b"abc abc\n", "8 bytes of text hold too few repeated pairs")],
)
def test_too_little_text_for_the_vocabulary_fails(tmp_path, capsys, content, said):
    f = tmp_path / "small.txt"
    f.write_bytes(content)
    out = tmp_path / "tok"
    assert _train(str(f), "--vocab-size", "300", "--out", str(out)) == 1
    err = capsys.readouterr().err
    # 256 byte tokens plus one merge per distinct repeated pair: none in "", 3 in "abc abc"
    got = 256 if not content else 259
    assert err.startswith(f"llmcore: error: {f}: gave only {got} of the 300 tokens asked for")
    assert said in err and "--allow-smaller-vocab" in err
    assert not out.exists() and _siblings(out) == ["small.txt"]


def test_a_smaller_vocabulary_is_kept_on_request_with_a_warning(tmp_path, capsys):
    f = tmp_path / "small.txt"
    f.write_text("abc abc\n")
    out = tmp_path / "tok"
    with pytest.warns(TokenizerWarning, match="gave only 259 of the 300 tokens"):
        assert (
            _train(str(f), "--vocab-size", "300", "--out", str(out), "--allow-smaller-vocab") == 0
        )
    assert llmcore.load_tokenizer(out).vocab_size == 259


@pytest.mark.parametrize(
    "content, said",
    [
        (b"\x7fELF\x02\x01\x01\x00\x00", "a binary file (NUL byte at offset 7)"),
        ("café".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3)"),
    ],
)
def test_a_binary_file_is_named(tmp_path, capsys, content, said):
    f = tmp_path / "data.bin"
    f.write_bytes(content * 100)
    assert _train(str(f), "--vocab-size", "300", "--out", str(tmp_path / "tok")) == 1
    assert (
        capsys.readouterr().err
        == f"llmcore: error: {f}: {said}; tokenizer train needs UTF-8 text\n"
    )
    assert not (tmp_path / "tok").exists()


# -- an existing --out -----------------------------------------------------------------------


def test_tokenizer_train_refuses_an_existing_out_unless_forced(tmp_path, text, capsys):
    out = tmp_path / "tok"
    assert _train(str(text), "--vocab-size", "300", "--out", str(out)) == 0
    before = _digest(out)
    assert _train(str(text), "--vocab-size", "280", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"{out}: already exists; pass --force" in err
    assert _digest(out) == before and llmcore.load_tokenizer(out).vocab_size == 300
    assert _train(str(text), "--vocab-size", "280", "--out", str(out), "--force") == 0
    assert llmcore.load_tokenizer(out).vocab_size == 280 and _siblings(out) == ["text.txt", "tok"]


def test_an_empty_out_folder_is_free(tmp_path, text):
    out = tmp_path / "tok"
    out.mkdir()
    assert _train(str(text), "--vocab-size", "300", "--out", str(out)) == 0
    assert llmcore.load_tokenizer(out).vocab_size == 300


def test_a_failed_write_leaves_nothing_half_written(tmp_path, text, monkeypatch, capsys):
    """A save that dies midway leaves neither a partial --out nor a temporary folder, and a
    forced replace that dies keeps the old folder."""
    from llmcore import plugins

    cls = plugins.factory("tokenizer", "bpe")
    real_save = cls.save

    def save_then_fail(self, path):
        real_save(self, path)
        raise OSError(28, "No space left on device")

    out = tmp_path / "tok"
    monkeypatch.setattr(cls, "save", save_then_fail)
    assert _train(str(text), "--vocab-size", "300", "--out", str(out)) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert _siblings(out) == ["text.txt"]
    monkeypatch.setattr(cls, "save", real_save)
    assert _train(str(text), "--vocab-size", "300", "--out", str(out)) == 0
    before = _digest(out)
    monkeypatch.setattr(cls, "save", save_then_fail)
    assert _train(str(text), "--vocab-size", "280", "--out", str(out), "--force") == 1
    assert _digest(out) == before and _siblings(out) == ["text.txt", "tok"]


def _char_run(tmp_path: Path, name: str = "run") -> Path:
    cfg = llmcore.load_config("shakespeare-char", ["model.n_layer=1", "model.block_size=16"])
    tok = llmcore.create("tokenizer", "char", chars=list(" abcdefgh"))
    run = tmp_path / name
    save_checkpoint(run, 3, llmcore.build_model(cfg, tok.vocab_size), cfg, tok)
    return run


def test_convert_refuses_an_existing_out_unless_forced(tmp_path, capsys):
    pytest.importorskip("transformers")
    run = _char_run(tmp_path)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["convert", "--to-hf", str(run), "--out", str(out)]) == 1
    assert f"{out}: already exists; pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert main(["convert", "--to-hf", str(run), "--out", str(out), "--force"]) == 0
    assert (out / "config.json").exists() and not (out / "mine.txt").exists()
    back = tmp_path / "back"
    assert main(["convert", "--from-hf", str(out), "--out", str(back)]) == 0
    before = _digest(back)
    assert main(["convert", "--from-hf", str(out), "--out", str(back)]) == 1
    assert f"{back}: already exists" in capsys.readouterr().err and _digest(back) == before
    assert llmcore.load_checkpoint(back).tokenizer.encode("bad") == [2, 1, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "hf", "run"]


# -- tokenizer encode: run folders, bundled names, --allow-special ----------------------------


def test_encode_takes_a_run_folder(tmp_path, capsys):
    run = _char_run(tmp_path)
    # the alphabet " abcdefgh": each character's id is its index
    for where in (run, run / "ckpt" / "00000003"):
        assert main(["tokenizer", "encode", str(where), "fade", "--json"]) == 0
        assert capsys.readouterr().out.strip() == "[6, 1, 4, 5]"


def test_encode_takes_a_bundled_name_and_allow_special(capsys):
    # GPT-2's published ids: "Hello" 15496, " world" 995, "<|endoftext|>" 50256
    assert main(["tokenizer", "encode", "gpt2", "Hello world<|endoftext|>", "--allow-special"]) == 0
    assert capsys.readouterr().out.split() == ["15496", "995", "50256"]
    assert main(["tokenizer", "encode", "gpt2", "<|endoftext|>"]) == 0
    assert "50256" not in capsys.readouterr().out.split()  # plain text without the flag
    assert main(["tokenizer", "info", "gpt2", "--json"]) == 0
    assert '"vocab_size": 50257' in capsys.readouterr().out
    assert main(["tokenizer", "encode", "gpt5", "x"]) == 1
    err = capsys.readouterr().err
    assert "gpt5: no such tokenizer file or folder, run folder or bundled encoding" in err
    assert "gpt2" in err


# -- an empty config file --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content", [("empty.yaml", ""), ("c.yaml", "# nothing\n"), ("e.toml", "")]
)
def test_an_empty_config_file_is_an_error(tmp_path, capsys, name, content):
    cfg = tmp_path / name
    cfg.write_text(content)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}: the config file is empty" in err and "--preset" in err
    assert not (tmp_path / "run").exists()

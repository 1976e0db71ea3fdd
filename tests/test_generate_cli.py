"""``llmcore generate`` and ``llmcore chat`` on a small saved checkpoint."""

from __future__ import annotations

import io

import pytest
import torch

from llmcore import build_model, generate, load_checkpoint
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.checkpoint import save_checkpoint
from llmcore.cli import build_parser, main
from llmcore.config import Component, load_config

ALPHABET = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.:!?\n"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tok = CharTokenizer(ALPHABET)
    cfg = load_config(
        "shakespeare-char",
        ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=48"],
    )
    cfg.model.init_std = 0.4
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=tok.vocab_size)
    out = tmp_path_factory.mktemp("run")
    save_checkpoint(out, 1, model, cfg, tok)
    return out


def test_generate_streams_greedy_text(run_dir, capsys):
    assert (
        main(["generate", str(run_dir), "--prompt", "hello", "--greedy", "--max-new-tokens", "12"])
        == 0
    )
    loaded = load_checkpoint(run_dir)
    ref = generate(loaded.model, loaded.tokenizer, "hello", max_new_tokens=12)[0].text
    assert capsys.readouterr().out == "hello" + ref + "\n"


def test_generate_sampling_flags_are_seeded(run_dir, capsys):
    argv = ["generate", str(run_dir), "--prompt", "ab", "--temperature", "1.3", "--top-k", "10"]
    argv += ["--top-p", "0.9", "--min-p", "0.01", "--repetition-penalty", "1.2", "--seed", "4"]
    argv += ["--max-new-tokens", "20"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and len(first) == 2 + 20 + 1


def test_generate_stop_string(run_dir, capsys):
    loaded = load_checkpoint(run_dir)
    ref = generate(loaded.model, loaded.tokenizer, "hello", max_new_tokens=30)[0].text
    stop = ref[5:7]
    argv = ["generate", str(run_dir), "--prompt", "hello", "--greedy", "--max-new-tokens", "30"]
    assert main([*argv, "--stop", stop]) == 0
    assert capsys.readouterr().out == "hello" + ref[: ref.find(stop)] + "\n"


def test_generate_prompt_file_batch(run_dir, tmp_path, capsys):
    f = tmp_path / "prompts.txt"
    f.write_text("hello\n\nab c\n", encoding="utf-8")
    argv = ["generate", str(run_dir), "--prompt-file", str(f), "--greedy", "--max-new-tokens", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    loaded = load_checkpoint(run_dir)
    for p in ("hello", "ab c"):
        alone = generate(loaded.model, loaded.tokenizer, p, max_new_tokens=8)[0].text
        assert p + alone in out


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--top-p", "1.5"], "top_p must be in"),
        (["--temperature", "-1"], "temperature must be > 0"),
        (["--top-k", "0"], "top_k must be"),
        (
            ["--max-new-tokens", "500", "--set", "generate.sliding_context=false"],
            "exceeds the model's context",
        ),
        (["--stop", ""], "stop strings must be non-empty"),
        (["--top-k", "99"], "larger than the vocabulary"),
    ],
)
def test_generate_bad_flags_are_one_line_errors(run_dir, capsys, flags, match):
    assert main(["generate", str(run_dir), "--prompt", "ab", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("llmcore: error: ") and match in captured.err


def test_chat_streams_answers_over_the_template(run_dir):
    args = build_parser().parse_args(["chat", str(run_dir), "--greedy", "--max-new-tokens", "10"])
    from llmcore.cli import chat

    out = io.StringIO()
    assert chat.run(args, stdin=io.StringIO("hi\nok\n/quit\n"), stdout=out) == 0
    loaded = load_checkpoint(run_dir)
    from llmcore.finetune.chat import Chat, chat_template_of

    c = Chat(chat_template_of(loaded.config), loaded.tokenizer)
    first = generate(
        loaded.model, loaded.tokenizer, c.prompt_text("hi"), max_new_tokens=10, stop=["\n"]
    )[0]
    assert out.getvalue().startswith(first.text + "\n")
    assert out.getvalue().count("\n") == 2  # two answers


def test_config_decoder_is_used_without_flags(run_dir, capsys):
    cfg = load_checkpoint(run_dir).config
    assert cfg.generate.decoder == Component("multinomial")
    argv = ["generate", str(run_dir), "--prompt", "a", "--max-new-tokens", "5", "--seed", "1"]
    assert main(argv) == 0
    assert len(capsys.readouterr().out) == 1 + 5 + 1


@pytest.fixture(scope="module")
def special_run_dir(tmp_path_factory):
    """A run whose BPE tokenizer has the special token <|endoftext|>."""
    import llmcore

    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text("the cat sat on the mat. a dog ate the bone. " * 20, encoding="utf-8")
    tok = llmcore.train_tokenizer([corpus], 300, special_tokens=["<|endoftext|>"])
    cfg = load_config(
        "shakespeare-char",
        ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=64"],
    )
    cfg.tokenizer.name = "bpe"
    cfg.model.init_std = 0.4
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=tok.vocab_size)
    out = tmp_path_factory.mktemp("special-run")
    save_checkpoint(out, 1, model, cfg, tok)
    return out


@pytest.mark.parametrize("allow", [False, True])
def test_generate_prompt_special_tokens_only_with_allow_special(special_run_dir, capsys, allow):
    prompt = "the cat<|endoftext|>a dog"
    flags = ["--allow-special"] if allow else []
    argv = ["generate", str(special_run_dir), "--prompt", prompt, "--greedy"]
    assert main([*argv, "--max-new-tokens", "6", *flags]) == 0
    loaded = load_checkpoint(special_run_dir)
    tok = loaded.tokenizer
    eot = tok.special_tokens["<|endoftext|>"]
    ids = tok.encode(prompt, allowed_special="all" if allow else ())
    assert (eot in ids) is allow  # plain text by default: no special id
    ref = generate(loaded.model, tok, ids, max_new_tokens=6)[0].text
    assert capsys.readouterr().out == prompt + ref + "\n"


def test_generate_help_documents_allow_special(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--allow-special" in capsys.readouterr().out


def test_generate_binary_prompt_file_is_a_one_line_error(run_dir, tmp_path, capsys):
    f = tmp_path / "prompts.bin"
    f.write_bytes(b"ab\n\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00")
    assert main(["generate", str(run_dir), "--prompt-file", str(f)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"llmcore: error: {f}: not UTF-8 text (byte 0xff at offset 11); "
        "--prompt-file takes a text file with one prompt per line\n"
    )


def test_generate_prompt_file_keeps_crlf_lines(run_dir, tmp_path, capsys):
    f = tmp_path / "prompts.txt"
    f.write_bytes(b"hello\r\n\r\nab c\r\n")
    argv = ["generate", str(run_dir), "--prompt-file", str(f), "--greedy", "--max-new-tokens", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    loaded = load_checkpoint(run_dir)
    texts = [
        generate(loaded.model, loaded.tokenizer, p, max_new_tokens=4)[0].text
        for p in ("hello", "ab c")
    ]
    assert out == f"--- 1\nhello{texts[0]}\n\n--- 2\nab c{texts[1]}\n"


def test_chat_reports_a_message_it_cannot_encode_and_goes_on(run_dir):
    args = build_parser().parse_args(["chat", str(run_dir), "--greedy", "--max-new-tokens", "10"])
    from llmcore.cli import chat

    out = io.StringIO()
    assert chat.run(args, stdin=io.StringIO("h\u00e9\nhi\n/quit\n"), stdout=out) == 0
    loaded = load_checkpoint(run_dir)
    from llmcore.finetune.chat import Chat, chat_template_of

    c = Chat(chat_template_of(loaded.config), loaded.tokenizer)
    answer = generate(
        loaded.model, loaded.tokenizer, c.prompt_text("hi"), max_new_tokens=10, stop=["\n"]
    )[0]
    lines = out.getvalue().split("\n")
    assert lines[0].startswith("(the message cannot be encoded: ") and "'\u00e9'" in lines[0]
    # the failed message left no trace: the next answer is the one to "hi" alone
    assert lines[1] == answer.text

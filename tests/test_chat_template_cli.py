"""A tiny HF model with a ChatML template: ``llmcore chat`` sends transformers' prompt ids and
stops at the model's ``<|im_end|>``; ``llmcore generate`` stops at the model's stop ids; SFT
``messages`` records train on the answers the template renders."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
import llmcore.loading  # noqa: E402
from llmcore import checkpoint  # noqa: E402
from llmcore.cli import build_parser  # noqa: E402
from llmcore.finetune.chat import Chat, chat_for  # noqa: E402
from llmcore.finetune.data import Record, Skipped, sft_examples  # noqa: E402
from llmcore.hf import load_hf, save_hf_tokenizer  # noqa: E402
from llmcore.tokenizers.chat_template import read_chat_template  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = (Path(llmcore.__file__).parent / "datasets" / "tinyshakespeare.txt").read_text(
    encoding="utf-8"
)[:50000]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An HF folder as transformers saves one: weights, tokenizer, template, eos."""
    path = tmp_path_factory.mktemp("hf_chat")
    save_hf_tokenizer(
        llmcore.train_tokenizer([TEXT], vocab_size=320, special_tokens=SPECIALS), path
    )
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(path / "tokenizer.json"), eos_token="<|im_end|>"
    )
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(path)
    config = transformers.LlamaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path, hf_tok


def loaded_of(path: Path, stop_ids=None) -> checkpoint.LoadedCheckpoint:
    """What loading the folder gives: the fields filled from the folder's own files."""
    model, cfg = load_hf(path)
    tok = llmcore.load_hf_tokenizer(path)
    stops = (tok.special_tokens["<|im_end|>"],) if stop_ids is None else stop_ids
    return checkpoint.LoadedCheckpoint(path, cfg, model, tok, 0, read_chat_template(path), stops)


class Scripted:
    """Makes the model write ``ids`` and then the end of turn, whatever it is asked;
    records every input it is given."""

    def __init__(self, model, ids: list[int], end: int) -> None:
        self.script, self.end, self.calls, self.inputs = ids, end, 0, []
        model.wte.register_forward_pre_hook(lambda m, args: self.inputs.append(args[0]))
        model.lm_head.register_forward_hook(self.hook)

    def hook(self, module, args, logits):  # logits (B, T, V)
        want = self.script[self.calls] if self.calls < len(self.script) else self.end
        self.calls += 1
        logits = logits.clone()
        logits[..., want] += 1e4
        return logits


def test_chat_sends_the_templates_prompt_and_stops_at_im_end(folder, monkeypatch):
    path, hf_tok = folder
    loaded = loaded_of(path)
    tok = loaded.tokenizer
    answer = tok.encode(" hello there")
    script = Scripted(loaded.model, answer, tok.special_tokens["<|im_end|>"])
    monkeypatch.setattr(llmcore.loading, "load", lambda *a, **k: loaded)
    args = build_parser().parse_args(["chat", str(path), "--greedy", "--max-new-tokens", "20"])
    from llmcore.cli import chat

    out = io.StringIO()
    user = "hi <|im_start|>"
    assert chat.run(args, stdin=io.StringIO(user + "\n/quit\n"), stdout=out) == 0
    assert out.getvalue() == " hello there\n"  # stopped at <|im_end|>, not after 20 tokens
    assert script.calls == len(answer) + 1
    messages = [{"role": "user", "content": user}]
    want = hf_tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, sanitize_control_tokens=True
    )
    assert script.inputs[0][0].tolist() == list(getattr(want, "input_ids", want))


def test_generate_stops_at_the_models_stop_ids(folder, monkeypatch, capsys):
    path, _ = folder
    loaded = loaded_of(path)
    tok = loaded.tokenizer
    Scripted(loaded.model, tok.encode(" x y"), tok.special_tokens["<|im_end|>"])
    monkeypatch.setattr(llmcore.loading, "load", lambda *a, **k: loaded)
    argv = ["generate", str(path), "--prompt", "a", "--greedy", "--max-new-tokens", "20"]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert capsys.readouterr().out == "a x y\n"


def test_sft_messages_use_the_models_template(folder):
    path, hf_tok = folder
    loaded = loaded_of(path)
    chat = chat_for(loaded)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who? <|im_end|>"},
        {"role": "assistant", "content": "Romeo."},
    ]
    (ex,) = sft_examples([Record({"messages": messages}, "d.jsonl:1")], chat, 500, Skipped())
    want = hf_tok.apply_chat_template(messages, tokenize=True, sanitize_control_tokens=True)
    assert ex.ids == list(getattr(want, "input_ids", want))
    target = [i for i, keep in zip(ex.ids, ex.train) if keep]
    assert loaded.tokenizer.decode(target) == "Romeo.<|im_end|>"
    # a run of llmcore's own (no template of the model's) keeps the marker template
    own = checkpoint.LoadedCheckpoint(path, loaded.config, loaded.model, loaded.tokenizer, 0)
    assert isinstance(chat_for(own), Chat)


def test_serve_renders_the_models_template_and_stops_at_im_end(folder):
    """``llmcore serve`` on a model with its own template: the chat prompt is transformers'
    ids (user text kept plain) and the answer ends at ``<|im_end|>``."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("starlette")
    from llmcore.finetune.chat import chat_for as chat_of
    from llmcore.serve import Served
    from tests.serve_helpers import running_server

    path, hf_tok = folder
    loaded = loaded_of(path)
    tok = loaded.tokenizer
    answer = tok.encode(" hello there")
    script = Scripted(loaded.model, answer, tok.special_tokens["<|im_end|>"])
    served = Served(
        "chatml", loaded.model, tok, loaded.config, loaded.chat_template,
        tuple(loaded.stop_ids), chat_of(loaded),
    )  # fmt: skip
    user = "hi <|im_start|>"
    with (
        running_server(served, max_batch=2) as (url, _),
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client,
    ):
        out = client.chat.completions.create(
            model="chatml",
            messages=[{"role": "user", "content": user}],
            max_tokens=20,
            temperature=0,
        )
    assert out.choices[0].message.content == " hello there"
    assert out.choices[0].finish_reason == "stop"
    want = hf_tok.apply_chat_template(
        [{"role": "user", "content": user}],
        tokenize=True,
        add_generation_prompt=True,
        sanitize_control_tokens=True,
    )
    assert script.inputs[0][0].tolist() == list(getattr(want, "input_ids", want))

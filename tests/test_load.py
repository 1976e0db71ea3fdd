"""``llmcore.load``: runs, HF folders (chat template, stop ids, tokenizer checked at load
time, shards that disagree with their index) and GGUF files through one call."""

from __future__ import annotations

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import llmcore  # noqa: E402
from llmcore.errors import CheckpointError, TokenizerError  # noqa: E402
from llmcore.loading import source_kind  # noqa: E402
from tests.test_gguf import IDS, hf_model, write_gguf  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


@pytest.fixture
def hf_folder(tmp_path):
    """A tiny Llama HF folder with a byte-level tokenizer.json, written by transformers."""
    src = llmcore.load(write_gguf(hf_model("llama", hidden=64), tmp_path / "m.gguf"))
    folder = tmp_path / "hf"
    llmcore.hf.save_hf(src.model, folder, src.tokenizer)
    return folder


def logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def test_hf_folder_matches_transformers(hf_folder):
    loaded = llmcore.load(hf_folder)
    ref = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    torch.testing.assert_close(logits(loaded.model), logits(ref), rtol=1e-5, atol=1e-5)
    assert loaded.tokenizer.encode("the") == llmcore.load_hf_tokenizer(hf_folder).encode("the")
    assert source_kind(hf_folder) == "hf"


def test_chat_template_and_stop_ids(hf_folder):
    cfg = json.loads((hf_folder / "config.json").read_text())
    cfg["eos_token_id"] = 7
    (hf_folder / "config.json").write_text(json.dumps(cfg))
    (hf_folder / "generation_config.json").unlink(missing_ok=True)
    assert llmcore.load(hf_folder).stop_ids == (7,)
    (hf_folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [9, 3, 9]}))
    (hf_folder / "chat_template.jinja").write_text(TEMPLATE)
    loaded = llmcore.load(hf_folder)
    assert loaded.stop_ids == (9, 3) and loaded.chat_template == TEMPLATE
    tc = json.loads((hf_folder / "tokenizer_config.json").read_text())
    tc["chat_template"] = [
        {"name": "tool_use", "template": "x"},
        {"name": "default", "template": "d"},
    ]
    (hf_folder / "tokenizer_config.json").write_text(json.dumps(tc))
    # as in transformers, a chat_template.jinja file takes priority over tokenizer_config.json
    assert llmcore.load(hf_folder).chat_template == TEMPLATE
    (hf_folder / "chat_template.jinja").unlink()
    assert llmcore.load(hf_folder).chat_template == "d"


def test_bad_tokenizer_fails_at_load_time(hf_folder):
    (hf_folder / "tokenizer.json").write_text("{oops")
    with pytest.raises(TokenizerError, match=r"tokenizer.json"):
        llmcore.load_hf(hf_folder)
    with pytest.raises(TokenizerError, match=r"tokenizer.json"):
        llmcore.load(hf_folder)


def test_shards_and_index_that_disagree(tmp_path):
    model = hf_model("llama", hidden=64)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    assert len(shards) > 1
    name = next(n for n, s in data["weight_map"].items() if s == shards[0])
    data["weight_map"][name] = shards[1]
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"places tensor '{name}' in {shards[1]}"):
        llmcore.load_hf(tmp_path)


def test_run_folder_with_dtype(hf_folder, tmp_path):
    from llmcore.cli import main

    run = tmp_path / "run"
    assert main(["convert", "--from-hf", str(hf_folder), "--out", str(run)]) == 0
    assert source_kind(run) == "run"
    loaded = llmcore.load(run, dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.chat_template is None and loaded.stop_ids == ()


def test_finetune_base_config_from_an_hf_folder(hf_folder):
    from llmcore.finetune.models import read_run_config

    path, cfg = read_run_config(hf_folder)
    assert path == hf_folder
    assert cfg.model == llmcore.load(hf_folder).config.model

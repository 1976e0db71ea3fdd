"""The ``lora`` adapter: exact identity at zero B, merge equivalence, targets, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcore import plugins
from llmcore.builtin.lora import LoRALinear, adapter_state
from llmcore.checkpoint import load_checkpoint, save_checkpoint
from llmcore.config import Component, load_config
from llmcore.errors import CheckpointError, ConfigError
from llmcore.finetune.merge import merge_lora
from llmcore.finetune.models import load_finetuned
from llmcore.model import build_model


def tiny_config(mlp: str = "gelu"):
    return load_config(
        None,
        [
            "model.n_layer=2",
            "model.n_head=2",
            "model.n_embd=32",
            "model.block_size=16",
            f"model.mlp={mlp}",
            "model.bias=true",
        ],
    )


def tiny_model(mlp: str = "gelu", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_config(mlp), vocab_size=20).eval()


def randomise_b(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


IDS = torch.tensor([[1, 5, 7, 2, 9, 3, 3, 0], [4, 4, 8, 1, 0, 2, 6, 7]])


@pytest.mark.parametrize(
    "mlp,targets",
    [("gelu", ["attn.qkv", "attn.proj"]), ("gelu", ["mlp"]), ("swiglu", ["attn.qkv", "mlp.down"])],
)
def test_zero_b_leaves_logits_unchanged_and_merge_matches_the_adapter(mlp, targets):
    model = tiny_model(mlp)
    before = model(IDS)
    lora = plugins.create("adapter", "lora", rank=4, alpha=8.0, targets=targets)
    lora.apply(model)
    torch.testing.assert_close(model(IDS), before, rtol=0, atol=0)
    randomise_b(model)
    adapted = model(IDS)
    assert (adapted - before).abs().max() > 1e-3  # the adapter now changes something
    merged = lora.merge(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(merged(IDS), adapted, rtol=1e-5, atol=1e-5)


def test_lora_linear_matches_the_formula():
    base = nn.Linear(6, 4)
    layer = LoRALinear(base, rank=2, alpha=6.0, dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    want = x @ base.weight.T + base.bias + (6.0 / 2) * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_only_the_adapter_trains_and_the_targets_are_the_ones_named():
    model = tiny_model("swiglu")
    plugins.create("adapter", "lora", rank=2, targets=["mlp.gate", "mlp.up"]).apply(model)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(
        f"blocks.{i}.mlp.{w}.lora_{ab}" for i in range(2) for w in ("gate", "up") for ab in "AB"
    )
    assert set(adapter_state(model)) == set(trainable)


def test_bad_lora_settings_name_the_field():
    with pytest.raises(ConfigError, match="lora.targets: .*match no linear layer.*attn.qkv"):
        plugins.create("adapter", "lora", targets=["attn.q_proj"]).apply(tiny_model())
    with pytest.raises(ConfigError, match="lora.rank"):
        plugins.create("adapter", "lora", rank=0)


def test_adapter_run_saves_loads_and_merges_to_a_plain_checkpoint(tmp_path):
    from llmcore.builtin.char_tokenizer import CharTokenizer

    cfg = tiny_config()
    tok = CharTokenizer("abcdefghijklmnopqrst")
    model = build_model(cfg, tok.vocab_size).eval()
    cfg.finetune.adapter = Component("lora", {"rank": 4, "targets": ["attn.qkv", "mlp"]})
    plugins.create("adapter", "lora", rank=4, targets=["attn.qkv", "mlp"]).apply(model)
    randomise_b(model)
    want = model(IDS)
    save_checkpoint(tmp_path / "run", 7, model, cfg, tok)
    loaded = load_finetuned(tmp_path / "run")
    torch.testing.assert_close(loaded.model(IDS), want)
    direct = load_checkpoint(tmp_path / "run")  # what generate, chat and eval use
    torch.testing.assert_close(direct.model(IDS), want)
    path = merge_lora(tmp_path / "run", tmp_path / "merged")
    plain = load_checkpoint(path)  # the ordinary loader: no adapter in the merged run
    assert plain.config.finetune.adapter is None and plain.step == 7
    torch.testing.assert_close(plain.model(IDS), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="no adapter"):
        merge_lora(tmp_path / "merged", tmp_path / "again")

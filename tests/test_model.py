"""The transformer's modules built from hand-made parts, with no plugin registry involved."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcore import plugins
from llmcore.config import Component, ModelConfig
from llmcore.model import Block, CausalSelfAttention, KVCache, build_model


class _Unrotated:
    """A position part that leaves q and k alone (what ``learned`` does in attention)."""

    def rotate(self, q, k, positions):
        return q, k


def _attend(q, k, v, *, causal, mask=None, window=None):
    """Plain causal softmax attention with grouped-query heads, written out by hand."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    Tq, Tk = scores.shape[-2:]
    future = torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1)
    return scores.masked_fill(future, float("-inf")).softmax(-1) @ v


@pytest.fixture
def no_registry(monkeypatch):
    """Fail any lookup in the plugin registry for the duration of the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the plugin registry was used")

    monkeypatch.setattr(plugins, "registry", refuse)
    monkeypatch.setattr(plugins, "create", refuse)


def _block(dim=16, n_head=4, n_kv_head=2, head_dim=4):
    attn = CausalSelfAttention(dim, n_head, n_kv_head, head_dim, _attend, qkv_bias=False)
    mlp = nn.Sequential(nn.Linear(dim, 3 * dim), nn.ReLU(), nn.Linear(3 * dim, dim))
    return Block(nn.LayerNorm(dim), attn, nn.LayerNorm(dim), mlp)


def test_block_from_hand_made_parts_matches_a_written_out_reference(no_registry):
    torch.manual_seed(0)
    block = _block()
    for p in block.parameters():  # away from LayerNorm's ones and zeros
        nn.init.normal_(p, 0.0, 0.3)
    x = torch.randn(2, 5, 16)
    out = block(x, _Unrotated(), torch.arange(5))

    a = block.attn
    h = F.layer_norm(x, (16,), block.norm1.weight, block.norm1.bias)
    q, k, v = (h @ a.qkv.weight.t()).split([16, 8, 8], dim=-1)
    q = q.view(2, 5, 4, 4).transpose(1, 2)  # (B, H, T, D)
    k = k.view(2, 5, 2, 4).transpose(1, 2)  # (B, Hkv, T, D)
    v = v.view(2, 5, 2, 4).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    x1 = x + F.linear(y.transpose(1, 2).reshape(2, 5, 16), a.proj.weight, a.proj.bias)
    h2 = F.layer_norm(x1, (16,), block.norm2.weight, block.norm2.bias)
    fc, proj = block.mlp[0], block.mlp[2]
    want = x1 + F.linear(F.relu(F.linear(h2, fc.weight, fc.bias)), proj.weight, proj.bias)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_block_with_a_cache_matches_the_block_without(no_registry):
    torch.manual_seed(1)
    block = _block()
    x = torch.randn(1, 6, 16)
    full = block(x, _Unrotated(), torch.arange(6))
    cache = KVCache(1, 1, 2, 8, 4)
    first = block(x[:, :4], _Unrotated(), torch.arange(4), cache)
    cache.length = 4
    rest = block(x[:, 4:], _Unrotated(), torch.arange(4, 6), cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=1e-5, atol=1e-5)


def test_build_model_injects_the_configured_parts():
    cfg = ModelConfig(
        vocab_size=11,
        block_size=8,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=16,
        attention=Component("math"),
        norm=Component("rmsnorm"),
        mlp=Component("swiglu"),
        position=Component("rope"),
        bias=False,
    )
    model = build_model(cfg)
    for i, block in enumerate(model.blocks):
        assert type(block.norm1) is type(plugins.create("norm", "rmsnorm", dim=16, bias=False))
        assert type(block.mlp) is type(plugins.create("mlp", "swiglu", dim=16))
        assert type(block.attn.attend) is type(plugins.create("attention", "math"))
        assert block.attn.layer == i
        assert (block.attn.n_head, block.attn.n_kv_head, block.attn.head_dim) == (4, 2, 4)
        assert block.attn.qkv.bias is None
    assert model.lm_head.weight is model.wte.weight  # tied by default
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 11)

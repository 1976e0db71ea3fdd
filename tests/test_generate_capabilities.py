"""The generation engine names no plugin: it relies on what components declare (a norm's or
MLP's ``functional()``, a position's ``max_positions``, a sampler's ``fused_with``) and finds
its default decoder by its registered name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcore import build_model, generate, plugins
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.norms import LayerNorm
from llmcore.builtin.samplers import TopK, TopKTopP, TopP
from llmcore.config import Component, ModelConfig
from llmcore.errors import GenerationError
from llmcore.generation import steps
from llmcore.generation.lean import lean_step
from llmcore.generation.settings import fuse_samplers, resolve_settings

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ,.!?\n")))
PROMPT = "hello there"


def _model(position: str = "learned", **kw):
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        block_size=kw.pop("block_size", 64),
        n_layer=2,
        n_head=4,
        n_embd=32,
        init_std=0.4,
        position=Component(position),
        **kw,
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _lean_and_plain(model, monkeypatch):
    """One row's greedy log-probabilities through the lean step and through the modules."""
    kw = dict(max_new_tokens=12, logprobs=True)
    lean = generate(model, TOK, PROMPT, **kw)[0]
    monkeypatch.setattr(steps, "LEAN", False)
    plain = generate(model, TOK, PROMPT, **kw)[0]
    monkeypatch.setattr(steps, "LEAN", True)
    return lean, plain


class CountingMLP(nn.Module):
    """A third-party MLP that offers ``functional()`` and counts the calls it serves."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.calls = 0

    def forward(self, x):
        return self.proj(torch.tanh(self.fc(x)))

    def functional(self):
        def run(x):
            self.calls += 1
            return self.forward(x)

        return run


def test_the_lean_step_runs_a_components_declared_functional(monkeypatch):
    model = _model()
    for blk in model.blocks:
        blk.mlp = CountingMLP(32)
    lean, plain = _lean_and_plain(model, monkeypatch)
    # 11 decode steps after the prefill, one call per layer each
    assert [b.mlp.calls for b in model.blocks] == [11, 11]
    assert lean.ids == plain.ids and lean.logprobs == plain.logprobs


class ShiftedNorm(LayerNorm):
    """Overrides forward but not functional: its parent's function would be wrong."""

    def forward(self, x):
        return super().forward(x) + 0.25


def test_a_subclass_overriding_forward_runs_its_own_forward(monkeypatch):
    model = _model()
    for blk in model.blocks:
        shifted = ShiftedNorm(32)
        shifted.load_state_dict(blk.norm2.state_dict())
        blk.norm2 = shifted
    lean, plain = _lean_and_plain(model, monkeypatch)
    assert lean.ids == plain.ids and lean.logprobs == plain.logprobs


def test_builtin_mlps_fall_back_to_forward_when_a_layer_is_wrapped():
    for name in ("gelu", "relu", "swiglu"):
        mlp = plugins.create("mlp", name, dim=8)
        assert mlp.functional() is not None
        x = torch.randn(2, 1, 8)
        torch.testing.assert_close(mlp.functional()(x), mlp(x), rtol=0, atol=0)
        first = next(n for n, m in mlp.named_children() if isinstance(m, nn.Linear))
        setattr(mlp, first, nn.Sequential(getattr(mlp, first)))
        assert mlp.functional() is None


class UndeclaredPosition(nn.Module):
    """A third-party position without a table that does not say so: taken to end at
    block_size."""

    def embed(self, x, positions):
        return x

    def rotate(self, q, k, positions):
        return q, k


class TablelessPosition(UndeclaredPosition):
    """The same component, declaring that it has no table."""

    max_positions = None


def test_a_position_without_a_table_may_run_past_block_size():
    model = _model("none", sliding_window=8, block_size=16)
    reference = generate(model, TOK, "abc", max_new_tokens=30)[0]
    model.position = TablelessPosition()
    assert lean_step(model, model.new_cache(1, 4)) is not None
    assert generate(model, TOK, "abc", max_new_tokens=30)[0].ids == reference.ids


def test_a_position_that_does_not_declare_max_positions_ends_at_block_size():
    model = _model("none", sliding_window=8, block_size=16)
    model.position = UndeclaredPosition()
    with pytest.raises(GenerationError, match="positions end at block_size"):
        generate(model, TOK, "abc", max_new_tokens=30)
    assert len(generate(model, TOK, "abc", max_new_tokens=13)[0].ids) == 13  # within block


def test_builtin_positions_declare_their_tables():
    cfg = dict(dim=8, head_dim=4, max_seq_len=24)
    assert plugins.create("position", "learned", **cfg).max_positions == 24
    assert plugins.create("position", "rope", **cfg).max_positions == 24
    assert plugins.create("position", "none", **cfg).max_positions is None


def test_the_default_decoder_is_the_one_registered_as_greedy():
    registered = plugins.factory("decoder", "greedy")
    assert isinstance(resolve_settings(TOK).decoder, registered)


class Clamp:
    """A third-party processor that merges with a following ``Clamp``."""

    def __init__(self, lo: float) -> None:
        self.lo = lo

    def __call__(self, input_ids, logits):
        return logits.clamp(min=self.lo)

    def fused_with(self, following):
        return Clamp(max(self.lo, following.lo)) if type(following) is Clamp else None


def test_samplers_that_offer_fused_with_are_merged():
    chain = fuse_samplers([Clamp(-1.0), Clamp(0.5), TopK(3), TopP(0.9), Clamp(0.0)])
    assert [type(p) for p in chain] == [Clamp, TopKTopP, Clamp]
    assert chain[0].lo == 0.5
    x = torch.randn(2, 10)
    ref = Clamp(0.5)(None, Clamp(-1.0)(None, x))
    torch.testing.assert_close(chain[0](None, x), ref, rtol=0, atol=0)


def test_a_subclass_of_top_k_is_not_fused():
    class Wider(TopK):
        pass

    chain = fuse_samplers([Wider(3), TopP(0.9)])
    assert [type(p) for p in chain] == [Wider, TopP]

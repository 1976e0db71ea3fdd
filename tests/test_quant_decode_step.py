"""The C++ decode step of quantized Llama-shape models (llmcore.quant.decode_step).

Reference: the Python lean step (itself checked against the model's forward and, through it,
transformers' GGUF load in test_quant_model) over a copy of the same KV cache, and greedy text
through ``generate`` with the C++ step turned off.
"""

from __future__ import annotations

import copy

import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.generation import generate  # noqa: E402
from llmcore.generation.lean import LeanStep  # noqa: E402
from llmcore.quant import decode_step as ds  # noqa: E402
from llmcore.quant import set_activations  # noqa: E402
from tests.test_gguf import IDS, T, hf_model, write_gguf  # noqa: E402


def quantized(tmp_path, qtype=T.Q8_0, tied=True, extra=None):
    model = hf_model("llama", tie_word_embeddings=tied, initializer_range=0.2)
    path = write_gguf(model, tmp_path / "m.gguf", qtype, extra=extra)
    return llmcore.load(path, quantized=True)


def prefilled(model, rows: int, max_len: int = 32):
    cache = model.new_cache(rows, max_len)
    with torch.no_grad():
        model.hidden_states(IDS.repeat(rows, 1), cache=cache)
    return cache


@pytest.mark.parametrize(
    ("qtype", "tied", "acts"),
    [
        (T.Q8_0, True, "float32"),
        (T.Q4_0, False, "float32"),
        (T.Q4_K, True, "float32"),
        (T.Q6_K, False, "float32"),
        (T.Q8_0, True, "int8"),
        (T.Q4_0, False, "int8"),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_steps_match_the_python_step(tmp_path, qtype, tied, acts):
    model = quantized(tmp_path, qtype, tied).model
    set_activations(model, acts)
    fused_cache = prefilled(model, 2)
    ref_cache = copy.deepcopy(fused_cache)
    fused, ref = ds.decode_step(model, fused_cache), LeanStep(model, ref_cache)
    assert isinstance(fused, ds.QuantDecodeStep)
    pos = torch.full((1,), IDS.shape[1])
    tok = torch.tensor([[3], [7]])
    for _ in range(6):
        with torch.no_grad():
            got, want = fused(tok, pos, None), ref(tok, pos, None)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
        tok = want.argmax(-1, keepdim=True)
        pos += 1
    assert fused_cache.length == ref_cache.length == IDS.shape[1] + 6
    torch.testing.assert_close(fused_cache.k, ref_cache.k, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused_cache.v, ref_cache.v, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K], ids=lambda v: v.name)
def test_prefill_matches_the_model_forward(tmp_path, qtype):
    model = quantized(tmp_path, qtype).model
    set_activations(model, "float32")
    ids = torch.randint(
        0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1)
    )
    ref_cache, cache = model.new_cache(2, 64), model.new_cache(2, 64)
    with torch.no_grad():
        want = model.lm_head(model.hidden_states(ids, cache=ref_cache)[:, -1])
        first = ds.decode_step(model, cache).prefill(ids[:, :25])  # in two calls: the second
        got = ds.decode_step(model, cache).prefill(ids[:, 25:])  # attends to the first's keys
    assert first.shape == got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert cache.length == ref_cache.length == 40
    torch.testing.assert_close(cache.k, ref_cache.k, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cache.v, ref_cache.v, rtol=1e-4, atol=1e-4)


def _greedy(loaded, prompts, fused: bool, monkeypatch, n=12):
    monkeypatch.setattr(ds, "FUSED", fused)
    greedy = llmcore.create("decoder", "greedy")
    out = generate(
        loaded.model, loaded.tokenizer, prompts, max_new_tokens=n, decoder=greedy, samplers=[],
        eot=False,
    )  # fmt: skip
    return [g.ids for g in out]


def test_generate_runs_it_with_padded_prompts(tmp_path, monkeypatch):
    loaded = quantized(tmp_path, T.Q8_0)
    set_activations(loaded.model, "float32")
    calls = []
    step = ds.QuantDecodeStep.__call__
    monkeypatch.setattr(
        ds.QuantDecodeStep, "__call__", lambda s, *a: calls.append(1) or step(s, *a)
    )
    prompts = [[5, 17, 256, 99, 3, 200], [3, 200, 258], [7]]  # left-padded: a key mask per row
    want = _greedy(loaded, prompts, False, monkeypatch)
    assert not calls
    got = _greedy(loaded, prompts, True, monkeypatch)
    assert len(calls) == 11  # every step after the prefill
    assert got == want
    assert len({t for row in want for t in row}) > 3  # not one token repeated
    one = [_greedy(loaded, [p], True, monkeypatch)[0] for p in prompts]
    assert one == want
    same = [prompts[0], prompts[0][::-1]]  # one length: the prefill runs in C++ too
    assert _greedy(loaded, same, True, monkeypatch) == _greedy(loaded, same, False, monkeypatch)


def test_rope_scaling_tables_are_used(tmp_path):
    linear = {
        "llama.rope.scaling.type": ("linear", gguf.GGUFValueType.STRING),
        "llama.rope.scaling.factor": (4.0, gguf.GGUFValueType.FLOAT32),
    }
    loaded = quantized(tmp_path, T.Q8_0, extra=linear)
    model = loaded.model
    assert model.position.scaling
    set_activations(model, "float32")
    cache = prefilled(model, 1)
    ref_cache = copy.deepcopy(cache)
    pos, tok = torch.full((1,), IDS.shape[1]), torch.tensor([[9]])
    with torch.no_grad():
        got = ds.decode_step(model, cache)(tok, pos, None)
        want = LeanStep(model, ref_cache)(tok, pos, None)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_models_it_does_not_mirror_take_the_python_step(tmp_path):
    loaded = quantized(tmp_path, T.Q8_0)
    model = loaded.model
    cache = model.new_cache(1, 16)
    assert ds.decode_step(model, cache) is not None
    handle = model.blocks[0].mlp.register_forward_hook(lambda *a: None)  # observed
    assert ds.decode_step(model, cache) is None
    handle.remove()
    model.blocks[1].attn.window = 4  # a sliding window
    assert ds.decode_step(model, cache) is None
    model.blocks[1].attn.window = None
    attend = model.blocks[0].attn.attend
    model.blocks[0].attn.attend = lambda q, k, v, **kw: attend(q, k, v, **kw)  # not "standard"
    assert ds.decode_step(model, cache) is None
    model.blocks[0].attn.attend = attend
    model.train()
    assert ds.decode_step(model, cache) is None
    model.eval()
    dense = llmcore.load(tmp_path / "m.gguf").model  # dequantized: nn.Linear layers
    assert ds.decode_step(dense, dense.new_cache(1, 16)) is None


def test_bad_steps_are_errors_not_crashes(tmp_path):
    model = quantized(tmp_path, T.Q4_0).model
    cache = prefilled(model, 1, max_len=IDS.shape[1] + 1)
    step = ds.decode_step(model, cache)
    pos = torch.full((1,), IDS.shape[1])
    with pytest.raises(IndexError, match="outside the vocabulary"):
        step(torch.tensor([[model.config.vocab_size]]), pos, None)
    with pytest.raises(IndexError, match="rotary table"):
        step(torch.tensor([[1]]), torch.full((1,), 10**6), None)
    with pytest.raises(IndexError, match="rows for a cache"):
        step(torch.tensor([[1], [2]]), pos, None)
    assert cache.length == IDS.shape[1]  # nothing written by a refused step
    step(torch.tensor([[1]]), pos, None)
    with pytest.raises(IndexError, match="KV cache overflow"):
        step(torch.tensor([[1]]), pos + 1, None)

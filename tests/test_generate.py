"""The generation engine: KV cache against full recomputation for every attention plugin,
batching, stop ids and strings, streaming, seeds, log-probabilities and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import llmcore
from llmcore import build_model, generate, plugins, stream
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.decoders import Greedy, Multinomial
from llmcore.builtin.samplers import Temperature, TopK, TopP
from llmcore.config import Component, ModelConfig, load_config
from llmcore.errors import GenerationError
from llmcore.generation import steps

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ,.!?\n")))
ATTENTIONS = sorted(a for a in plugins.available("attention") if a in ("math", "sdpa", "native"))


def _model(attention: str = "sdpa", position: str = "learned", seed: int = 0, **kw):
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        block_size=kw.pop("block_size", 64),
        n_layer=2,
        n_head=4,
        n_kv_head=kw.pop("n_kv_head", None),
        n_embd=32,
        init_std=0.4,  # large weights: varied continuations, decisive argmax
        attention=Component(attention),
        position=Component(position),
        **kw,
    )
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _recompute(model, prompt: str, n: int) -> list[int]:
    """Greedy decoding without a cache: the full forward pass at every step."""
    ids = TOK.encode(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out]))[0, -1].argmax())
            out.append(nxt)
    return out


PROMPTS = ["hello world", "a", "the quick brown fox jumps", "to be, or not"]


def test_native_attention_is_exercised_when_built():
    assert {"math", "sdpa"} <= set(ATTENTIONS)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_kv_cache_greedy_equals_full_recompute(attention, position):
    kw = {"n_kv_head": 2} if position == "rope" else {}  # rope with grouped-query attention
    model = _model(attention, position, **kw)
    batched = generate(model, TOK, PROMPTS, max_new_tokens=24)
    seen = set()
    for prompt, got in zip(PROMPTS, batched):
        ref = _recompute(model, prompt, 24)
        assert generate(model, TOK, prompt, max_new_tokens=24)[0].ids == ref  # unbatched
        assert got.ids == ref  # batched, left-padded
        seen.update(ref)
    assert len(seen) > 3  # varied continuations, not one repeated token


def test_batched_equal_length_prompts_take_the_unmasked_path():
    model = _model()
    prompts = ["abcd", "efgh", "ijkl"]
    got = generate(model, TOK, prompts, max_new_tokens=16)
    assert [g.ids for g in got] == [_recompute(model, p, 16) for p in prompts]


def test_stream_yields_the_generated_tokens_and_text():
    model = _model()
    tokens = list(stream(model, TOK, "hello", max_new_tokens=20))
    g = generate(model, TOK, "hello", max_new_tokens=20)[0]
    assert [t.id for t in tokens] == g.ids
    assert "".join(t.text for t in tokens) == g.text == TOK.decode(g.ids)


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    model = _model()
    kw = dict(max_new_tokens=30, samplers=[Temperature(1.5)], decoder=Multinomial())
    a = generate(model, TOK, PROMPTS, seed=7, **kw)
    b = generate(model, TOK, PROMPTS, seed=7, **kw)
    c = generate(model, TOK, PROMPTS, seed=8, **kw)
    assert [g.ids for g in a] == [g.ids for g in b]
    assert [g.ids for g in a] != [g.ids for g in c]


def test_multinomial_matches_softmax_chi_square():
    """Pearson's chi-square of 40,000 draws over 8 categories against softmax(logits).

    Under the null the statistic follows chi-square with 7 degrees of freedom; its 0.999
    quantile is 24.32 (Abramowitz & Stegun table 26.8), so a correct sampler fails this
    fixed-seed test with probability 0.001, and a wrong one (for example sampling from the
    logits instead of their softmax, or off by one index) gives statistics in the thousands.
    """
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 1.5]])
    n = 40_000
    gen = torch.Generator().manual_seed(1234)
    draws = Multinomial()(logits.expand(n, 8), gen)
    counts = torch.bincount(draws, minlength=8).double()
    expected = torch.softmax(logits.double(), -1)[0] * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.32, chi2


def test_stop_ids_and_end_of_text():
    model = _model()
    ref = _recompute(model, "hello", 30)
    stop = ref[10]
    got = generate(model, TOK, "hello", max_new_tokens=30, stop_ids=[stop])[0]
    assert got.ids == ref[: ref.index(stop)]
    assert got.finish_reason == "stop"
    full = generate(model, TOK, "hello", max_new_tokens=30)[0]
    assert full.finish_reason == "length" and len(full.ids) == 30


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_end_ids_end_each_batched_row_at_a_multi_token_marker_kept(position):
    model = _model(position=position)
    refs = [_recompute(model, p, 24) for p in PROMPTS]
    pairs = [{tuple(r[i : i + 2]) for i in range(len(r) - 1)} for r in refs]
    # a two-token marker that several rows produce (at different steps) and some row never
    end = next(list(m) for m in sorted(pairs[0]) if 1 < sum(m in q for q in pairs) < len(refs))

    def cut(ids: list[int]) -> list[int]:  # up to and with the first whole marker
        for i in range(len(ids) - len(end) + 1):
            if ids[i : i + len(end)] == end:
                return ids[: i + len(end)]
        return ids

    got = generate(model, TOK, PROMPTS, max_new_tokens=24, end_ids=end)
    for ref, g in zip(refs, got):
        assert g.ids == cut(ref)
        assert g.text == TOK.decode(g.ids)
        assert g.finish_reason == ("stop" if g.ids[-len(end) :] == end else "length")
    stopped = [len(g.ids) for g in got if g.finish_reason == "stop"]
    assert len(stopped) > 1 and len(stopped) < len(got)  # the others run to the limit


def test_stop_string_spanning_tokens_is_cut_in_text_and_stream():
    model = _model()
    ref_text = TOK.decode(_recompute(model, "hello", 40))
    stop = ref_text[12:15]  # three tokens
    first = ref_text.find(stop)
    got = generate(model, TOK, "hello", max_new_tokens=40, stop=[stop, "never-there"])[0]
    assert got.text == ref_text[:first]
    assert got.finish_reason == "stop"
    assert got.ids == TOK.encode(ref_text[:first])  # one char per token here
    streamed = list(stream(model, TOK, "hello", max_new_tokens=40, stop=stop))
    assert "".join(t.text for t in streamed) == got.text


class _Utf8Tokenizer:
    """Byte-level: each id is one byte, so characters span several tokens."""

    eot_id = 0
    vocab_size = 256

    def encode(self, text):
        return list(text.encode())

    def decode_bytes(self, ids):
        return bytes(ids)

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_multibyte_characters_split_across_tokens():
    """Scripted logits walk through the bytes of 'é€' then end of text."""
    target = list("é€!".encode()) + [0]

    class Scripted(Greedy):
        def __init__(self):
            self.i = 0

        def __call__(self, logits, generator=None):
            t = torch.tensor([target[self.i]])
            self.i += 1
            return t

    cfg = ModelConfig(vocab_size=256, block_size=32, n_layer=1, n_head=2, n_embd=16)
    model = build_model(cfg).eval()
    toks = list(stream(model, _Utf8Tokenizer(), "x", max_new_tokens=10, decoder=Scripted()))
    assert "".join(t.text for t in toks) == "é€!"
    assert [t.text for t in toks][:2] == ["", "é"]  # nothing until the character is whole
    assert [t.id for t in toks] == target[:-1]  # end of text ends it and is not returned


def test_logprobs_are_the_models_log_softmax():
    model = _model()
    g = generate(model, TOK, "hello", max_new_tokens=8, logprobs=True)[0]
    ids = TOK.encode("hello")
    with torch.no_grad():
        logits = model(torch.tensor([ids + g.ids]))[0, len(ids) - 1 : -1]
    ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(g.ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(g.logprobs), ref, rtol=1e-4, atol=1e-4)
    assert all(lp <= 0 and math.isfinite(lp) for lp in g.logprobs)


def test_settings_from_config_section():
    cfg = load_config("shakespeare-char")
    cfg.generate.samplers = [
        Component("temperature", {"temperature": 0.9}),
        Component("top_k", {"k": 5}),
    ]
    cfg.generate.max_new_tokens = 7
    model = _model()
    a = generate(model, TOK, "abc", config=cfg, seed=3)
    chain, dec = llmcore.build_sampler(cfg)
    b = generate(model, TOK, "abc", samplers=chain, decoder=dec, max_new_tokens=7, seed=3)
    assert a[0].ids == b[0].ids and len(a[0].ids) == 7


def test_top_k_top_p_chain_inside_the_engine():
    model = _model()
    kw = dict(max_new_tokens=20, decoder=Multinomial(), seed=5)
    fused = generate(model, TOK, PROMPTS, samplers=[TopK(5), TopP(0.8)], **kw)

    class Plain(TopP):  # not fused: the two-step reference
        pass

    plain = generate(model, TOK, PROMPTS, samplers=[TopK(5), Plain(0.8)], **kw)
    assert [g.ids for g in fused] == [g.ids for g in plain]


def test_empty_prompt_uses_the_start_token_or_fails_clearly():
    model = _model()
    with pytest.raises(GenerationError, match="empty"):
        generate(model, TOK, "", max_new_tokens=3)
    cfg = ModelConfig(vocab_size=256, block_size=32, n_layer=1, n_head=2, n_embd=16)
    m = build_model(cfg).eval()
    g = generate(m, _Utf8Tokenizer(), "", max_new_tokens=3, eot=False)[0]
    assert g.prompt_ids == [0] and len(g.ids) == 3


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(max_new_tokens=60), "exceeds the model's context of 64"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(stop=[""], max_new_tokens=5), "stop strings"),
        (dict(samplers=[TopK(1000)], max_new_tokens=5), "larger than the vocabulary"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(GenerationError, match=match):
        generate(_model(), TOK, "hello", **kw)


def test_prompt_longer_than_context():
    with pytest.raises(GenerationError, match="longer than the model's context"):
        generate(_model(), TOK, "a" * 65, max_new_tokens=0)


def test_sliding_window_allows_contexts_beyond_block_size():
    model = _model(position="none", sliding_window=8, block_size=16)
    g = generate(model, TOK, "hello", max_new_tokens=30)[0]
    assert len(g.ids) == 30


def test_model_mode_is_restored():
    model = _model().train()
    generate(model, TOK, "hi", max_new_tokens=2)
    assert model.training


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("norm,mlp", [("layernorm", "gelu"), ("rmsnorm", "swiglu")])
def test_lean_decode_step_is_bit_identical_to_the_module_path(attention, norm, mlp, monkeypatch):
    model = _model(
        attention, "rope", n_kv_head=2, norm=Component(norm), mlp=Component(mlp), bias=False
    )
    kw = dict(max_new_tokens=16, logprobs=True)
    lean = generate(model, TOK, PROMPTS, **kw)
    monkeypatch.setattr(steps, "LEAN", False)
    plain = generate(model, TOK, PROMPTS, **kw)
    assert [g.ids for g in lean] == [g.ids for g in plain]
    for a, b in zip(lean, plain):  # batched: the head's matmul rounds differently
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs))
    one = generate(model, TOK, PROMPTS[0], **kw)[0]  # one row: bit-identical
    monkeypatch.setattr(steps, "LEAN", True)
    assert generate(model, TOK, PROMPTS[0], **kw)[0].logprobs == one.logprobs


def test_lean_step_declines_hooked_or_wrapped_models():
    from llmcore.generation.lean import lean_step

    model = _model()
    cache = model.new_cache(1, 8)
    assert lean_step(model, cache) is not None
    handle = model.blocks[0].mlp.register_forward_hook(lambda *a: None)
    assert lean_step(model, cache) is None
    handle.remove()
    model.blocks[0].attn.qkv = torch.nn.Sequential(model.blocks[0].attn.qkv)
    assert lean_step(model, cache) is None


def test_sliding_window_with_a_position_table_still_ends_at_block_size():
    model = _model(sliding_window=8, block_size=16)  # learned positions
    with pytest.raises(GenerationError, match="positions end at block_size"):
        generate(model, TOK, "hello", max_new_tokens=30)

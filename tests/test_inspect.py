"""llmcore.trace and the sampler view against independent references: the textbook softmax
attention, the model's own logits, closed forms and a brute-force beam."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcore import build_model, trace
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.samplers import MinP, RepetitionPenalty, Temperature, TopK, TopP
from llmcore.config import Component, Config, ModelConfig
from llmcore.errors import ConfigError, GenerationError
from llmcore.inspect import sampler_chain, sampler_view

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ,.!?\n")))
TEXT = "the cat sat on the mat, and the dog sat too."


def model_of(attention="math", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        block_size=64,
        n_layer=2,
        n_head=4,
        n_embd=32,
        attention=Component(attention),
        **kw,
    )
    return build_model(cfg).eval()


def reference_weights(q, k, window):
    """softmax(q k^T / sqrt(D)) under the causal (and window) mask, written out by hand."""
    H, Hkv, T, D = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k = k.repeat_interleave(H // Hkv, dim=1)
    scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(D)  # (1, H, T, T)
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            allowed[i, j] = j <= i and (window is None or j > i - window)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)[0]  # (H, T, T)


def capture(model):
    """Wrap every layer's attention plugin to keep its inputs and its output."""
    seen = {}
    for block in model.blocks:
        attn = block.attn
        inner = attn.attend

        def wrapped(q, k, v, *, inner=inner, layer=attn.layer, **kw):
            y = inner(q, k, v, **kw)
            seen[layer] = (q.detach(), k.detach(), v.detach(), y.detach(), kw.get("window"))
            return y

        wrapped.standard = True
        attn.attend = wrapped
    return seen


SHAPES = {
    "learned": {},
    "rope_gqa": {"position": Component("rope"), "n_kv_head": 2},
    "rope_window": {"position": Component("rope"), "sliding_window": 5},
}


@pytest.mark.parametrize("attention", ["math", "sdpa", "native"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_traced_weights_equal_softmax_and_rebuild_the_outputs(attention, shape):
    model = model_of(attention, **SHAPES[shape])
    seen = capture(model)
    tr = trace(model, TOK, TEXT)
    assert all(seen[i][4] == SHAPES[shape].get("sliding_window") for i in seen)
    assert tr.attention is not None and tr.attention.shape == (2, 4, len(TEXT), len(TEXT))
    for li, layer in enumerate(tr.layers):
        q, k, v, y, window = seen[layer]
        ref = reference_weights(q, k, window)
        torch.testing.assert_close(tr.attention[li].double(), ref, atol=1e-5, rtol=0)
        # the model's attention output, rebuilt from the traced weights times V
        v_rep = v.repeat_interleave(4 // v.shape[1], dim=1)[0]  # (H, T, D)
        torch.testing.assert_close(tr.attention[li] @ v_rep, y[0], atol=1e-5, rtol=1e-5)


def test_selected_layers_and_heads_are_the_matching_slices():
    model = model_of("sdpa", position=Component("rope"), n_kv_head=2)
    full = trace(model, TOK, TEXT)
    part = trace(model, TOK, TEXT, layers=[1], heads=[3, 0])
    assert part.layers == [1] and part.heads == [0, 3]
    torch.testing.assert_close(part.attention[0], full.attention[1, [0, 3]])
    assert part.lens.layers == [1]


def test_distributions_equal_softmax_of_the_models_logits():
    model = model_of("native")
    tr = trace(model, TOK, TEXT, top_k=5)
    ids = torch.tensor([TOK.encode(TEXT)])
    with torch.no_grad():
        logits = model(ids)[0]
    probs = torch.softmax(logits.double(), -1)
    ref_p, ref_i = probs.topk(5, -1)
    assert torch.equal(tr.top_ids, ref_i)
    torch.testing.assert_close(tr.top_probs.double(), ref_p, atol=1e-6, rtol=0)
    ent = torch.distributions.Categorical(probs=probs).entropy()
    torch.testing.assert_close(tr.entropy.double(), ent, atol=1e-5, rtol=0)
    loss = F.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
    torch.testing.assert_close(tr.loss[:-1], loss, atol=1e-5, rtol=0)
    assert math.isnan(tr.loss[-1])


def test_logit_lens_matches_the_model_and_a_truncated_forward():
    model = model_of("math", position=Component("rope"))
    tr = trace(model, TOK, TEXT, top_k=4)
    # the last layer's lens is the model's own output, so it ranks its own prediction first
    assert torch.equal(tr.lens.top_ids[-1], tr.top_ids[:, :4])
    torch.testing.assert_close(tr.lens.top_probs[-1], tr.top_probs[:, :4])
    assert int(tr.lens.rank[-1].abs().sum()) == 0
    # layer 0 by hand: the first block only, then the final norm and the head
    ids = torch.tensor([TOK.encode(TEXT)])
    pos = torch.arange(ids.shape[1])
    with torch.no_grad():
        x0 = model.position.embed(model.wte(ids), pos)
        x1 = model.blocks[0](x0, model.position, pos)
        logits0 = model.lm_head(model.norm_f(x1))[0]
        final = model(ids)[0].argmax(-1)
    p0, i0 = torch.softmax(logits0, -1).topk(4, -1)
    assert torch.equal(tr.lens.top_ids[0], i0)
    torch.testing.assert_close(tr.lens.top_probs[0], p0)
    rank = (logits0 > logits0.gather(1, final[:, None])).sum(-1)
    assert torch.equal(tr.lens.rank[0], rank)
    torch.testing.assert_close(tr.residual_norms[0], x0[0].norm(dim=-1))
    torch.testing.assert_close(tr.residual_norms[1], x1[0].norm(dim=-1))


def test_tokens_carry_ids_and_byte_spans():
    model = model_of()
    tr = trace(model, TOK, "ab c")
    assert [t.id for t in tr.tokens] == TOK.encode("ab c")
    assert [(t.start, t.end) for t in tr.tokens] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert "".join(t.text for t in tr.tokens) == "ab c"


def test_a_non_standard_attention_is_reported_not_shown():
    model = model_of()

    def linear_attention(q, k, v, **kw):  # not the softmax formula: declares nothing
        return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1).cumsum(2)

    for block in model.blocks:
        block.attn.attend = linear_attention
    tr = trace(model, TOK, TEXT)
    assert tr.attention is None
    assert "linear_attention" in tr.attention_note and "standard" in tr.attention_note
    assert tr.lens.top_ids.shape[0] == 2  # the rest of the record is still there


def test_a_third_party_standard_attention_is_traced_like_the_built_ins():
    from llmcore.builtin.attention import math_attention

    class MyAttention:
        standard = True

        def __call__(self, q, k, v, **kw):
            return math_attention(q, k, v, **kw)

    model = model_of(position=Component("rope"))
    ref = trace(model, TOK, TEXT)
    for block in model.blocks:
        block.attn.attend = MyAttention()
    tr = trace(model, TOK, TEXT)
    torch.testing.assert_close(tr.attention, ref.attention)
    assert all(b.attn.observer is None for b in model.blocks)  # the hook is removed again


def test_bad_input_gives_clear_errors():
    model = model_of()
    with pytest.raises(GenerationError, match="empty"):
        trace(model, TOK, "")
    with pytest.raises(GenerationError, match="65 tokens.*64"):
        trace(model, TOK, "a" * 65)
    with pytest.raises(GenerationError, match="max_positions 8"):
        trace(model, TOK, TEXT, max_positions=8)
    with pytest.raises(ConfigError, match="layer index 2.*0..1"):
        trace(model, TOK, TEXT, layers=[2])
    with pytest.raises(ConfigError, match="head index -1.*0..3"):
        trace(model, TOK, TEXT, heads=[-1])
    with pytest.raises(ConfigError, match="position 99"):
        sampler_view(model, TOK.encode(TEXT), 99)


def test_sampler_view_stages_equal_the_processors_outputs():
    model = model_of("sdpa")
    cfg = Config()
    cfg.generate.samplers = [
        Component("repetition_penalty", {"penalty": 1.3}),
        Component("temperature", {"temperature": 0.7}),
        Component("top_k", {"k": 6}),
        Component("top_p", {"p": 0.8}),
        Component("min_p", {"p": 0.05}),
    ]
    chain = sampler_chain(cfg)
    assert [type(p) for p in chain] == [RepetitionPenalty, Temperature, TopK, TopP, MinP]
    ids = TOK.encode(TEXT)
    view = sampler_view(model, ids, 10, samplers=chain, seed=3)
    prefix = torch.tensor([ids[:11]])
    with torch.no_grad():
        logits = model(prefix)[0, -1].double()
    # each stage by its closed form, from the raw logits
    seen = set(ids[:11])
    pen = logits.clone()
    for t in seen:
        pen[t] = pen[t] / 1.3 if pen[t] > 0 else pen[t] * 1.3
    temp = pen / 0.7
    p = torch.softmax(temp, -1)
    top6 = torch.zeros_like(p)
    keep = p.topk(6).indices
    top6[keep] = p[keep] / p[keep].sum()
    order = top6.argsort(descending=True)
    cum = top6[order].cumsum(0)
    nucleus = order[: int((cum < 0.8).sum()) + 1]
    top_p = torch.zeros_like(p)
    top_p[nucleus] = top6[nucleus] / top6[nucleus].sum()
    min_p = torch.where(top_p >= 0.05 * top_p.max(), top_p, 0.0)
    min_p = min_p / min_p.sum()
    refs = [torch.softmax(logits, -1), torch.softmax(pen, -1), p, top6, top_p, min_p]
    assert len(view.stages) == len(refs)
    for stage, ref in zip(view.stages, refs):
        torch.testing.assert_close(stage.probs.double(), ref, atol=1e-5, rtol=0)
    assert view.greedy == int(min_p.argmax())
    gen = torch.Generator().manual_seed(3)
    processed = torch.log(min_p).float()[None]
    assert view.sampled == int(torch.multinomial(torch.softmax(processed, -1), 1, generator=gen))


def test_beam_pick_is_the_best_two_token_path_of_the_top_beams():
    model = model_of("math")
    ids = TOK.encode(TEXT)
    view = sampler_view(model, ids, 7, beam_width=3)
    prefix = ids[:8]
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([prefix]))[0, -1].double(), -1)
        best = None
        for a in first.topk(3).indices.tolist():
            second = torch.log_softmax(model(torch.tensor([prefix + [a]]))[0, -1].double(), -1)
            b = int(second.argmax())
            score = float(first[a] + second[b])
            if best is None or score > best[0]:
                best = (score, [a, b])
    assert view.beam_tokens == best[1]
    assert view.greedy == int(first.argmax())

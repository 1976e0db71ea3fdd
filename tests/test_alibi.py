"""The ``alibi`` position plugin against independent references: the paper's closed-form
slopes (and Bloom's), attention written out by hand, Hugging Face's MPT, and the model's own
full forward for every cached, batched, served, lean and traced path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import llmcore
from llmcore import build_model, trace
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.builtin.positions import AlibiPosition, alibi_slopes
from llmcore.config import Component, ModelConfig, load_config
from llmcore.errors import ConfigError
from llmcore.generation import lean as lean_module
from llmcore.generation import steps
from llmcore.model import Transformer, build_block
from llmcore.serve.kv_slots import SlotCache

ATTENTIONS = ("math", "sdpa", "native")
TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ,.")))


def paper_slopes(n: int) -> list[float]:
    """The slopes as the ALiBi paper's reference code defines them (recursively)."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def alibi_model(attention="math", *, n_head=4, n_layer=1, block_size=8, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=8 * n_head,
        attention=Component(attention),
        position=Component("alibi"),
        init_std=0.3,  # wide weights: attention far from uniform, so the bias matters
        **kw,
    )
    return build_model(cfg).eval()


def reference_logits(model, ids):
    """One layer written out: softmax(q k^T / sqrt(D) + slope * (j - i), causal) v."""
    cfg = model.config
    H, Hkv, D, C = cfg.n_head, cfg.kv_heads, cfg.head_size, cfg.n_embd
    B, T = ids.shape
    dbl = {k: v.double() for k, v in model.state_dict().items()}
    ln = lambda x, n: F.layer_norm(x, (C,), dbl[f"{n}.weight"], dbl[f"{n}.bias"], 1e-5)  # noqa: E731
    x = dbl["wte.weight"][ids]  # (B, T, C)
    qkv = (
        ln(x, "blocks.0.norm1") @ dbl["blocks.0.attn.qkv.weight"].T + dbl["blocks.0.attn.qkv.bias"]
    )
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q = q.view(B, T, H, D).transpose(1, 2)
    k = k.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = v.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    slope = torch.tensor(paper_slopes(H), dtype=torch.float64)[:, None, None]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D) - slope * (i - j)
    att = torch.softmax(scores.masked_fill(j > i, float("-inf")), dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
    x = x + y @ dbl["blocks.0.attn.proj.weight"].T + dbl["blocks.0.attn.proj.bias"]
    h = F.gelu(
        ln(x, "blocks.0.norm2") @ dbl["blocks.0.mlp.fc.weight"].T + dbl["blocks.0.mlp.fc.bias"]
    )
    x = x + h @ dbl["blocks.0.mlp.proj.weight"].T + dbl["blocks.0.mlp.proj.bias"]
    return ln(x, "norm_f") @ dbl["lm_head.weight"].T


@pytest.mark.parametrize("n", [*range(1, 17), 24, 32, 48])
def test_slopes_are_the_papers_closed_form(n):
    assert alibi_slopes(n) == pytest.approx(paper_slopes(n), rel=1e-12)
    if n & (n - 1) == 0:  # a power of two: 2^(-8 (h + 1) / n)
        assert alibi_slopes(n) == pytest.approx([2 ** (-8 * (h + 1) / n) for h in range(n)])


def test_slopes_match_blooms():
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    for n in (1, 3, 4, 6, 8, 12, 16, 20):
        alibi = bloom.build_alibi_tensor(torch.ones(1, 2), n, torch.float64)  # (n, 1, 2)
        assert alibi_slopes(n) == pytest.approx(alibi[:, 0, 1].tolist(), rel=1e-6)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize(("n_head", "kw"), [(4, {}), (3, {}), (4, {"n_kv_head": 2})])
def test_logits_equal_attention_written_out_also_past_block_size(attention, n_head, kw):
    model = alibi_model(attention, n_head=n_head, **kw)
    ids = torch.randint(0, TOK.vocab_size, (2, 3 * model.config.block_size))  # extrapolation
    with torch.no_grad():
        got = model(ids)
    torch.testing.assert_close(got.double(), reference_logits(model, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_head", [4, 6])
def test_logits_equal_hugging_face_mpt(n_head):
    mpt = pytest.importorskip("transformers.models.mpt.modeling_mpt")
    from transformers import MptConfig

    model = alibi_model("sdpa", n_head=n_head, n_layer=2, bias=False, block_size=32)
    cfg = model.config
    hf = mpt.MptForCausalLM(
        MptConfig(
            d_model=cfg.n_embd,
            n_heads=n_head,
            n_layers=2,
            vocab_size=cfg.vocab_size,
            max_seq_len=32,
        )
    ).eval()
    sd = {
        "transformer.wte.weight": model.wte.weight,
        "transformer.norm_f.weight": model.norm_f.weight,
    }
    names = {
        "norm_1": "norm1",
        "attn.Wqkv": "attn.qkv",
        "attn.out_proj": "attn.proj",
        "norm_2": "norm2",
        "ffn.up_proj": "mlp.fc",
        "ffn.down_proj": "mlp.proj",
    }
    for i in range(2):
        for theirs, ours in names.items():
            sd[f"transformer.blocks.{i}.{theirs}.weight"] = model.state_dict()[
                f"blocks.{i}.{ours}.weight"
            ]
    missing, _ = hf.load_state_dict(sd, strict=False)
    assert set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_cached_decode_token_by_token_equals_the_full_forward(attention):
    model = alibi_model(attention, n_layer=2, block_size=16)
    ids = torch.randint(0, TOK.vocab_size, (2, 14))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        parts = [model(ids[:, :5], cache=cache)]
        parts += [model(ids[:, t : t + 1], cache=cache) for t in range(5, 14)]
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
        cache = model.new_cache(2)  # the lean decode step
        model(ids[:, :5], cache=cache)
        step = lean_module.lean_step(model, cache)
        assert step is not None
        for t in range(5, 14):
            got = step(ids[:, t : t + 1], torch.tensor([t]), None)
            torch.testing.assert_close(got, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_bfloat16_model_decodes_with_the_bias_as_its_full_forward(attention):
    model = alibi_model(attention, n_layer=2, block_size=16).to(torch.bfloat16)
    ids = torch.randint(0, TOK.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(ids).float()
        cache = model.new_cache(2)
        parts = [model(ids[:, :4], cache=cache)] + [
            model(ids[:, t : t + 1], cache=cache) for t in range(4, 12)
        ]
        fp32 = model.float()(ids)
    # bfloat16 keeps 8 bits: the cached pass rounds in another order, nothing more
    torch.testing.assert_close(torch.cat(parts, 1).float(), full, atol=0.1, rtol=0.05)
    torch.testing.assert_close(full, fp32, atol=0.3, rtol=0.05)  # the bias survives bfloat16


@pytest.mark.parametrize("lean", [True, False])
def test_a_left_padded_batch_decodes_like_each_row_alone(monkeypatch, lean):
    monkeypatch.setattr(steps, "LEAN", lean)
    model = alibi_model("native", n_layer=2, n_head=3, block_size=32)
    prompts = ["a cat sat on", "the", "dogs, too. and"]
    kw = {"max_new_tokens": 8, "logprobs": True}  # greedy
    batch = llmcore.generate(model, TOK, prompts, **kw)
    for prompt, got in zip(prompts, batch):
        alone = llmcore.generate(model, TOK, prompt, **kw)[0]
        assert got.ids == alone.ids
        ids = torch.tensor([TOK.encode(prompt) + got.ids])
        with torch.no_grad():  # the chosen tokens' log-probabilities from one full forward
            logp = torch.log_softmax(model(ids)[0, -len(got.ids) - 1 : -1], dim=-1)
        ref = logp.gather(1, torch.tensor(got.ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(got.logprobs), ref, atol=1e-5, rtol=1e-5)


def test_served_slots_of_different_lengths_decode_like_the_full_forward():
    model = alibi_model("sdpa", n_layer=2, block_size=64)
    cache = SlotCache(model, 6, 64)
    prompts = {0: "hello", 2: "ab", 3: "the quick brown", 5: "xy"}  # slots 1 and 4: gaps
    with torch.no_grad():
        for slot, text in prompts.items():
            ids = TOK.encode(text)
            view = cache.batch([slot], len(ids))
            model.hidden_states(
                torch.tensor([ids]), positions=view.positions, cache=view, mask=view.mask
            )
            view.commit()
        for slots in ([0, 2, 3, 5], [3, 0]):  # a span with gaps; rows gathered out of order
            view = cache.batch(slots, 1)  # gathered rows: the slots are no one run
            nxt = TOK.encode("q")[0]
            inp = torch.full((len(view.slots), 1), nxt)
            x = model.hidden_states(inp, positions=view.positions, cache=view, mask=view.mask)
            view.commit()
            got = model.lm_head(x[:, -1])
            for b, slot in enumerate(view.slots):
                if slot in slots:
                    prompts[slot] += "q"
                    ref = model(torch.tensor([TOK.encode(prompts[slot])]))[0, -1]
                    torch.testing.assert_close(got[b], ref, atol=1e-5, rtol=1e-5)


def capture_masks(model) -> list:
    """Wrap the first layer's attention to keep the masks it is called with."""
    seen, inner = [], model.blocks[0].attn.attend

    def wrapped(q, k, v, **kw):
        seen.append(kw["mask"])
        return inner(q, k, v, **kw)

    wrapped.standard = True
    model.blocks[0].attn.attend = wrapped
    return seen


def test_each_row_gets_its_own_true_distances_not_just_a_shifted_bias():
    """Softmax would hide a per-row shift of the bias, but not its rounding in bfloat16: the
    bias of a query's own key is exactly 0, of the key d tokens back exactly -m d."""
    model = alibi_model("sdpa", n_head=2, block_size=32)
    m = torch.tensor(paper_slopes(2))[:, None]
    seen = capture_masks(model)
    llmcore.generate(model, TOK, ["a cat sat on", "the"], max_new_tokens=3)  # left-padded
    pad = [0, 9]
    for mask in seen[1:]:  # the decode steps: (B, H, 1, Tk)
        tk = mask.shape[-1]
        for b in range(2):
            back = torch.arange(tk - 1 - pad[b], -1, -1.0)  # distance of each real key
            torch.testing.assert_close(mask[b, :, 0, pad[b] :], -m * back, rtol=0, atol=0)
            assert bool((mask[b, :, 0, : pad[b]] == float("-inf")).all())
    cache, lens = SlotCache(model, 2, 32), {0: 9, 1: 3}
    for slot, n in lens.items():
        view = cache.batch([slot], n)
        model.hidden_states(
            torch.zeros(1, n, dtype=torch.long),
            positions=view.positions,
            cache=view,
            mask=view.mask,
        )
        view.commit()
    seen.clear()
    view = cache.batch([0, 1], 1)
    model.hidden_states(
        torch.zeros(2, 1, dtype=torch.long), positions=view.positions, cache=view, mask=view.mask
    )
    for b, n in lens.items():  # the query at position n sees keys 0..n
        back = torch.arange(n, -1, -1.0)
        torch.testing.assert_close(seen[0][b, :, 0, : n + 1], -m * back, rtol=0, atol=0)


def test_a_sliding_window_generates_past_block_size_as_the_full_forward_does():
    model = alibi_model("native", n_layer=2, block_size=8, sliding_window=4)
    out = llmcore.generate(model, TOK, "the cat", max_new_tokens=20, logprobs=True)[0]
    ids = torch.tensor([TOK.encode("the cat") + out.ids])  # 27 tokens, block_size 8
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0, -21:-1], dim=-1)
    assert out.ids == logp.argmax(-1).tolist()
    ref = logp.gather(1, torch.tensor(out.ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(out.logprobs), ref, atol=1e-5, rtol=1e-5)


def config_model(attention: str):
    shape = ["model.n_layer=2", "model.n_embd=16", "model.n_head=4", "model.block_size=16"]
    cfg = load_config(
        "shakespeare-char", [*shape, "model.position=alibi", f"model.attention={attention}"]
    )
    torch.manual_seed(0)
    return build_model(cfg, vocab_size=TOK.vocab_size).train()


def test_training_from_the_config_lowers_the_loss():
    model = config_model("native")
    assert isinstance(model.position, AlibiPosition)
    ids = torch.tensor([TOK.encode("the cat sat on the mat, the cat sat.")])
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_every_attentions_backward_takes_the_bias():
    ids = torch.tensor([TOK.encode("the cat sat on the mat")])
    grads = {}
    for attention in ATTENTIONS:
        model = config_model(attention)
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
        grads[attention] = {n: p.grad for n, p in model.named_parameters()}
    for attention in ("sdpa", "native"):
        for name, g in grads["math"].items():
            torch.testing.assert_close(grads[attention][name], g, atol=1e-5, rtol=1e-4, msg=name)


def linear_attention(q, k, v, **kw):
    """Not a softmax attention, and declares nothing: it would ignore a score bias."""
    return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1).cumsum(2)


def test_an_attention_that_cannot_take_the_bias_is_refused_by_name():
    model = alibi_model("math")
    with pytest.raises(ConfigError, match=r"'alibi'.*linear_attention.*takes_score_bias"):
        blocks = [build_block(model.config, 0)]
        blocks[0].attn.attend = linear_attention
        Transformer(model.config, model.wte, model.position, blocks, model.norm_f, model.lm_head)
    model.blocks[0].attn.attend = linear_attention  # swapped in after the build
    with pytest.raises(ConfigError, match=r"'alibi'.*linear_attention"):
        model(torch.tensor([[1, 2, 3]]))


def test_a_non_standard_attention_that_declares_it_takes_the_bias_gets_it():
    from llmcore.builtin.attention import math_attention

    class Declares:  # the softmax of another module, say: adds the mask as the contract says
        takes_score_bias = True

        def __call__(self, q, k, v, **kw):
            return math_attention(q, k, v, **kw)

    model = alibi_model("math")
    ids = torch.randint(0, TOK.vocab_size, (1, 10))
    model.blocks[0].attn.attend = Declares()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).double(), reference_logits(model, ids), atol=1e-5, rtol=1e-5
        )


class ThirdPartyAttentions:
    """Two registered plugins: a factory that declares standard for the plain function it
    builds, and a linear attention that declares nothing."""

    @staticmethod
    @llmcore.hookimpl
    def register_attentions(register):
        from llmcore.builtin.attention import math_attention

        def softmax_fn():
            return lambda q, k, v, **kw: math_attention(q, k, v, **kw)

        softmax_fn.standard = True
        register("softmax_fn", softmax_fn)
        register("linear", lambda: linear_attention)


@pytest.fixture
def third_party_attentions():
    from llmcore import plugins

    plugins.registry().add_plugin(ThirdPartyAttentions, "fake_attentions", "fake", "0.1")
    yield
    plugins.reload()


def test_a_configured_attention_is_judged_by_what_its_factory_declares(third_party_attentions):
    model = alibi_model("softmax_fn")
    ids = torch.randint(0, TOK.vocab_size, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).double(), reference_logits(model, ids), atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ConfigError, match=r"model.position 'alibi'.*model.attention 'linear'"):
        alibi_model("linear")


@pytest.mark.parametrize("attention", ["sdpa", "native"])
def test_the_trace_shows_the_biased_attention_weights(attention):
    model = alibi_model(attention, n_head=3, block_size=32)
    text = "the cat sat on the mat"
    tr = trace(model, TOK, text)
    ids = torch.tensor([TOK.encode(text)])
    cfg, sd = model.config, {k: v.double() for k, v in model.state_dict().items()}
    h = F.layer_norm(
        sd["wte.weight"][ids], (cfg.n_embd,), sd["blocks.0.norm1.weight"], sd["blocks.0.norm1.bias"]
    )
    q, k, _ = (h @ sd["blocks.0.attn.qkv.weight"].T + sd["blocks.0.attn.qkv.bias"]).chunk(3, -1)
    T, D = ids.shape[1], cfg.head_size
    q, k = (t.view(1, T, 3, D).transpose(1, 2)[0] for t in (q, k))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    slope = torch.tensor(paper_slopes(3), dtype=torch.float64)[:, None, None]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D) - slope * (i - j)
    ref = torch.softmax(scores.masked_fill(j > i, float("-inf")), -1)
    torch.testing.assert_close(tr.attention[0].double(), ref, atol=1e-5, rtol=1e-5)


def test_the_conformance_checks_and_exports_know_alibi():
    from llmcore.hf.archs import hf_config
    from llmcore.testing import check_component

    check_component("position", AlibiPosition)
    assert AlibiPosition(16, 8, 32).max_positions is None  # no table: generation may run on
    with pytest.raises(ConfigError, match="position=alibi"):
        hf_config(alibi_model())

"""Each built-in component against an independent reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import llmcore
from llmcore.errors import TokenizerError
from llmcore.testing import check_registered

torch.manual_seed(0)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("norm", "layernorm"),
        ("norm", "rmsnorm"),
        ("mlp", "gelu"),
        ("mlp", "relu"),
        ("mlp", "swiglu"),
        ("attention", "math"),
        ("attention", "sdpa"),
        ("position", "learned"),
        ("position", "rope"),
        ("position", "none"),
        ("sampler", "temperature"),
        ("sampler", "top_k"),
        ("sampler", "top_p"),
        ("decoder", "greedy"),
        ("decoder", "multinomial"),
        ("decoder", "beam"),
        ("optimizer", "adamw"),
        ("optimizer", "sgd"),
        ("schedule", "cosine"),
        ("schedule", "constant"),
        ("tokenizer", "char"),
        ("logger", "jsonl"),
        ("reward", "format"),
        ("reward", "target_length"),
    ],
)
def test_builtins_meet_their_contracts(kind, name):
    check_registered(kind, name)


def test_components_built_from_params_meet_their_contracts():
    check_registered("tokenizer", "bpe", encoding="gpt2")
    check_registered("reward", "names_character", names=["ROMEO", "JULIET"])


def test_every_check_named_by_the_table_of_kinds_exists():
    from llmcore import testing
    from llmcore.contracts import COMPONENT_KINDS

    for kind in COMPONENT_KINDS.values():
        if kind.check is not None:
            assert callable(getattr(testing, kind.check)), kind.name
    with pytest.raises(ValueError, match=r"no conformance check for kind 'adapter'; checks exist"):
        testing.check_component("adapter", object)


class _Unclosable:
    def __init__(self, run_dir):
        self.rows = []

    def log(self, metrics):
        self.rows.append(metrics)


def test_the_new_checks_catch_what_breaks_the_contract():
    from llmcore.testing import ConformanceError, check_component

    with pytest.raises(ConformanceError, match=r"logger has no close\(\) method"):
        check_component("logger", _Unclosable)
    with pytest.raises(ConformanceError, match="reward returned 1 scores for 3 pairs"):
        check_component("reward", lambda: lambda prompts, responses: [0.0])
    with pytest.raises(ConformanceError, match="finite floats"):
        check_component("reward", lambda: lambda prompts, responses: [0.0, float("nan"), 1.0])


def test_the_conformance_checks_import_no_builtin_plugin():
    import ast

    from llmcore import components, contracts, hookspecs, plugins, testing

    for module in (testing, components, contracts, hookspecs, plugins):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = [
            f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ]
        assert not [m for m in imported if m.startswith("llmcore.builtin")], module.__name__


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    ours = llmcore.create("norm", "layernorm", dim=10, eps=1e-5, bias=bias)
    ref = torch.nn.LayerNorm(10, eps=1e-5, bias=bias)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
        if bias:
            ours.bias.normal_()
            ref.bias.copy_(ours.bias)
    x = torch.randn(3, 4, 10)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


def test_rmsnorm_matches_the_formula():
    norm = llmcore.create("norm", "rmsnorm", dim=8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 8) * 3
    want = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), want, rtol=1e-5, atol=1e-6)
    xb = x.bfloat16()
    assert norm.to(torch.bfloat16)(xb).dtype == torch.bfloat16


def test_gelu_mlp_matches_the_formulas():
    for approximate in ("none", "tanh"):
        mlp = llmcore.create(
            "mlp", "gelu", dim=6, hidden_dim=12, bias=True, approximate=approximate
        )
        x = torch.randn(2, 3, 6)
        h = x @ mlp.fc.weight.T + mlp.fc.bias
        if approximate == "none":
            g = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        else:
            g = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        torch.testing.assert_close(
            mlp(x), g @ mlp.proj.weight.T + mlp.proj.bias, rtol=1e-5, atol=1e-6
        )
    assert llmcore.create("mlp", "gelu", dim=6).fc.out_features == 24


def test_relu_and_swiglu_match_the_formulas():
    x = torch.randn(2, 3, 6)
    relu = llmcore.create("mlp", "relu", dim=6, hidden_dim=10)
    want = (
        torch.clamp(x @ relu.fc.weight.T + relu.fc.bias, min=0) @ relu.proj.weight.T
        + relu.proj.bias
    )
    torch.testing.assert_close(relu(x), want)
    sw = llmcore.create("mlp", "swiglu", dim=6, hidden_dim=10)
    a, b = x @ sw.gate.weight.T, x @ sw.up.weight.T
    torch.testing.assert_close(sw(x), (a * torch.sigmoid(a) * b) @ sw.down.weight.T)
    assert (
        llmcore.create("mlp", "swiglu", dim=96).gate.out_features == 256
    )  # Llama's 2/3 * 4 * 96, to 64s


def test_rope_matches_complex_rotation_and_is_relative():
    D, T = 8, 6
    rope = llmcore.create("position", "rope", dim=32, head_dim=D, max_seq_len=16, theta=10000.0)
    q, k = torch.randn(1, 2, T, D), torch.randn(1, 1, T, D)
    pos = torch.arange(T)
    q2, _ = rope.rotate(q, k, pos)
    # Independent formulation: pair (i, i + D/2) is a complex number rotated by pos * theta^(-2i/D).
    freqs = 10000.0 ** (-torch.arange(0, D, 2).double() / D)
    angle = pos.double()[:, None] * freqs[None, :]
    z = torch.complex(q[..., : D // 2].double(), q[..., D // 2 :].double()) * torch.polar(
        torch.ones_like(angle), angle
    )
    torch.testing.assert_close(q2.double(), torch.cat([z.real, z.imag], -1), rtol=1e-5, atol=1e-5)
    # Scores depend only on the distance between positions.
    a, b = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)
    s1 = [
        (
            rope.rotate(a, b, torch.tensor([p]))[0] * rope.rotate(a, b, torch.tensor([p + 3]))[1]
        ).sum()
        for p in (0, 5)
    ]
    torch.testing.assert_close(s1[0], s1[1], rtol=1e-5, atol=1e-5)


def test_learned_position_adds_its_table():
    pos = llmcore.create("position", "learned", dim=4, head_dim=2, max_seq_len=8)
    x = torch.zeros(2, 3, 4)
    torch.testing.assert_close(pos.embed(x, torch.arange(3)), pos.wpe.weight[:3].expand(2, 3, 4))


def _loop_attention(q, k, v, causal, window=None, mask=None):
    """Attention one query at a time, written independently of the plugins."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            kv = h // (H // Hkv)
            for i in range(Tq):
                p = i + Tk - Tq
                s = (k[b, kv] @ q[b, h, i]) / math.sqrt(D)
                ok = torch.ones(Tk, dtype=torch.bool)
                if causal:
                    ok &= torch.arange(Tk) <= p
                if window is not None:
                    ok &= torch.arange(Tk) > p - window
                if mask is not None:
                    ok &= mask[b, 0, i]
                w = torch.softmax(s.masked_fill(~ok, float("-inf")), -1)
                out[b, h, i] = w @ v[b, kv]
    return out


@pytest.mark.parametrize("name", ["math", "sdpa"])
@pytest.mark.parametrize(
    ("H", "Hkv", "Tq", "Tk", "causal", "window"),
    [
        (4, 4, 5, 5, True, None),
        (4, 2, 5, 5, False, None),
        (4, 1, 1, 7, True, None),
        (2, 2, 3, 7, True, None),
        (2, 1, 6, 6, True, 3),
        (2, 2, 2, 6, True, 2),
    ],
)
def test_attention_plugins_match_a_loop(name, H, Hkv, Tq, Tk, causal, window):
    attend = llmcore.create("attention", name)
    q, k, v = torch.randn(2, H, Tq, 8), torch.randn(2, Hkv, Tk, 8), torch.randn(2, Hkv, Tk, 8)
    torch.testing.assert_close(
        attend(q, k, v, causal=causal, window=window),
        _loop_attention(q, k, v, causal, window),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["math", "sdpa"])
def test_attention_with_a_padding_mask(name):
    attend = llmcore.create("attention", name)
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[1, :, :, 0] = False  # row 1 ignores its first (padding) key
    mask[1, :, 0, 0] = True  # except the padding query itself, so no row is empty
    torch.testing.assert_close(
        attend(q, k, v, causal=True, mask=mask),
        _loop_attention(q, k, v, True, mask=mask),
        rtol=1e-4,
        atol=1e-5,
    )


def _named(model):
    return list(model.named_parameters())


def test_adamw_steps_equal_torch_adamw_with_decay_only_on_matrices():
    torch.manual_seed(1)
    ours_model = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 2)
    )
    ref_model = __import__("copy").deepcopy(ours_model)
    opt = llmcore.create(
        "optimizer",
        "adamw",
        named_params=_named(ours_model),
        lr=1e-2,
        betas=(0.9, 0.99),
        weight_decay=0.1,
    )
    matrices = [p for p in ref_model.parameters() if p.dim() == 2]
    vectors = [p for p in ref_model.parameters() if p.dim() < 2]
    ref = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.99),
        fused=False,
        foreach=False,
    )
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    for _ in range(5):
        for model, o in ((ours_model, opt), (ref_model, ref)):
            o.zero_grad()
            F.mse_loss(model(x), y).backward()
            o.step()
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_cosine_schedule_is_nanogpts_formula():
    def nanogpt_lr(it, lr=1e-3, warmup=100, decay=2000, min_lr=1e-4):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = llmcore.create(
        "schedule", "cosine", optimizer=opt, warmup_iters=100, decay_iters=2000, min_lr=1e-4
    )
    for it in range(2100):
        assert opt.param_groups[0]["lr"] == pytest.approx(nanogpt_lr(it), rel=1e-12, abs=1e-15), it
        opt.step()
        sched.step()


def test_decoders():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0, -1.0]])
    assert llmcore.create("decoder", "greedy")(logits).tolist() == [1, 0]
    draw = llmcore.create("decoder", "multinomial")
    a = draw(logits.repeat(50, 1), torch.Generator().manual_seed(3))
    b = draw(logits.repeat(50, 1), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_char_tokenizer():
    cls = llmcore.available("tokenizer")["char"].factory
    tok = cls.train(["hello world", "hi!"])
    assert tok.chars == sorted(set("hello worldhi!"))
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.encode("dh") == [tok.chars.index("d"), tok.chars.index("h")]
    with pytest.raises(TokenizerError, match=r"character 'z' is not in the alphabet"):
        tok.encode("z")
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([99])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([-1])
    from llmcore.testing import check_tokenizer

    check_tokenizer(tok, ("hello", "", "hi world!"))


def test_jsonl_logger(tmp_path):
    lg = llmcore.create("logger", "jsonl", run_dir=tmp_path)
    lg.log({"step": 1, "train_loss": 2.5})
    lg.log({"step": 2, "train_loss": float("nan")})
    lg.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "train_loss": 2.5}, {"step": 2, "train_loss": None}]


class SigmoidAttention:
    """Attention by elementwise sigmoid scores: not softmax, but it reads what the contract
    says (keys up to its own position, kv head h // (H // Hkv), no masked key)."""

    top_left_causal = False  # the classic bug: causal aligned for Tq == Tk only
    head_of = staticmethod(lambda h, H, Hkv: h // (H // Hkv))
    honours_mask = True
    adjust = staticmethod(lambda causal, window: (causal, window))

    def __call__(self, q, k, v, *, causal=True, scale=None, mask=None, window=None):
        causal, window = self.adjust(causal, window)
        B, H, Tq, D = q.shape
        Hkv, Tk = k.shape[1], k.shape[2]
        heads = torch.tensor([self.head_of(h, H, Hkv) for h in range(H)])
        k, v = k[:, heads], v[:, heads]  # (B, H, Tk, D)
        scores = torch.sigmoid(q @ k.transpose(-2, -1) * (scale or D**-0.5))  # (B, H, Tq, Tk)
        shift = 0 if self.top_left_causal else Tk - Tq
        qpos = torch.arange(Tq)[:, None] + shift
        kpos = torch.arange(Tk)[None, :]
        ok = torch.ones(Tq, Tk, dtype=torch.bool)
        if causal:
            ok &= kpos <= qpos
        if window is not None:
            ok &= kpos > qpos - window
        if mask is not None and self.honours_mask:
            ok = ok & mask
        return (scores * ok) @ v / Tk


class TopLeftCausal(SigmoidAttention):
    top_left_causal = True


class ModuloHeads(SigmoidAttention):
    head_of = staticmethod(lambda h, H, Hkv: h % Hkv)


class NotCausal(SigmoidAttention):
    adjust = staticmethod(lambda causal, window: (False, window))


class IgnoresWindow(SigmoidAttention):
    adjust = staticmethod(lambda causal, window: (causal, None))


class IgnoresMask(SigmoidAttention):
    honours_mask = False


class ClaimsStandard(SigmoidAttention):
    standard = True


def test_a_non_standard_attention_that_keeps_the_contract_conforms():
    from llmcore.testing import check_component

    check_component("attention", SigmoidAttention)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (TopLeftCausal, "decode queries against a cache differ from the full pass"),
        (ModuloHeads, r"must give query head h the key/value head h // \(H // Hkv\)"),
        (NotCausal, "causal attention let a query read a key after its own position"),
        (IgnoresWindow, "a query read a key outside its sliding window"),
        (IgnoresMask, "attention read a key that the mask hides"),
        (ClaimsStandard, "declares standard = True but differs from the softmax formula"),
    ],
)
def test_the_attention_check_catches_each_breach_of_the_contract(factory, message):
    from llmcore.testing import ConformanceError, check_component

    with pytest.raises(ConformanceError, match=message):
        check_component("attention", factory)


def test_the_builtin_attentions_declare_themselves_standard():
    for name in ("math", "sdpa", "native"):
        factory = llmcore.available("attention")[name].factory
        assert getattr(factory, "standard", False), name


def test_a_search_decoder_that_returns_its_stop_id_fails_the_check():
    from llmcore.testing import ConformanceError, check_component

    class Broken:
        runs_search = True

        def search(self, model, prompt_ids, *, max_new_tokens, samplers, stop_ids, generator):
            return [5, 0], None  # 0 is the stop id: it must end the answer, unreturned

    with pytest.raises(ConformanceError, match="returned the stop id"):
        check_component("decoder", Broken)

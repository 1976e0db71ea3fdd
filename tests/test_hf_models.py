"""llmcore's plugin-built model against transformers' own implementations, weight for weight:
GPT-2, Llama (GQA, tied/untied, llama3 rope scaling, odd head dims, biases), Mistral (sliding
window) and Qwen2 (q/k/v biases) load with identical logits and greedy continuations, and
export back to folders transformers reads."""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.hf import save_hf  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

VOCAB = 97
CONTEXT = 64
LLAMA = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=CONTEXT,
    initializer_range=0.2,  # spread-out logits: greedy choices are far from ties
    bos_token_id=None,
    eos_token_id=None,
)
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
GPT2 = dict(
    vocab_size=VOCAB,
    n_embd=64,
    n_layer=2,
    n_head=4,
    n_positions=CONTEXT,
    initializer_range=0.2,
    bos_token_id=None,
    eos_token_id=None,
)
CASES = {
    "gpt2-tied": ("GPT2", GPT2),
    "gpt2-untied": ("GPT2", dict(GPT2, tie_word_embeddings=False)),
    "gpt2-gelu-exact-2-heads": ("GPT2", dict(GPT2, n_head=2, activation_function="gelu")),
    "llama-mha-untied": ("Llama", dict(LLAMA, num_key_value_heads=4)),
    "llama-gqa2-tied": ("Llama", dict(LLAMA, num_key_value_heads=2, tie_word_embeddings=True)),
    "llama-mqa-llama3-rope": (
        "Llama",
        dict(LLAMA, num_key_value_heads=1, rope_theta=500000.0, rope_scaling=LLAMA3_SCALING),
    ),
    "llama-head-dim-24": ("Llama", dict(LLAMA, num_key_value_heads=2, head_dim=24)),
    "llama-head-dim-40-biases": (
        "Llama",
        dict(LLAMA, num_key_value_heads=1, head_dim=40, attention_bias=True, mlp_bias=True),
    ),
    "llama-attention-bias-only": ("Llama", dict(LLAMA, attention_bias=True)),
    "llama-mlp-bias-only": ("Llama", dict(LLAMA, num_key_value_heads=2, mlp_bias=True)),
    "mistral-window-8": ("Mistral", dict(LLAMA, num_key_value_heads=2, sliding_window=8)),
    "qwen2-window-6-all-layers": (
        "Qwen2",
        dict(
            LLAMA,
            num_key_value_heads=2,
            use_sliding_window=True,
            sliding_window=6,
            max_window_layers=0,
        ),
    ),
    "qwen2-qkv-bias-tied": (
        "Qwen2",
        dict(LLAMA, num_key_value_heads=2, tie_word_embeddings=True),
    ),
}


def hf_model(family: str, kwargs: dict, seed: int = 0):
    config = getattr(transformers, f"{family}Config")(**kwargs)
    torch.manual_seed(seed)
    cls = getattr(transformers, "GPT2LMHeadModel" if family == "GPT2" else f"{family}ForCausalLM")
    model = cls(config).eval()
    with torch.no_grad():  # HF zero-initialises biases; random ones test their mapping
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.2)
    return model


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def greedy(model, prompt: list[int], n: int) -> list[int]:
    """llmcore's greedy decode with its KV cache: prefill, then one token at a time."""
    decoder = llmcore.create("decoder", "greedy")
    cache = model.new_cache(1, len(prompt) + n)
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), cache=cache)[:, -1]
        out = []
        for _ in range(n):
            nxt = decoder(logits)
            out.append(int(nxt[0]))
            logits = model(nxt[:, None], cache=cache)[:, -1]
    return out


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    model.generation_config.eos_token_id = None  # never stop early
    model.generation_config.pad_token_id = 0
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    family, kwargs = CASES[request.param]
    ref = hf_model(family, kwargs)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    ours, cfg = llmcore.load_hf(folder)
    return request.param, ref, ours, cfg


def test_logits_match_transformers(pair):
    name, ref, ours, _ = pair
    gen = torch.Generator().manual_seed(1)
    for batch, length in ((2, CONTEXT), (3, 17), (1, 1)):  # full context, ragged, one token
        ids = torch.randint(0, VOCAB, (batch, length), generator=gen)
        expected = hf_logits(ref, ids)
        with torch.no_grad():
            got = ours(ids)
        assert got.shape == expected.shape
        diff = (got - expected).abs().max().item()
        assert diff < 1e-4, f"{name}: max |logits diff| {diff} at B={batch} T={length}"


def test_greedy_32_tokens_match_generate(pair):
    name, ref, ours, _ = pair
    prompt = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(2)).tolist()
    expected = hf_greedy(ref, prompt, 32)
    assert len(expected) == 32
    assert greedy(ours, prompt, 32) == expected, name


def test_export_reloads_in_transformers(pair, tmp_path):
    name, ref, ours, _ = pair
    assert save_hf(ours, tmp_path) == []
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back) is type(ref)
    ids = torch.randint(0, VOCAB, (2, CONTEXT), generator=torch.Generator().manual_seed(3))
    diff = (hf_logits(back, ids) - hf_logits(ref, ids)).abs().max().item()
    assert diff < 1e-4, f"{name}: exported model differs by {diff}"


def test_config_uses_registered_components(pair):
    name, _, ours, cfg = pair
    assert isinstance(ours, llmcore.Transformer)
    expected = ("learned", "layernorm") if name.startswith("gpt2") else ("rope", "rmsnorm")
    assert (cfg.model.position.name, cfg.model.norm.name) == expected
    assert cfg.model.vocab_size == VOCAB and cfg.model.block_size == CONTEXT


def test_sliding_window_is_exercised(tmp_path):
    """Without its window the Mistral model disagrees with transformers: the test above
    really checks the window, not a full-attention model that happens to agree."""
    family, kwargs = CASES["mistral-window-8"]
    ref = hf_model(family, kwargs)
    ref.save_pretrained(tmp_path)
    ours, cfg = llmcore.load_hf(tmp_path)
    assert cfg.model.sliding_window == 8
    ids = torch.randint(0, VOCAB, (1, CONTEXT), generator=torch.Generator().manual_seed(4))
    for block in ours.blocks:
        block.attn.window = None
    with torch.no_grad():
        assert (ours(ids) - hf_logits(ref, ids)).abs().max().item() > 1e-3


def test_llmcore_model_exports_and_reloads(tmp_path):
    """A model built by llmcore itself (not loaded from HF) runs unchanged in transformers,
    including a bias-free GPT-2-style model (HF's biases are written as zeros)."""
    for preset, kind in (("shakespeare-char", "gpt2"), ("llama-tiny", "llama")):
        cfg = llmcore.load_config(preset, ["model.n_layer=2", "model.block_size=32"])
        torch.manual_seed(0)
        model = llmcore.build_model(cfg, vocab_size=50).eval()
        out = tmp_path / preset
        save_hf(model, out)
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        assert back.config.model_type == kind
        ids = torch.randint(0, 50, (2, 32), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            diff = (model(ids) - back(ids).logits).abs().max().item()
        assert diff < 1e-4, f"{preset}: {diff}"

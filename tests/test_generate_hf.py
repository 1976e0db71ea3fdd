"""The engine against Hugging Face transformers' ``generate`` on the same GPT-2 weights:
greedy decoding and beam search must choose the same tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmcore import build_model, generate
from llmcore.builtin.decoders import Beam
from llmcore.builtin.samplers import NoRepeatNGram, RepetitionPenalty
from llmcore.config import Component, ModelConfig

V, BLOCK = 61, 96


class _IdTokenizer:
    """Ids are their own text: one character per id (no end-of-text token)."""

    eot_id = None

    def encode(self, text):
        return [ord(c) - 0x100 for c in text]

    def decode_bytes(self, ids):
        return "".join(chr(0x100 + i) for i in ids).encode()

    def decode(self, ids):
        return self.decode_bytes(ids).decode()


def _pair(seed: int = 0):
    """An llmcore model and an HF GPT2LMHeadModel with the same random weights."""
    torch.manual_seed(seed)
    hcfg = GPT2Config(
        vocab_size=V,
        n_positions=BLOCK,
        n_embd=48,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.3,  # large weights: varied, decisive continuations
    )
    hf = GPT2LMHeadModel(hcfg).eval()
    mcfg = ModelConfig(
        vocab_size=V,
        block_size=BLOCK,
        n_layer=2,
        n_head=4,
        n_embd=48,
        mlp=Component("gelu", {"approximate": "tanh"}),
        attention=Component("math"),
    )
    ours = build_model(mcfg).eval()
    sd = hf.transformer.state_dict()
    m = {"wte.weight": sd["wte.weight"], "position.wpe.weight": sd["wpe.weight"]}
    m["norm_f.weight"], m["norm_f.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
    for i in range(2):
        h, b = f"h.{i}.", f"blocks.{i}."
        for a, c in (("ln_1", "norm1"), ("ln_2", "norm2")):
            m[b + c + ".weight"], m[b + c + ".bias"] = sd[h + a + ".weight"], sd[h + a + ".bias"]
        for a, c in (
            ("attn.c_attn", "attn.qkv"),
            ("attn.c_proj", "attn.proj"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ):  # HF's Conv1D stores (in, out): transpose to Linear's (out, in)
            m[b + c + ".weight"] = sd[h + a + ".weight"].t().contiguous()
            m[b + c + ".bias"] = sd[h + a + ".bias"]
    m["lm_head.weight"] = sd["wte.weight"]
    ours.load_state_dict(m, strict=True)
    return ours, hf


def _prompt(seed: int, n: int) -> list[int]:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_same_logits():
    ours, hf = _pair()
    ids = torch.tensor([_prompt(1, 20)])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_prompt", [1, 9])
def test_greedy_matches_hf(n_prompt):
    ours, hf = _pair()
    p = _prompt(n_prompt, n_prompt)
    got = generate(ours, _IdTokenizer(), p, max_new_tokens=40)[0].ids
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([p]),
            do_sample=False,
            max_new_tokens=40,
            min_new_tokens=40,
            eos_token_id=None,
            pad_token_id=0,
        )[0, n_prompt:].tolist()
    assert got == ref


@pytest.mark.parametrize(
    "width,length_penalty,early_stopping,eos",
    [(1, 1.0, False, None), (3, 1.0, False, 7), (4, 0.5, True, 7), (4, 2.0, "never", 3)],
)
def test_beam_search_matches_hf(width, length_penalty, early_stopping, eos):
    ours, hf = _pair(seed=2)
    for s in range(3):
        p = _prompt(10 + s, 6)
        beam = Beam(width=width, length_penalty=length_penalty, early_stopping=early_stopping)
        stop = [] if eos is None else [eos]
        got = generate(ours, _IdTokenizer(), p, max_new_tokens=24, decoder=beam, stop_ids=stop)[0]
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([p]),
                do_sample=False,
                num_beams=width,
                length_penalty=length_penalty,
                early_stopping=early_stopping,
                max_new_tokens=24,
                eos_token_id=eos,
                pad_token_id=0,
            )[0, len(p) :].tolist()
        ref = [t for t in ref if t != eos] if eos is not None else ref
        # HF pads shorter outputs with pad/eos: drop the padding past the end token
        assert got.ids == ref[: len(got.ids)] and len(ref) - len(got.ids) <= 24


def test_processors_in_the_loop_match_hf():
    """Repetition penalty and no-repeat n-gram inside greedy decoding, as HF applies them."""
    ours, hf = _pair(seed=3)
    p = _prompt(5, 8)
    got = generate(
        ours,
        _IdTokenizer(),
        p,
        max_new_tokens=40,
        samplers=[RepetitionPenalty(1.5), NoRepeatNGram(2)],
    )[0].ids
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([p]),
            do_sample=False,
            max_new_tokens=40,
            min_new_tokens=40,
            repetition_penalty=1.5,
            no_repeat_ngram_size=2,
            eos_token_id=None,
            pad_token_id=0,
        )[0, 8:].tolist()
    assert got == ref

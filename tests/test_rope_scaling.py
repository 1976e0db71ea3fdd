"""Scaled rotary embeddings (linear, Llama 3, yarn) from HF folders and GGUF files, against
transformers' models built with the same ``rope_scaling``.

GGUF files carry the scaling as llama.cpp does: linear and yarn as ``{arch}.rope.scaling.*``
keys, Llama 3's as the per-frequency divisors of a ``rope_freqs.weight`` tensor (computed
here with llama.cpp's converter formula). transformers' GGUF loader reads neither for these
architectures (it builds an unscaled model), so the GGUF loads are compared with the
transformers model of the HF folder the file was made from.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.cli import main  # noqa: E402
from llmcore.errors import CheckpointError, ConfigError  # noqa: E402
from llmcore.hf import save_hf  # noqa: E402
from tests.test_gguf import hf_model, write_gguf  # noqa: E402

V = gguf.GGUFValueType
THETA = 10000.0
# original contexts of 16 against sequences of 96: every scaling changes the logits
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn-betas": {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 32,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
    },
}
IDS = torch.randint(0, 259, (2, 96), generator=torch.Generator().manual_seed(0))


def reference(kind: str):
    """A tiny random transformers Llama with scaling ``kind`` (context 128, head size 64)."""
    return hf_model("llama", 256, rope_scaling=dict(SCALINGS[kind]), rope_theta=THETA)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        out = model(IDS)
    return getattr(out, "logits", out)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def llama_cpp_rope_freqs(s: dict, head_dim: int) -> np.ndarray:
    """llama.cpp's converter: the divisor of each rotary frequency for Llama 3 scaling."""
    freqs = 1.0 / (THETA ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    old = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / s["low_freq_factor"], old / s["high_freq_factor"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(s["factor"])
        else:
            smooth = (old / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"]
            )
            out.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(out, dtype=np.float32)


def llama_cpp_gguf(ref, kind: str, path):
    """``ref`` (built with scaling ``kind``) as a GGUF file, its scaling written the way
    llama.cpp's converter writes it."""
    s = SCALINGS[kind]
    extra, tensors = {}, {}
    if s["rope_type"] == "llama3":
        tensors["rope_freqs.weight"] = llama_cpp_rope_freqs(s, 64)
    else:
        extra["llama.rope.scaling.type"] = (s["rope_type"], V.STRING)
        extra["llama.rope.scaling.factor"] = (s["factor"], V.FLOAT32)
    if s["rope_type"] == "yarn":
        extra["llama.rope.scaling.original_context_length"] = (
            s["original_max_position_embeddings"],
            V.UINT32,
        )
        for beta in ("beta_fast", "beta_slow"):
            if beta in s:
                extra[f"llama.rope.scaling.yarn_{beta}"] = (s[beta], V.FLOAT32)
    return write_gguf(ref, path, extra=extra, tensors=tensors)


def rounded_to_f16(ref):
    """``ref`` with its matrices rounded to float16, as ``--type f16`` stores them."""
    out = copy.deepcopy(ref)
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    return out


def field(reader, key):
    return reader.fields[key].contents()


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_hf_folder_matches_transformers(tmp_path, kind):
    ref = reference(kind)
    ref.save_pretrained(tmp_path)
    ours, cfg = llmcore.load_hf(tmp_path)
    assert cfg.model.position.params["scaling"]["type"] == SCALINGS[kind]["rope_type"]
    assert_same(logits(ours), logits(ref))
    # the positions reach past the original context: without the scaling the model differs
    plain = hf_model("llama", 256, rope_theta=THETA)
    plain.load_state_dict(ref.state_dict())
    assert (logits(plain) - logits(ref)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_llama_cpp_gguf_matches_transformers(tmp_path, kind):
    ref = reference(kind)
    loaded = llmcore.load(llama_cpp_gguf(ref, kind, tmp_path / "m.gguf"))
    assert_same(logits(loaded.model), logits(ref))


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_convert_to_gguf_writes_the_scaling_llama_cpp_reads(tmp_path, kind):
    ref = reference(kind)
    src = llama_cpp_gguf(ref, kind, tmp_path / "src.gguf")
    out = tmp_path / "out.gguf"
    assert main(["convert", str(src), "--to-gguf", str(out), "--type", "f16"]) == 0
    s = SCALINGS[kind]
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    if s["rope_type"] == "llama3":
        assert "llama.rope.scaling.type" not in reader.fields
        np.testing.assert_allclose(
            np.asarray(tensors["rope_freqs.weight"].data), llama_cpp_rope_freqs(s, 64), rtol=1e-6
        )
    else:
        assert "rope_freqs.weight" not in tensors
        assert field(reader, "llama.rope.scaling.type") == s["rope_type"]
        assert field(reader, "llama.rope.scaling.factor") == pytest.approx(s["factor"])
    if s["rope_type"] == "yarn":
        assert (
            field(reader, "llama.rope.scaling.original_context_length")
            == s["original_max_position_embeddings"]
        )
        assert field(reader, "llama.rope.scaling.yarn_beta_fast") == s.get("beta_fast", 32)
        assert field(reader, "llama.rope.scaling.yarn_beta_slow") == s.get("beta_slow", 1)
    assert_same(logits(llmcore.load(out).model), logits(rounded_to_f16(ref)))


@pytest.mark.parametrize("kind", ["linear", "llama3", "yarn"])
def test_hf_model_written_as_gguf(tmp_path, kind):
    """An HF folder loaded by llmcore and written by its GGUF writer keeps the scaling."""
    ref = reference(kind)
    ref.save_pretrained(tmp_path / "hf")
    model, _ = llmcore.load_hf(tmp_path / "hf")
    tok = llmcore.load(llama_cpp_gguf(ref, kind, tmp_path / "tok.gguf")).tokenizer
    out = llmcore.gguf.save_gguf(model, tok, tmp_path / "out.gguf", qtype="f16")
    assert_same(logits(llmcore.load(out).model), logits(rounded_to_f16(ref)))


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_export_to_hf_reloads_in_transformers(tmp_path, kind):
    ref = reference(kind)
    model = llmcore.load(llama_cpp_gguf(ref, kind, tmp_path / "m.gguf")).model
    save_hf(model, tmp_path / "hf")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert_same(logits(back), logits(ref))


def test_llama3_gguf_survives_a_run_folder(tmp_path):
    """The per-frequency divisors of a GGUF file go through a run's config unchanged."""
    ref = reference("llama3")
    src = llama_cpp_gguf(ref, "llama3", tmp_path / "m.gguf")
    assert main(["convert", "--from-hf", str(src), "--out", str(tmp_path / "run")]) == 0
    assert_same(logits(llmcore.load(tmp_path / "run").model), logits(ref))


def test_linear_factor_multiplies_rope_freqs(tmp_path):
    """llama.cpp divides each frequency by its rope_freqs divisor and by the linear factor."""
    ref = hf_model("llama", 256, rope_scaling={"rope_type": "linear", "factor": 3.0})
    path = write_gguf(
        ref,
        tmp_path / "m.gguf",
        extra={
            "llama.rope.scaling.type": ("linear", V.STRING),
            "llama.rope.scaling.factor": (1.5, V.FLOAT32),
        },
        tensors={"rope_freqs.weight": np.full(32, 2.0, np.float32)},
    )
    assert_same(logits(llmcore.load(path).model), logits(ref))


@pytest.mark.parametrize(
    "extra, tensors, error, message",
    [
        (
            {"llama.rope.scaling.type": ("longrope", V.STRING)},
            {},
            ConfigError,
            r"m\.gguf: llama\.rope\.scaling\.type 'longrope' is not supported; "
            r"supported: none, linear, yarn",
        ),
        (
            {"llama.rope.scaling.factor": ("two", V.STRING)},
            {},
            ConfigError,
            r"m\.gguf: metadata 'llama\.rope\.scaling\.factor' is a string",
        ),
        (
            {
                "llama.rope.scaling.type": ("yarn", V.STRING),
                "llama.rope.scaling.factor": (4.0, V.FLOAT32),
                "llama.rope.scaling.attn_factor": (0.5, V.FLOAT32),
            },
            {},
            ConfigError,
            r"m\.gguf: llama\.rope\.scaling\.attn_factor = 0\.5: only 1\.0 is supported",
        ),
        (
            {},
            {"rope_freqs.weight": np.ones(31, np.float32)},
            CheckpointError,
            r"m\.gguf: tensor 'rope_freqs\.weight' is F32 of shape \(31,\); expected .*\(32,\)",
        ),
        (
            {},
            {"rope_freqs.weight": np.zeros(32, np.float32)},
            CheckpointError,
            r"rope_freqs\.weight' has a value <= 0",
        ),
    ],
    ids=["unknown-type", "factor-not-a-number", "yarn-attn-factor", "freqs-shape", "freqs-zero"],
)
def test_bad_gguf_scaling_is_named(tmp_path, extra, tensors, error, message):
    path = write_gguf(hf_model("llama", 256), tmp_path / "m.gguf", extra=extra, tensors=tensors)
    with pytest.raises(error, match=message):
        llmcore.load(path)


@pytest.mark.parametrize(
    "scaling, message",
    [
        (
            {"rope_type": "dynamic", "factor": 2.0},
            r"rope_scaling: rope type 'dynamic' is not supported",
        ),
        ({"rope_type": "linear"}, r"rope_scaling: linear scaling needs 'factor'"),
        ({"rope_type": "yarn", "factor": "4"}, r"rope_scaling\.factor: expected float"),
    ],
)
def test_bad_hf_scaling_is_named(tmp_path, scaling, message):
    hf_model("llama", 256).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = scaling
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: " + message):
        llmcore.load_hf(tmp_path)

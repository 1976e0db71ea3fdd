"""HF export refuses a model with a component no exported architecture computes, naming the
config field, instead of writing a plain GPT-2 that would load and compute another model."""

from __future__ import annotations

import pytest

import llmcore
from llmcore import plugins
from llmcore.builtin.attention import math_attention
from llmcore.errors import ConfigError
from llmcore.hf import save_hf


class DoubledAttention:
    """A third-party attention that is not plain softmax attention: twice its output."""

    @staticmethod
    @llmcore.hookimpl
    def register_attentions(register):
        def doubled():
            return lambda q, k, v, **kw: 2 * math_attention(q, k, v, **kw)

        register("doubled", doubled)


@pytest.fixture
def doubled_attention():
    plugins.registry().add_plugin(DoubledAttention, "fake_doubled", "fake-doubled", "0.1")
    yield
    plugins.reload()


@pytest.mark.parametrize("preset", ["shakespeare-char", "llama-tiny"])
def test_export_refuses_an_attention_hf_cannot_express(tmp_path, doubled_attention, preset):
    cfg = llmcore.load_config(
        preset, ["model.n_layer=1", "model.block_size=16", "model.attention=doubled"]
    )
    model = llmcore.build_model(cfg, 11)
    with pytest.raises(ConfigError) as err:
        save_hf(model, tmp_path / "hf")
    assert "model.attention='doubled' is not plain softmax attention" in str(err.value)
    assert "sdpa" in str(err.value) and not (tmp_path / "hf").exists()


def test_export_of_plain_attention_still_writes(tmp_path):
    for name in ("sdpa", "native", "math"):
        cfg = llmcore.load_config(
            "shakespeare-char",
            ["model.n_layer=1", "model.block_size=16", f"model.attention={name}"],
        )
        save_hf(llmcore.build_model(cfg, 11), tmp_path / name)
        assert (tmp_path / name / "config.json").exists()

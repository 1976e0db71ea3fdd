"""Quantized models: GGUF files loaded with their blocks kept (llmcore.load(quantized=True)).

References: transformers' GGUF loader (which dequantizes through the gguf package) for the
logits and greedy tokens, and gguf.GGUFReader for the raw blocks the layers must hold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import llmcore  # noqa: E402
from llmcore.errors import CheckpointError, ConfigError, TrainingError  # noqa: E402
from llmcore.generation import generate, stream  # noqa: E402
from llmcore.generation.lean import LeanStep, lean_step  # noqa: E402
from llmcore.quant import check_trainable, is_quantized, set_activations  # noqa: E402
from llmcore.quant.layers import QuantizedEmbedding, StackedQuantizedLinear  # noqa: E402
from llmcore.quant.linear import QuantizedLinear  # noqa: E402
from tests.test_gguf import IDS, T, hf_model, transformers_gguf, write_gguf  # noqa: E402


def logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out[0] if isinstance(out, tuple) else getattr(out, "logits", out)


def exact(model):
    """``model`` with its quantized layers multiplying exact float32 activations, so that only
    the weights' blocks separate it from the dequantized reference."""
    assert set_activations(model, "float32") > 0
    return model


def raw_blocks(path, name):
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    return np.asarray(t.data).view(np.uint8).reshape(-1)


@pytest.mark.parametrize(
    ("qtype", "tied"),
    [(T.Q8_0, True), (T.Q4_0, False), (T.Q4_1, True), (T.Q4_K, False), (T.Q6_K, True)],
    ids=lambda v: getattr(v, "name", "tied" if v is True else "untied"),
)
def test_logits_equal_the_dense_dequantized_model(tmp_path, qtype, tied):
    path = write_gguf(hf_model("llama", tie_word_embeddings=tied), tmp_path / "m.gguf", qtype)
    model = llmcore.load(path, quantized=True).model
    assert type(model.wte) is QuantizedEmbedding and type(model.lm_head) is QuantizedLinear
    for blk in model.blocks:
        for layer in (blk.attn.qkv, blk.attn.proj, blk.mlp.gate, blk.mlp.up, blk.mlp.down):
            assert type(layer) is QuantizedLinear and layer.qtype.name == qtype.name.lower()
    if tied:  # one matrix read at both ends
        assert model.lm_head.blocks.data_ptr() == model.wte.blocks.data_ptr()
    # the layers hold the file's own blocks, not a re-quantization
    down = model.blocks[1].mlp.down.blocks.numpy().reshape(-1)
    assert np.array_equal(down, raw_blocks(path, "blk.1.ffn_down.weight"))
    want = logits(transformers_gguf(path))
    torch.testing.assert_close(
        logits(exact(model)), want, rtol=1e-3, atol=1e-3 * float(want.abs().max())
    )


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_K, T.Q6_K], ids=lambda v: v.name)
def test_int8_activations_stay_near_the_dense_model(tmp_path, qtype):
    """The default: input rows quantized to 8-bit blocks of 32, as llama.cpp does. Each
    matmul's error is held to its closed-form bound in test_quant_matmul; through a whole
    model it stays a few percent of the logits' range (about 0.5% a matmul for random
    inputs, compounding over the layers), where a wrong scale or block would be off by the
    logits' own size."""
    path = write_gguf(hf_model("llama", tie_word_embeddings=True), tmp_path / "m.gguf", qtype)
    model = llmcore.load(path, quantized=True).model
    assert {m.activations for m in model.modules() if isinstance(m, QuantizedLinear)} == {"int8"}
    want = logits(transformers_gguf(path))
    got = logits(model)
    assert not torch.equal(got, logits(exact(model)))  # the int8 path really ran
    torch.testing.assert_close(got, want, rtol=0, atol=5e-2 * float(want.abs().max()))


def test_gpt2_with_biases_and_learned_positions(tmp_path):
    path = write_gguf(hf_model("gpt2"), tmp_path / "m.gguf", T.Q8_0)
    model = llmcore.load(path, quantized=True).model
    assert is_quantized(model) and model.blocks[0].attn.qkv.bias is not None
    want = logits(transformers_gguf(path))
    torch.testing.assert_close(
        logits(exact(model)), want, rtol=1e-3, atol=1e-3 * float(want.abs().max())
    )


@pytest.fixture
def q8(tmp_path):
    # a larger init spreads the logits, so that greedy decoding does not just repeat a token
    model = hf_model("llama", tie_word_embeddings=True, initializer_range=0.2)
    return write_gguf(model, tmp_path / "m.gguf", T.Q8_0)


def test_greedy_text_is_the_dense_models(q8):
    loaded = llmcore.load(q8, quantized=True)
    assert isinstance(lean_step(loaded.model, loaded.model.new_cache(1, 8)), LeanStep)
    ref = transformers_gguf(q8)
    with torch.no_grad():
        want = ref.generate(IDS, max_new_tokens=24, do_sample=False, pad_token_id=0)
    want = want[0, IDS.shape[1] :].tolist()
    greedy = llmcore.create("decoder", "greedy")
    got = generate(
        loaded.model, loaded.tokenizer, [IDS[0].tolist()], max_new_tokens=24, decoder=greedy,
        samplers=[], eot=False,
    )[0]  # fmt: skip
    assert got.ids == want
    assert len(set(want)) > 3  # the check means something: the text is not one token repeated
    # streaming yields the same text piece by piece, and a stop string cuts it
    pieces = list(
        stream(loaded.model, loaded.tokenizer, IDS[0].tolist(), max_new_tokens=24,
               decoder=greedy, samplers=[], eot=False)
    )  # fmt: skip
    assert "".join(p.text for p in pieces) == got.text
    cut = got.text[len(got.text) // 2 :][:2]
    if cut:
        stopped = generate(
            loaded.model, loaded.tokenizer, [IDS[0].tolist()], max_new_tokens=24,
            decoder=greedy, samplers=[], eot=False, stop=[cut],
        )[0]  # fmt: skip
        assert stopped.text == got.text[: got.text.index(cut)]


def test_batched_decode_matches_one_prompt_at_a_time(q8):
    loaded = llmcore.load(q8, quantized=True)
    greedy = llmcore.create("decoder", "greedy")
    prompts = [[5, 17, 256, 99], [3, 200, 258, 42]]
    kw = dict(max_new_tokens=8, decoder=greedy, samplers=[], eot=False)
    batch = generate(loaded.model, loaded.tokenizer, prompts, **kw)
    for p, g in zip(prompts, batch):
        assert g.ids == generate(loaded.model, loaded.tokenizer, [p], **kw)[0].ids


def test_mixed_formats_in_one_fused_layer(tmp_path):
    # attn_v in another format than attn_q / attn_k, as Q4_K_M files have it
    path = write_gguf(hf_model("llama"), tmp_path / "m.gguf", T.Q4_0)
    mixed = write_mixed(path, tmp_path / "mixed.gguf", T.Q8_0)
    model = llmcore.load(mixed, quantized=True).model
    qkv = model.blocks[0].attn.qkv
    assert type(qkv) is StackedQuantizedLinear
    assert [p.qtype.name for p in qkv.parts] == ["q4_0", "q8_0"]
    assert isinstance(lean_step(model, model.new_cache(1, 8)), LeanStep)
    want = logits(transformers_gguf(mixed))
    torch.testing.assert_close(
        logits(exact(model)), want, rtol=1e-3, atol=1e-3 * float(want.abs().max())
    )
    # a float attn_v: that layer loads dense, the others stay quantized
    dense_v = write_mixed(path, tmp_path / "f16v.gguf", T.F16)
    model = llmcore.load(dense_v, quantized=True).model
    assert type(model.blocks[0].attn.qkv) is torch.nn.Linear
    assert type(model.blocks[0].mlp.down) is QuantizedLinear
    want = logits(transformers_gguf(dense_v))
    torch.testing.assert_close(
        logits(exact(model)), want, rtol=1e-3, atol=1e-3 * float(want.abs().max())
    )


def write_mixed(src, out, v_type):
    """``src`` with every ``attn_v`` re-encoded as ``v_type`` (with gguf's own writer)."""
    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(out), "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            vals = [field.contents(i) for i in range(len(field.data))]
            w.add_key_value(field.name, vals, kind, sub_type=sub)
        else:
            w.add_key_value(field.name, field.contents(), kind)
    for t in reader.tensors:
        data = np.asarray(t.data)
        if ".attn_v." in t.name:
            dense = gguf.quants.dequantize(data, t.tensor_type)
            if v_type == T.F16:
                w.add_tensor(t.name, dense.astype(np.float16))
            else:
                raw = gguf.quants.quantize(dense, v_type)
                w.add_tensor(t.name, raw, raw_shape=raw.shape, raw_dtype=v_type)
        else:
            w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def test_corrupt_scale_names_the_tensor(tmp_path):
    path = write_gguf(hf_model("llama", hidden=64), tmp_path / "m.gguf", T.Q8_0)
    with llmcore.gguf.GGUFFile(path) as f:
        info = f.tensors["blk.1.ffn_up.weight"]
    with open(path, "r+b") as fh:  # a Q8_0 block starts with its fp16 scale: write inf
        fh.seek(info.start + 3 * 34)
        fh.write(np.array([np.inf], np.float16).tobytes())
    with pytest.raises(CheckpointError, match=r"blk\.1\.ffn_up\.weight.*block 3.*NaN or infinite"):
        llmcore.load(path, quantized=True)


def test_quantized_needs_a_gguf_file_and_the_cpu(tmp_path, q8):
    hf = tmp_path / "hf"
    hf_model("llama", hidden=64).save_pretrained(hf)
    with pytest.raises(ConfigError, match="quantized=True needs a GGUF file.*llmcore quantize"):
        llmcore.load(hf, quantized=True)
    with pytest.raises(CheckpointError, match="CPU only"):
        llmcore.load(q8, quantized=True, device="meta")


def test_bad_blocks_are_errors():
    blocks = torch.zeros(4, 34, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not a multiple of the block size 32"):
        QuantizedLinear("q8_0", blocks, 40, 4)
    with pytest.raises(ValueError, match="unknown quantized type 'q3_x'"):
        QuantizedLinear("q3_x", blocks, 32, 4)
    with pytest.raises(ValueError, match="takes"):
        QuantizedEmbedding("q8_0", blocks, 5, 32)


def test_training_a_quantized_model_is_refused(q8):
    model = llmcore.load(q8, quantized=True).model
    with pytest.raises(TrainingError, match=r"quantized=False"):
        check_trainable(model)
    x = torch.randn(1, 2, model.config.n_embd, requires_grad=True)
    with pytest.raises(TrainingError, match=r"quantized=False"):
        model.blocks[0].mlp.up(x)
    check_trainable(llmcore.load(q8).model)  # the dequantized model trains


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_1", "q4_k"])
def test_built_in_quantized_linears_meet_the_contract(name):
    from llmcore.testing import check_registered

    assert llmcore.available("quantized_linear")[name].distribution == "llmcore"
    check_registered("quantized_linear", name, qtype=name, in_features=256)


def test_the_contract_check_catches_a_wrong_layer():
    from llmcore.testing import ConformanceError, check_component

    def off_by_one(blocks, in_features, out_features, bias=None):
        return _Shifted(QuantizedLinear("q8_0", blocks, in_features, out_features, bias))

    with pytest.raises(ConformanceError, match="differs from x @ W.T"):
        check_component("quantized_linear", off_by_one)


class _Shifted(torch.nn.Module):
    """A quantized layer that adds one to its output: not x @ W.T + b."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    @property
    def weight(self):
        return self.layer.weight

    def forward(self, x):
        return self.layer(x) + 1


def test_the_training_engine_refuses_a_quantized_model(q8, tmp_path):
    from llmcore.config import Config
    from llmcore.train import Engine, Workflow

    loaded = llmcore.load(q8, quantized=True)

    class Given(Workflow):  # a workflow handed a quantized model
        def setup(self, engine):
            self.model = self.loss_module = self.saved = loaded.model
            self.tokenizer = loaded.tokenizer

    cfg = Config()
    cfg.train.device = "cpu"
    with pytest.raises(TrainingError, match=r"quantized weights .*quantized=False"):
        Engine(cfg, Given(), out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "ckpt").exists()

"""``llmcore quantize``: the file it writes, read back by the gguf package and transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import llmcore  # noqa: E402
from llmcore.cli import main  # noqa: E402
from llmcore.gguf.writer import permute  # noqa: E402
from llmcore.quant import set_activations  # noqa: E402
from tests.test_gguf import IDS, T, hf_model, transformers_gguf, write_gguf  # noqa: E402


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


@pytest.fixture
def source(tmp_path):
    return write_gguf(hf_model("llama", tie_word_embeddings=True), tmp_path / "src.gguf")


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k"])
def test_quantize_writes_what_gguf_reads(source, tmp_path, qtype):
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(source), "--type", qtype, "--out", str(out)]) == 0
    written = tensors(out)
    # llama.cpp's choice of types: norms f32, the tied embedding (the output) q8_0
    assert written["blk.0.attn_norm.weight"].tensor_type == T.F32
    assert written["output_norm.weight"].tensor_type == T.F32
    assert written["token_embd.weight"].tensor_type == T.Q8_0
    assert "output.weight" not in written
    want_type = T[qtype.upper()]
    assert written["blk.0.ffn_down.weight"].tensor_type == want_type
    # gguf's dequantization of every matrix equals llmcore's (dense load of the file)
    dense = llmcore.load(out).model
    params = dict(dense.named_parameters())
    t = written["blk.1.ffn_gate.weight"]
    ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    assert np.array_equal(params["blocks.1.mlp.gate.weight"].detach().numpy(), ref)
    # so does the quantized model's own view of the blocks, and its logits
    quant = llmcore.load(out, quantized=True).model
    set_activations(quant, "float32")  # exact activations: only the blocks differ
    assert np.array_equal(quant.blocks[1].mlp.gate.dequantize().numpy(), ref)
    want = transformers_gguf(out)(IDS).logits.detach()
    got = quant(IDS).detach()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
    # q8_0 and q4_0 bytes are gguf's own quantizer's, q/k rows in llama.cpp's order
    original = dict(llmcore.load(source).model.named_parameters())
    w = original["blocks.0.attn.qkv.weight"].detach()[: dense.config.n_embd]
    q = written["blk.0.attn_q.weight"]
    if qtype != "q4_k":
        expect = gguf.quants.quantize(permute(w, dense.config.n_head).numpy(), want_type)
        assert np.array_equal(np.asarray(q.data).view(np.uint8).reshape(expect.shape), expect)
    else:  # our own q4_k quantizer: within its bound of the weight
        back = gguf.quants.dequantize(np.asarray(q.data), T.Q4_K)
        err = np.abs(back - permute(w, dense.config.n_head).numpy()).max()
        assert err <= float(w.abs().max()) / 15 * 1.01


def test_q4_k_falls_back_as_llama_cpp_does(tmp_path):
    # rows of 288 values do not split into q4_k's 256-value blocks: llama.cpp writes q5_0
    src = write_gguf(hf_model("llama", hidden=288, head_dim=72), tmp_path / "src.gguf")
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(src), "--type", "q4_k", "--out", str(out)]) == 0
    written = tensors(out)
    assert written["blk.0.attn_q.weight"].tensor_type == T.Q5_0
    assert written["blk.0.ffn_down.weight"].tensor_type == T.Q5_0  # 576 = 2.25 x 256
    assert written["output.weight"].tensor_type == T.Q8_0
    assert written["token_embd.weight"].tensor_type == T.Q5_0  # untied: the chosen type


def test_bad_arguments(source, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"x")
    assert main(["quantize", str(source), "--type", "q8_0", "--out", str(out)]) == 1
    assert "out.gguf" in capsys.readouterr().err and out.read_bytes() == b"x"
    with pytest.raises(SystemExit):
        main(["quantize", str(source), "--type", "q3_k", "--out", str(tmp_path / "o.gguf")])
    assert "invalid choice: 'q3_k'" in capsys.readouterr().err


def test_generate_runs_the_quantized_file(source, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(source), "--type", "q4_0", "--out", str(out)]) == 0
    capsys.readouterr()
    args = ["generate", str(out), "--prompt", "the", "--greedy", "--max-new-tokens", "6"]
    assert main(args) == 0
    kept = capsys.readouterr().out
    assert main([*args, "--no-keep-quantized"]) == 0
    assert capsys.readouterr().out == kept  # same greedy text from the dequantized weights

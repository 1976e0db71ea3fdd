"""GGUF files out (``llmcore convert SOURCE --to-gguf``), read back by the gguf package and by
transformers' GGUF loader; and the CLI commands that take a GGUF file or HF folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import llmcore  # noqa: E402
from llmcore.cli import main  # noqa: E402
from tests.test_gguf import IDS, T, hf_model, transformers_gguf, write_gguf  # noqa: E402


def logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out[0] if isinstance(out, tuple) else getattr(out, "logits", out)


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def source(request, tmp_path):
    return write_gguf(hf_model(request.param), tmp_path / "src.gguf")


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0"])
def test_to_gguf_reads_back_in_transformers_and_gguf(source, tmp_path, qtype):
    out = tmp_path / "out.gguf"
    assert main(["convert", str(source), "--to-gguf", str(out), "--type", qtype]) == 0
    original = llmcore.load(source)
    ref = transformers_gguf(out)
    ours = llmcore.load(out)
    want = logits(ref)
    torch.testing.assert_close(
        logits(ours.model), want, rtol=1e-5, atol=1e-5 * float(want.abs().max())
    )
    reader = gguf.GGUFReader(str(out))
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    with llmcore.gguf.GGUFFile(source) as f:
        assert arch == f.metadata["general.architecture"]
    types = {t.name: t.tensor_type for t in reader.tensors}
    want_type = {"f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}[qtype]
    assert types["blk.0.ffn_down.weight"] == want_type
    assert types["output_norm.weight"] == T.F32
    # gguf's own dequantization of a written tensor equals llmcore's reading of it
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    ref_w = torch.from_numpy(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)).float()
    name = "blocks.0.mlp.proj.weight" if arch == "gpt2" else "blocks.0.mlp.down.weight"
    torch.testing.assert_close(dict(ours.model.named_parameters())[name], ref_w, rtol=0, atol=0)
    # and its bytes are what gguf's own quantizer makes of the model's weight
    w = dict(original.model.named_parameters())[name].detach().numpy()
    expect = (
        w.astype(np.float16).view(np.uint8)
        if qtype == "f16"
        else gguf.quants.quantize(w, want_type)
    )
    assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(expect.shape), expect)


def test_tokenizer_survives_the_round_trip(source, tmp_path):
    out = tmp_path / "out.gguf"
    assert main(["convert", str(source), "--to-gguf", str(out), "--type", "q8_0"]) == 0
    a, b = llmcore.load(source), llmcore.load(out)
    text = "the thin cat in the hat <|endoftext|>"
    assert b.tokenizer.encode(text, allowed_special="all") == a.tokenizer.encode(
        text, allowed_special="all"
    )
    assert b.stop_ids == a.stop_ids and b.chat_template == a.chat_template


def test_generate_and_eval_take_a_gguf_file(source, tmp_path, capsys):
    assert (
        main(["generate", str(source), "--prompt", "the", "--greedy", "--max-new-tokens", "4"]) == 0
    )
    data = tmp_path / "data.txt"
    data.write_text("the thin cat in the hat " * 20, encoding="utf-8")
    assert main(["eval", str(source), "--data", str(data), "--json"]) == 0
    assert '"loss"' in capsys.readouterr().out


def test_from_hf_takes_a_gguf_file(source, tmp_path):
    run = tmp_path / "run"
    assert main(["convert", "--from-hf", str(source), "--out", str(run)]) == 0
    torch.testing.assert_close(logits(llmcore.load(run).model), logits(llmcore.load(source).model))


def test_to_gguf_refuses_an_existing_file_and_bad_arguments(source, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep")
    assert main(["convert", str(source), "--to-gguf", str(out)]) == 1
    assert out.read_bytes() == b"keep"
    assert main(["convert", "--to-gguf", str(tmp_path / "x.gguf")]) == 1

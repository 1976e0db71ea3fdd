"""``llmcore convert``: HF folders become llmcore runs that ``load_checkpoint`` and
``llmcore generate`` use, and llmcore runs become HF folders transformers runs unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.checkpoint import save_checkpoint  # noqa: E402
from llmcore.cli import main  # noqa: E402
from llmcore.hf import save_hf_tokenizer  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

SHAKESPEARE = (Path(llmcore.__file__).parent / "datasets" / "tinyshakespeare.txt").read_text(
    encoding="utf-8"
)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A random Llama with a byte-level BPE tokenizer.json (trained by llmcore, written as HF)."""
    folder = tmp_path_factory.mktemp("hf")
    tok = llmcore.train_tokenizer(
        [SHAKESPEARE[:100000]], vocab_size=300, pattern="gpt2", special_tokens=["<|endoftext|>"]
    )
    save_hf_tokenizer(tok, folder)
    config = transformers.LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return folder, model


def test_from_hf_writes_a_loadable_run(hf_folder, tmp_path):
    folder, ref = hf_folder
    run = tmp_path / "run"
    assert main(["convert", "--from-hf", str(folder), "--out", str(run)]) == 0
    assert (run / "config.yaml").exists() and (run / "ckpt" / "latest").exists()
    loaded = llmcore.load_checkpoint(run)
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = SHAKESPEARE[200000:200400]
    ids = loaded.tokenizer.encode(text)
    assert ids == hf_tok(text)["input_ids"]
    x = torch.tensor([ids[:64]])
    with torch.no_grad():
        assert (loaded.model(x) - ref(x).logits).abs().max().item() < 1e-4


def test_generate_on_a_converted_run(hf_folder, tmp_path, capsys):
    """``llmcore generate`` on the converted run: greedy text equals transformers' greedy text."""
    folder, ref = hf_folder
    run = tmp_path / "run"
    assert main(["convert", "--from-hf", str(folder), "--out", str(run)]) == 0
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    capsys.readouterr()
    prompt = "ROMEO:"
    assert (
        main(["generate", str(run), "--prompt", prompt, "--greedy", "--max-new-tokens", "16"]) == 0
    )
    printed = capsys.readouterr().out
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    p = torch.tensor([hf_tok(prompt)["input_ids"]])
    with torch.no_grad():
        out = ref.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=16, do_sample=False)
    assert printed.rstrip("\n") == prompt + hf_tok.decode(out[0, p.shape[1] :].tolist())


def test_from_hf_in_bfloat16(hf_folder, tmp_path):
    run = tmp_path / "run"
    args = ["convert", "--from-hf", str(hf_folder[0]), "--out", str(run), "--dtype", "bfloat16"]
    assert main(args) == 0
    with safe_open(str(run / "ckpt" / "00000000" / "model.safetensors"), "pt") as f:
        assert f.get_slice("wte.weight").get_dtype() == "BF16"


def test_from_hf_needs_a_tokenizer(hf_folder, tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((hf_folder[0] / name).read_bytes())
    assert main(["convert", "--from-hf", str(folder), "--out", str(tmp_path / "run")]) == 1
    assert "no tokenizer.json" in capsys.readouterr().err
    tok = ["--tokenizer", str(hf_folder[0] / "tokenizer.json")]
    assert main(["convert", "--from-hf", str(folder), "--out", str(tmp_path / "run"), *tok]) == 0
    assert llmcore.load_checkpoint(tmp_path / "run").tokenizer.vocab_size == 300


def char_run(tmp_path: Path, preset: str) -> tuple[Path, torch.nn.Module, object]:
    cfg = llmcore.load_config(preset, ["model.n_layer=2", "model.block_size=32"])
    tok = llmcore.create("tokenizer", "char", chars=sorted(set(SHAKESPEARE)))
    torch.manual_seed(0)
    model = llmcore.build_model(cfg, tok.vocab_size).eval()
    run = tmp_path / "run"
    save_checkpoint(run, 7, model, cfg, tok)
    return run, model, tok


@pytest.mark.parametrize("preset, kind", [("shakespeare-char", "gpt2"), ("llama-tiny", "llama")])
def test_to_hf_runs_in_transformers(tmp_path, preset, kind):
    run, model, tok = char_run(tmp_path, preset)
    out = tmp_path / "hf"
    assert main(["convert", "--to-hf", str(run), "--out", str(out)]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert back.config.model_type == kind
    text = SHAKESPEARE[:32]
    ids = hf_tok(text)["input_ids"]
    assert ids == tok.encode(text)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert (back(x).logits - model(x)).abs().max().item() < 1e-4


def test_to_hf_rejects_an_inexpressible_model(tmp_path, capsys):
    cfg = llmcore.load_config(
        "shakespeare-char", ["model.n_layer=1", "model.position=rope", "model.block_size=16"]
    )
    tok = llmcore.create("tokenizer", "char", chars=list("abc"))
    save_checkpoint(tmp_path / "run", 1, llmcore.build_model(cfg, 3), cfg, tok)
    assert main(["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "position=rope, norm=layernorm, mlp=gelu" in err and "supported:" in err

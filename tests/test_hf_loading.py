"""Loading HF folders: sharded safetensors, half-precision weights and dtypes, and every kind
of bad input failing with a clear llmcore error."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

import llmcore  # noqa: E402
from llmcore.errors import CheckpointError, ConfigError, TokenizerError  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)

LLAMA = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32,
    initializer_range=0.2,
    bos_token_id=None,
    eos_token_id=None,
)


def llama(**over):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **over})).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small Llama checkpoint folder (read-only for the tests: copy before editing)."""
    folder = tmp_path_factory.mktemp("llama")
    model = llama()
    model.save_pretrained(folder)
    return folder, model


def copy(folder, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def test_sharded_checkpoint_loads(tmp_path):
    model = llama()
    model.save_pretrained(tmp_path, max_shard_size="30KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    ours, _ = llmcore.load_hf(tmp_path)
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(0))
    assert (logits(ours, ids) - logits(model, ids)).abs().max().item() < 1e-4


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
def test_half_precision_weights(tmp_path, stored):
    model = llama().to(stored)
    model.save_pretrained(tmp_path)
    ids = torch.randint(0, 97, (1, 32), generator=torch.Generator().manual_seed(0))
    # kept in the stored dtype (no fp32 copy): every parameter is bit-identical to HF's
    for dtype in (stored, "auto"):
        ours, _ = llmcore.load_hf(tmp_path, dtype=dtype)
        assert {p.dtype for p in ours.parameters()} == {stored}
        assert torch.equal(ours.wte.weight, model.model.embed_tokens.weight)
        q = model.model.layers[1].self_attn.q_proj.weight
        assert torch.equal(ours.blocks[1].attn.qkv.weight[: q.shape[0]], q)
        expected = logits(model, ids).float()
        diff = (logits(ours, ids).float() - expected).abs().max().item()
        # the two half-precision forward passes round differently: a few units in the last place
        assert diff < 0.05 * expected.abs().max().item()
    # upcast on request: exactly HF's fp32 model of the same weights
    ours32, _ = llmcore.load_hf(tmp_path, dtype="float32")
    assert ours32.wte.weight.dtype == torch.float32
    ref32 = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert (logits(ours32, ids) - logits(ref32, ids)).abs().max().item() < 1e-4


def test_tied_parameters_stay_tied(tmp_path):
    llama(tie_word_embeddings=True).save_pretrained(tmp_path)
    ours, cfg = llmcore.load_hf(tmp_path)
    assert cfg.model.tie_embeddings
    assert ours.lm_head.weight is ours.wte.weight


def test_base_model_checkpoint_without_prefix(tmp_path):
    """GPT2Model / LlamaModel checkpoints (no ``transformer.`` / ``model.`` prefix) load too."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=50)
    base = transformers.GPT2Model(cfg).eval()
    base.save_pretrained(tmp_path)
    ours, _ = llmcore.load_hf(tmp_path)
    ids = torch.randint(0, 50, (1, 16))
    with torch.no_grad():
        hidden = base(ids).last_hidden_state
        assert (ours.hidden_states(ids) - hidden).abs().max().item() < 1e-5


# -- bad input -----------------------------------------------------------------------------


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        llmcore.load_hf(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder"):
        llmcore.load_hf(tmp_path / "file")
    with pytest.raises(CheckpointError, match="no config.json"):
        llmcore.load_hf(tmp_path)


def test_config_not_json(saved, tmp_path):
    folder = copy(saved[0], tmp_path / "x")
    (folder / "config.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        llmcore.load_hf(folder)
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        llmcore.load_hf(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"model_type": "bert"}, r"model_type 'bert' is not supported; supported: gpt2, llama"),
        ({"model_type": None}, r"model_type None is not supported"),
        (
            {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 2.0}},
            r"rope type 'longrope' is not supported; supported: default, linear, llama3, yarn",
        ),
        (
            {"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
            r"rope type 'dynamic' is not supported",
        ),
        ({"hidden_act": "gelu"}, r"hidden_act 'gelu' is not supported; supported: silu"),
        ({"num_key_value_heads": 3}, r"num_key_value_heads 3 must divide"),
        ({"hidden_size": "64"}, r"hidden_size: expected int, found '64'"),
        (
            {
                "model_type": "qwen2",
                "use_sliding_window": True,
                "sliding_window": 4,
                "max_window_layers": 1,
                "layer_types": None,
            },
            r"a sliding window on some layers only is not supported",
        ),
    ],
)
def test_unsupported_config(saved, tmp_path, edit, message):
    folder = copy(saved[0], tmp_path / "x")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(edit)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        llmcore.load_hf(folder)


def test_shape_disagreeing_with_config(saved, tmp_path):
    folder = copy(saved[0], tmp_path / "x")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        llmcore.load_hf(folder)
    msg = str(err.value)
    found = re.search(
        r"tensor '(model\.layers\.0\.mlp\.\w+_proj\.weight)' has shape (\(.*?\)), but config.json implies (\(.*?\))",
        msg,
    )
    assert found, msg
    name, got, want = found.groups()
    stored = load_file(saved[0] / "model.safetensors")[name].shape
    assert got == str(tuple(stored)) and want == str(tuple(128 if d == 96 else d for d in stored))


def test_missing_and_unexpected_tensors(saved, tmp_path):
    folder = copy(saved[0], tmp_path / "x")
    state = load_file(folder / "model.safetensors")
    state.pop("model.layers.1.self_attn.k_proj.weight")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing tensor 'model.layers.1.self_attn.k_proj"):
        llmcore.load_hf(folder)
    state = load_file(saved[0] / "model.safetensors")
    state["model.layers.0.extra.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model.layers.0.extra.weight'"):
        llmcore.load_hf(folder)


def test_missing_shard(tmp_path):
    llama().save_pretrained(tmp_path, max_shard_size="30KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shard.name}'.* is missing"):
        llmcore.load_hf(tmp_path)


def test_no_safetensors_weights(saved, tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved[0] / "config.json").read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin; only safetensors"):
        llmcore.load_hf(folder)
    (folder / "pytorch_model.bin").unlink()
    (folder / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        llmcore.load_hf(folder)


def test_bad_dtype(saved):
    with pytest.raises(ConfigError, match="dtype: 'int8' is not one of auto"):
        llmcore.load_hf(saved[0], dtype="int8")


def test_unsupported_tokenizer_json(tmp_path):
    file = tmp_path / "tokenizer.json"
    file.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    with pytest.raises(
        TokenizerError, match=r"model type 'Unigram' is not supported; supported: BPE"
    ):
        llmcore.load_hf_tokenizer(tmp_path)
    file.write_text("{oops")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        llmcore.load_hf_tokenizer(file)
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        llmcore.load_hf_tokenizer(tmp_path / "missing")


def test_weights_in_the_file_dtype_are_the_files_pages(tmp_path):
    """A tensor loaded as stored is a copy-on-write view of the file: training writes to it
    never reach the file, and saving over the very folder it came from keeps it valid."""
    folder = copy_of_saved(tmp_path)
    before = (folder / "model.safetensors").read_bytes()
    ours, _ = llmcore.load_hf(folder)
    ids = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(7))
    want = logits(ours, ids)
    emb = ours.wte.weight
    kept = emb.detach().clone()
    with torch.no_grad():
        emb.add_(1.0)  # an optimizer step, in place
    assert (folder / "model.safetensors").read_bytes() == before
    with torch.no_grad():
        emb.copy_(kept)
    llmcore.hf.save_hf(ours, folder)  # replaces the file the parameters are mapped from
    torch.testing.assert_close(logits(ours, ids), want, rtol=1e-6, atol=1e-6)
    reloaded = load_file(folder / "model.safetensors")
    ref = load_file_bytes(before)
    assert reloaded["model.embed_tokens.weight"].equal(ref["model.embed_tokens.weight"])


def copy_of_saved(tmp_path):
    model = llama()
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def load_file_bytes(data: bytes) -> dict:
    from safetensors.torch import load

    return load(data)

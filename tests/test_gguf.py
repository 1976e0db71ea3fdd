"""GGUF files in: llmcore's load against transformers' GGUF load of the same file.

The files are written here with the gguf package's GGUFWriter from tiny random HF models,
following llama.cpp's converter (names, q/k row permutation, F32 norms), so nothing in them
comes from llmcore's own writer.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import llmcore  # noqa: E402
from llmcore.errors import CheckpointError, ConfigError, TokenizerError  # noqa: E402
from llmcore.tokenizers.bytelevel import to_text  # noqa: E402

T = gguf.GGMLQuantizationType
MERGES = [("t", "h"), ("th", "e"), ("Ġ", "a"), ("i", "n")]


def tokenizer_tokens() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE: 256 bytes, the merged tokens, one special token."""
    tokens = [to_text(bytes([b])) for b in range(256)]
    tokens += [a + b for a, b in MERGES]
    types = [1] * len(tokens)
    tokens.append("<|endoftext|>")
    types.append(3)
    return tokens, types, [f"{a} {b}" for a, b in MERGES]


VOCAB = len(tokenizer_tokens()[0])


def hf_model(arch: str, hidden: int = 256, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=1024, n_embd=hidden, n_layer=2, n_head=4, **kw
        )
        return transformers.GPT2LMHeadModel(cfg).eval()
    cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[arch]
    args = dict(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    args.update(kw)
    return cls[1](cls[0](**args)).eval()


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf ``LlamaModel.permute``."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


LLAMA_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GPT2_NAMES = {
    "transformer.wte": "token_embd",
    "transformer.wpe": "position_embd",
    "transformer.ln_f": "output_norm",
    "lm_head": "output",
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}


def gguf_name(hf: str, arch: str) -> str | None:
    names = GPT2_NAMES if arch == "gpt2" else LLAMA_NAMES
    stem, _, kind = hf.rpartition(".")
    for prefix in ("model.layers.", "transformer.h."):
        if stem.startswith(prefix):
            block, _, rest = stem[len(prefix) :].partition(".")
            return f"blk.{block}.{names[rest]}.{kind}" if rest in names else None
    return f"{names[stem]}.{kind}" if stem in names else None


def random_k_blocks(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """Valid random K-quant blocks with small fp16 scales (gguf cannot quantize them)."""
    size, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows * cols // size, nbytes), dtype=np.uint8)
    if qtype == T.Q6_K:  # d is the last fp16
        blocks[:, -2:] = np.full((len(blocks), 1), 2e-4, np.float16).view(np.uint8)
    else:  # d, dmin are the first two fp16s
        blocks[:, :4] = np.tile(np.array([1e-3, 5e-4], np.float16).view(np.uint8), (len(blocks), 1))
    return blocks.reshape(rows, -1)


def encode(w: np.ndarray, qtype, rng) -> np.ndarray:
    """The uint8 bytes of a float32 matrix in ``qtype``."""
    if qtype == T.F32:
        return w.astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return w.astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        return (torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy()).view(np.uint8)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return random_k_blocks(qtype, *w.shape, rng)
    return gguf.quants.quantize(w.astype(np.float32), qtype)


def write_gguf(model, path, qtype=T.F32, *, version=3, skip=(), extra=None, tensors=None):
    """``model`` (a transformers model) as a GGUF file, llama.cpp's way; ``extra``:
    more metadata (key -> (value, type)); ``tensors``: more F32 tensors, written first."""
    cfg = model.config
    # llama.cpp's converter writes Mistral models as "llama" (MistralForCausalLM is a LlamaModel)
    arch = "llama" if cfg.model_type == "mistral" else cfg.model_type
    w = gguf.GGUFWriter(str(path), arch)
    if arch == "gpt2":
        w.add_context_length(cfg.n_positions)
        w.add_embedding_length(cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(4 * cfg.n_embd)
        w.add_head_count(cfg.n_head)
        w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    else:
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_attention_heads)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
        w.add_rope_freq_base(
            float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"])
        )
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    tokens, types, merges = tokenizer_tokens()
    rows = cfg.vocab_size
    if rows > len(tokens):  # llama.cpp's converter pads the vocabulary to the embedding
        types = types + [5] * (rows - len(tokens))  # UNUSED
        tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), rows)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(VOCAB - 1)
    w.add_bos_token_id(VOCAB - 1)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for key, value in (extra or {}).items():
        w.add_key_value(key, value[0], value[1])
    for name, a in (tensors or {}).items():
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    rng = np.random.default_rng(0)
    for name, t in model.state_dict().items():
        gname = gguf_name(name, arch)
        if gname is None or gname in skip:
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        a = t.float().numpy()
        if arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            a = a.T.copy()
        if arch in ("llama", "mistral") and ".attn_q." in gname:
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        if arch in ("llama", "mistral") and ".attn_k." in gname:
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        matrix = a.ndim == 2 and not gname.endswith("_norm.weight")
        kind = qtype if matrix else T.F32
        w.add_tensor(gname, encode(np.ascontiguousarray(a), kind, rng), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", version))
    return path


def transformers_gguf(path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()


IDS = torch.tensor([[5, 17, 256, 99, 3, 200, 258, 42, 7, 1]])


def assert_same_logits(ours, ref, ids=IDS):
    with torch.no_grad():
        got = ours(ids)
        got = got[0] if isinstance(got, tuple) else got
        want = ref(ids).logits
    scale = want.abs().max()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(scale))


QTYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_llama_every_tensor_type_matches_transformers(tmp_path, qtype):
    path = write_gguf(hf_model("llama"), tmp_path / "m.gguf", qtype)
    loaded = llmcore.load(path)
    assert_same_logits(loaded.model, transformers_gguf(path))


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "gpt2"])
def test_other_architectures_match_transformers(tmp_path, arch):
    path = write_gguf(hf_model(arch), tmp_path / "m.gguf", T.Q8_0)
    assert_same_logits(llmcore.load(path).model, transformers_gguf(path))


def test_tied_output_and_version_2(tmp_path):
    path = write_gguf(hf_model("llama", tie_word_embeddings=True), tmp_path / "m.gguf", version=2)
    loaded = llmcore.load(path)
    assert loaded.config.model.tie_embeddings
    assert_same_logits(loaded.model, transformers_gguf(path))


def test_greedy_tokens_match_transformers(tmp_path):
    path = write_gguf(hf_model("llama"), tmp_path / "m.gguf", T.Q4_K)
    ours, ref = llmcore.load(path).model, transformers_gguf(path)
    ids = IDS.clone()
    with torch.no_grad():
        want = ref.generate(ids, max_new_tokens=32, do_sample=False, pad_token_id=0)[
            0, ids.shape[1] :
        ]
        for _ in range(32):
            logits = ours(ids)
            logits = logits[0] if isinstance(logits, tuple) else logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert ids[0, IDS.shape[1] :].tolist() == want.tolist()


def test_dequantized_into_bfloat16(tmp_path):
    path = write_gguf(hf_model("llama"), tmp_path / "m.gguf", T.Q8_0)
    loaded = llmcore.load(path, dtype="bfloat16")
    ref = dict(llmcore.load(path).model.named_parameters())
    for name, p in loaded.model.named_parameters():
        assert p.dtype == torch.bfloat16
        torch.testing.assert_close(p, ref[name].to(torch.bfloat16), rtol=0, atol=0)


def test_tokenizer_template_and_stop_ids(tmp_path):
    path = write_gguf(hf_model("llama"), tmp_path / "m.gguf")
    loaded = llmcore.load(path)
    tokens, _, _ = tokenizer_tokens()
    assert loaded.tokenizer.encode("the in") == [
        tokens.index("the"),
        tokens.index("Ġ"),
        tokens.index("in"),
    ]
    assert loaded.tokenizer.encode("<|endoftext|>", allowed_special="all") == [len(tokens) - 1]
    assert loaded.chat_template.startswith("{% for m in messages %}")
    assert loaded.stop_ids == (len(tokens) - 1,)


# ---- bad input -------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    return write_gguf(hf_model("llama", hidden=64), tmp_path / "m.gguf")


def test_truncated_file(good):
    data = good.read_bytes()
    for cut in (len(data) - 100, 200, 10):
        good.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"m\.gguf: truncated GGUF file"):
            llmcore.load(good)


def test_wrong_magic_and_version(good):
    data = bytearray(good.read_bytes())
    good.write_bytes(b"GGML" + bytes(data[4:]))
    with pytest.raises(CheckpointError, match="not a GGUF file: magic"):
        llmcore.gguf.load_gguf(good)
    data[4:8] = struct.pack("<I", 7)
    good.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="GGUF version 7 is not supported; supported: 2, 3"):
        llmcore.load(good)


def test_unknown_tensor_type(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 18), np.uint8), raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"tensor 'token_embd.weight' has GGML type 20"):
        llmcore.load(tmp_path / "m.gguf")


def test_unsupported_architecture_lists_the_supported(good, tmp_path):
    path = write_gguf(hf_model("llama", hidden=64), tmp_path / "x.gguf")
    data = path.read_bytes().replace(b"llama", b"llamb")
    path.write_bytes(data)
    with pytest.raises(
        ConfigError, match=r"'llamb' is not supported; supported: gpt2, llama, mistral, qwen2"
    ):
        llmcore.load(path)


def test_missing_tensor(tmp_path):
    path = write_gguf(
        hf_model("llama", hidden=64), tmp_path / "m.gguf", skip=("blk.1.ffn_up.weight",)
    )
    with pytest.raises(CheckpointError, match=r"m\.gguf: missing tensor 'blk.1.ffn_up.weight'"):
        llmcore.load(path)


def test_metadata_of_the_wrong_type(tmp_path):
    path = write_gguf(
        hf_model("llama", hidden=64),
        tmp_path / "m.gguf",
        extra={"llama.rope.scaling.type": (7, gguf.GGUFValueType.UINT32)},
    )
    with pytest.raises(
        ConfigError, match=r"m\.gguf: metadata 'llama.rope.scaling.type' is a uint32"
    ):
        llmcore.load(path)


def test_unknown_pre_tokenizer_is_named(tmp_path):
    path = write_gguf(hf_model("llama", hidden=64), tmp_path / "m.gguf")
    path.write_bytes(path.read_bytes().replace(b"default", b"nosuchp"))
    with pytest.raises(
        TokenizerError,
        match=r"unknown pre-tokenizer 'nosuchp' \(tokenizer.ggml.pre\); known: default",
    ):
        llmcore.load(path)

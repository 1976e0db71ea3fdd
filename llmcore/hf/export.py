"""Write an llmcore Transformer as a Hugging Face checkpoint folder.

``config.json`` + ``model.safetensors`` (+ tokenizer files when the tokenizer can be
expressed), loadable with ``AutoModelForCausalLM.from_pretrained`` and run unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llmcore.errors import CheckpointError, ConfigError
from llmcore.hf import archs
from llmcore.hf.loading import CONFIG_FILE, WEIGHTS_FILE
from llmcore.hf.tensors import tensor_map

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

#: Attention plugins that compute plain ``softmax(q k^T * scale) v``, as every exported
#: architecture does. Position, norm and MLP are matched to an architecture in ``archs``.
PLAIN_ATTENTION = ("sdpa", "native", "math")


def check_attention(model: torch.nn.Module) -> None:
    """ConfigError naming the field when ``model``'s attention is not plain softmax attention:
    written as GPT-2 or Llama anyway, it would load in transformers and compute another model."""
    name = model.config.attention.name
    if name not in PLAIN_ATTENTION:
        raise ConfigError(
            f"cannot export to Hugging Face: model.attention={name!r} is not plain softmax "
            f"attention, which the exported architectures compute (exportable: "
            f"{', '.join(PLAIN_ATTENTION)})"
        )


def hf_state_dict(model: torch.nn.Module, h: dict[str, Any], dtype: torch.dtype) -> dict:
    """HF tensor name -> tensor, for the normalized HF config ``h`` of ``model``.

    HF biases that the llmcore model does not have are written as zeros (the same function);
    an llmcore parameter HF has no place for must be all zeros, or this raises ConfigError.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for t in tensor_map(h):
        p = params.get(t.ours)
        if p is None:  # a bias llmcore's config leaves out: zeros of the weight's row count
            weight = params[t.ours.rsplit(".", 1)[0] + ".weight"]
            rows = t.rows or (0, weight.shape[0])
            out[t.hf] = torch.zeros(rows[1] - rows[0], dtype=dtype)
            continue
        used.add(t.ours)
        tensor = p.detach() if t.rows is None else p.detach()[t.rows[0] : t.rows[1]]
        if t.transpose:
            tensor = tensor.T
        # clone: slices of the fused qkv share storage, which safetensors refuses
        out[t.hf] = tensor.to(device="cpu", dtype=dtype).contiguous().clone()
    for name, p in params.items():
        if name in used or (name == "lm_head.weight" and h["tie_word_embeddings"]):
            continue
        if torch.count_nonzero(p.detach()):
            raise ConfigError(
                f"cannot export to {h['model_type']}: llmcore parameter {name!r} is nonzero "
                "but the Hugging Face architecture has no such tensor"
            )
    return out


def save_hf(
    model: torch.nn.Module,
    out_dir: str | Path,
    tokenizer: Any = None,
    *,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Write ``model`` (and ``tokenizer``, if it can be expressed) as an HF checkpoint.

    Args:
        model: an llmcore Transformer of a supported architecture (see ``llmcore.hf.archs``).
        out_dir: the folder to write (created; existing files of the same names are replaced).
        tokenizer: an llmcore tokenizer, or None.
        dtype: the dtype of the written weights; None keeps the model's.

    Returns:
        Notes for the user, e.g. why a tokenizer could not be exported (empty when all went).
    """
    from llmcore.tokenizers import save_hf_tokenizer

    out = Path(out_dir)
    weights = next(model.parameters())
    dtype = dtype or weights.dtype
    if dtype not in DTYPE_NAMES:
        raise ConfigError(
            f"dtype: {dtype} cannot be exported; use one of {list(DTYPE_NAMES.values())}"
        )
    check_attention(model)
    eot = getattr(tokenizer, "eot_id", None) if tokenizer is not None else None
    raw = archs.hf_config(model, bos_id=eot, eos_id=eot)
    raw["torch_dtype"] = DTYPE_NAMES[dtype]
    h = archs.normalize(raw, "exported config")
    state = hf_state_dict(model, h, dtype)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # written aside, then renamed over: a model loaded from this very file has its pages
        # mapped, and truncating the file in place would pull them from under it
        part = out / (WEIGHTS_FILE + ".part")
        save_file(state, str(part), metadata={"format": "pt"})
        os.replace(part, out / WEIGHTS_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        (out / "generation_config.json").write_text(
            json.dumps({"bos_token_id": eot, "eos_token_id": eot}, indent=2) + "\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot write the Hugging Face checkpoint: {exc}") from None
    notes = []
    if tokenizer is not None:
        note = save_hf_tokenizer(tokenizer, out)
        if note:
            notes.append(note)
    return notes

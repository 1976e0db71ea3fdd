"""GGUF files (llama.cpp, ollama): read them into llmcore, write llmcore models out as them.

    loaded = llmcore.load("model.gguf", dtype="bfloat16")   # or llmcore.gguf.load_gguf
    llmcore.gguf.save_gguf(model, tokenizer, "out.gguf", qtype="q8_0")

Architectures: gpt2, llama (SmolLM, TinyLlama...), mistral, qwen2. Tensor types: F32, F16,
BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, dequantized on load (kept as they
are with ``quantized=True``, see :mod:`llmcore.quant`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config, check_consistency
from llmcore.errors import CheckpointError
from llmcore.gguf import archs, tokenizer
from llmcore.gguf.reader import GGUFFile
from llmcore.gguf.tensors import load_weights
from llmcore.hf.archs import model_config


def load_gguf(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    *,
    device: torch.device | str = "cpu",
    quantized: bool = False,
):
    """Load a ``.gguf`` file: model (eval mode), tokenizer, config, chat template, stop ids.

    Args:
        path: the file.
        dtype: None (float32), ``"auto"`` (bfloat16 for a file of BF16 weights, else
            float32), a name or a ``torch.dtype``; quantized weights are dequantized into it.
        device: where the parameters end up.
        quantized: keep the matrices stored in a quantized format as they are in the file
            (inference only, on the CPU; see :mod:`llmcore.quant.from_gguf`) instead of
            dequantizing them into ``dtype``.

    Returns:
        a :class:`~llmcore.checkpoint.LoadedCheckpoint` (``step`` 0).

    Raises:
        CheckpointError: not a GGUF file, wrong version, truncated, a tensor of an unknown
            type, missing or unexpected tensors.
        ConfigError: an unsupported architecture (the error lists those supported) or
            metadata of the wrong type.
        TokenizerError: no usable tokenizer in the metadata.
    """
    from llmcore.checkpoint import LoadedCheckpoint
    from llmcore.hf.loading import build_empty
    from llmcore.hf.loading import resolve_dtype as _named_dtype

    file = Path(path)
    with GGUFFile(file) as f:
        h = archs.normalized(f)
        cfg = Config(model=model_config(h))
        check_consistency(cfg, str(file))
        tok = tokenizer.load_tokenizer(f)
        if tok.vocab_size > cfg.model.vocab_size:
            raise CheckpointError(
                f"{file}: the tokenizer has {tok.vocab_size} ids but token_embd.weight only "
                f"{cfg.model.vocab_size} rows"
            )
        if dtype == "auto":
            types = {i.type for i in f.tensors.values()}
            want = torch.bfloat16 if "BF16" in types else torch.float32
        else:
            want = _named_dtype(dtype, {})
        model = build_empty(cfg.model, want, device)
        skip: set[str] = set()
        if quantized:
            from llmcore.quant.from_gguf import keep_quantized

            if torch.device(device).type != "cpu":
                raise CheckpointError(
                    f"{file}: quantized=True runs on the CPU only; load it with "
                    f"quantized=False to use {device}"
                )
            skip = keep_quantized(model, f, h)
        load_weights(model, f, h, skip)
        if quantized:  # inference only: the norms need no gradient either
            model.requires_grad_(False)
        template, stops = tokenizer.chat_template(f), tokenizer.stop_ids(f)
    return LoadedCheckpoint(file, cfg, model.eval(), tok, 0, template, stops)


def save_gguf(*args, **kwargs):
    """Write an llmcore model and tokenizer as a GGUF file (see :mod:`llmcore.gguf.writer`)."""
    from llmcore.gguf.writer import save_gguf as _save

    return _save(*args, **kwargs)


__all__ = ["GGUFFile", "load_gguf", "save_gguf"]

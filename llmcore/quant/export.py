"""``llmcore quantize``: a model as a quantized GGUF file, with llama.cpp's choice of types.

llama.cpp's ``llama-quantize`` keeps norms and biases in f32, quantizes the matrices to the
chosen type, and gives the output matrix (the token embedding, when the two are tied) more
bits: Q6_K, or Q8_0 when its rows do not split into 256-value blocks. llmcore has no Q6_K
quantizer, so that matrix is always Q8_0 here. A matrix whose rows do not split into the
chosen type's blocks falls back as llama.cpp's does (q4_k -> q5_0), then to f16. An untied
token embedding gets the chosen type, as in llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmcore.errors import CheckpointError, ConfigError

TYPES = ("q8_0", "q4_0", "q4_k")
#: llama.cpp's replacement for a type whose blocks do not fit a row
FALLBACK = {"q4_k": "q5_0"}
#: the type of the output matrix (and of a tied token embedding)
OUTPUT_TYPE = "q8_0"


def tensor_type(tied: bool):
    """The ``tensor_type`` policy of :func:`llmcore.gguf.writer.save_gguf` for a model whose
    embedding is (or is not) tied to its output."""
    from llmcore.ops import quant

    def choose(name: str, shape: tuple[int, ...], qtype: str) -> str:
        if len(shape) != 2 or name.endswith("_norm.weight"):
            return "f32"
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            qtype = OUTPUT_TYPE
        for t in (qtype, FALLBACK.get(qtype)):
            if t is not None and shape[-1] % quant.quant_type(t).block_size == 0:
                return t
        return "f16"

    return choose


def quantize_model(source: str | Path, qtype: str, out: str | Path) -> Path:
    """Load ``source`` (anything :func:`llmcore.load` takes) and write it to ``out`` as a
    GGUF file of ``qtype`` (one of :data:`TYPES`). The file is written aside and renamed, so
    a failure leaves nothing under ``out``."""
    from llmcore.gguf import save_gguf
    from llmcore.loading import load

    if qtype not in TYPES:
        raise ConfigError(f"quantize: --type {qtype!r} is not one of {', '.join(TYPES)}")
    out = Path(out)
    loaded = load(source)
    tied = loaded.model.config.tie_embeddings
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        save_gguf(
            loaded.model,
            loaded.tokenizer,
            tmp,
            qtype,
            name=out.stem,
            chat_template=loaded.chat_template,
            tensor_type=tensor_type(tied),
        )
        os.replace(tmp, out)
    except OSError as exc:
        raise CheckpointError(f"{out}: writing failed ({exc}); nothing was changed") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out

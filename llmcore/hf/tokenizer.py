"""Hugging Face ``tokenizer.json`` <-> llmcore tokenizers.

Reading: a byte-level BPE ``tokenizer.json`` (GPT-2, Llama 3, Qwen2 style) goes to the
``bpe`` plugin; a character vocabulary written by :func:`save_hf_tokenizer` (a BPE model with
no merges, no pre-tokenizer and a ``Fuse`` decoder) comes back as the ``char`` tokenizer.
Writing: ``char`` tokenizers as that character vocabulary; ``bpe`` tokenizers through their
own ``to_hf_json`` writer when they have one, else from their byte ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmcore import plugins
from llmcore.errors import TokenizerError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SUPPORTED_MODELS = ("BPE",)


def _read(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{file}: no such tokenizer file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TokenizerError(f"{file}: not a valid tokenizer.json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(f"{file}: not a Hugging Face tokenizer.json (no 'model' object)")
    return data


def _is_char_vocab(data: dict[str, Any]) -> bool:
    model = data["model"]
    decoder = data.get("decoder") or {}
    return (
        model.get("type", "BPE") == "BPE"
        and not model.get("merges")
        and data.get("pre_tokenizer") is None
        and decoder.get("type") == "Fuse"
        and all(len(k) == 1 for k in model.get("vocab", {}))
    )


def load_hf_tokenizer(path: str | Path) -> Any:
    """The llmcore tokenizer of an HF folder (or of a ``tokenizer.json`` file itself).

    Raises:
        TokenizerError: no tokenizer.json, not JSON, or a model type other than BPE.
    """
    p = Path(path)
    file = p / TOKENIZER_FILE if p.is_dir() else p
    data = _read(file)
    kind = data["model"].get("type", "BPE")  # old files (GPT-2's) leave it out
    if kind not in SUPPORTED_MODELS:
        raise TokenizerError(
            f"{file}: tokenizer model type {kind!r} is not supported; supported: {', '.join(SUPPORTED_MODELS)} (byte-level)"
        )
    if _is_char_vocab(data):
        vocab = data["model"]["vocab"]
        chars = sorted(vocab, key=vocab.__getitem__)
        if [vocab[c] for c in chars] != list(range(len(chars))):
            raise TokenizerError(f"{file}: character vocabulary ids are not 0..{len(chars) - 1}")
        return plugins.factory("tokenizer", "char")(chars)
    from llmcore.tokenizers import load_tokenizer

    return load_tokenizer(file)


def char_tokenizer_json(chars: list[str]) -> dict[str, Any]:
    """A tokenizer.json that maps each character to its index and decodes by concatenation."""
    from llmcore.hf.bytelevel import tokenizer_json

    return tokenizer_json({c: i for i, c in enumerate(chars)}, [], decoder={"type": "Fuse"})


def save_hf_tokenizer(tokenizer: Any, out_dir: str | Path) -> str | None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for transformers' ``AutoTokenizer``.

    Returns None when written, else a sentence saying why this tokenizer cannot be exported
    (the model weights are still usable with another tokenizer).
    """
    out = Path(out_dir)
    name = getattr(tokenizer, "name", type(tokenizer).__name__)
    if name == "char" and hasattr(tokenizer, "chars"):
        data = char_tokenizer_json(list(tokenizer.chars))
    elif hasattr(tokenizer, "to_hf_json"):
        data = tokenizer.to_hf_json()
        if isinstance(data, str):
            data = json.loads(data)
    else:
        from llmcore.hf.bytelevel import bpe_tokenizer_json

        data = bpe_tokenizer_json(tokenizer)
        if data is None:
            return (
                f"the {name!r} tokenizer cannot be written as a Hugging Face tokenizer.json "
                "(it exposes no byte ranks); only the model was exported"
            )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(1e30),
        "clean_up_tokenization_spaces": False,
    }
    eot = getattr(tokenizer, "eot_id", None)
    if eot is not None:
        token = next((t for t, i in tokenizer.special_tokens.items() if i == eot), None)
        if token is not None:
            config.update(bos_token=token, eos_token=token)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / TOKENIZER_FILE).write_text(
            json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        (out / TOKENIZER_CONFIG_FILE).write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise TokenizerError(f"{out}: cannot write the tokenizer: {exc}") from None
    return None

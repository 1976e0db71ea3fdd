"""``llmcore convert``: Hugging Face checkpoint folders <-> llmcore runs; any model -> GGUF.

    llmcore convert --from-hf HF_DIR --out RUN_DIR [--dtype bfloat16] [--tokenizer PATH]
    llmcore convert --to-hf RUN_OR_CHECKPOINT --out HF_DIR [--dtype bfloat16]
    llmcore convert RUN_HF_DIR_OR_GGUF --to-gguf OUT.gguf [--type f16|q8_0|q4_0]

``--from-hf`` writes a run folder (config.yaml, ckpt/00000000/, ckpt/latest) that
``llmcore generate`` and ``llmcore.load_checkpoint`` read; ``--to-hf`` writes config.json,
model.safetensors and, when the tokenizer can be expressed, tokenizer.json. An existing
``--out`` is refused unless ``--force``; on any failure nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DTYPE_CHOICES = ("float32", "bfloat16", "float16")
GGUF_TYPES = ("f16", "q8_0", "q4_0")


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert between Hugging Face checkpoint folders and llmcore runs"
    )
    p.add_argument("source", nargs="?", help="with --to-gguf: the run, HF folder or GGUF file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--from-hf", metavar="HF_DIR", help="a Hugging Face checkpoint folder (or a GGUF file)"
    )
    src.add_argument("--to-hf", metavar="RUN", help="an llmcore run or checkpoint folder")
    src.add_argument("--to-gguf", metavar="OUT", help="write SOURCE as this GGUF file")
    p.add_argument(
        "--type", choices=GGUF_TYPES, default="f16", help="with --to-gguf: the weights' type"
    )
    p.add_argument("--out", help="the folder to write (--from-hf, --to-hf)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=None, help="dtype of the written weights"
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="with --from-hf: a tokenizer (file or folder) when HF_DIR has no tokenizer.json",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.cli.output import check_free
    from llmcore.errors import CheckpointError

    if args.to_gguf is not None:
        return _to_gguf(args)
    if args.out is None or args.source is not None:
        raise CheckpointError("convert: --from-hf and --to-hf take --out DIR and no SOURCE")
    check_free(Path(args.out), force=args.force, error=CheckpointError)  # before any loading
    if args.from_hf is not None:
        return _from_hf(args)
    return _to_hf(args)


def _from_hf(args: argparse.Namespace) -> int:
    from llmcore.checkpoint import save_checkpoint
    from llmcore.cli.output import replacing
    from llmcore.config import TokenizerConfig, dump_yaml
    from llmcore.errors import CheckpointError
    from llmcore.hf import TOKENIZER_FILE, load_hf, load_hf_tokenizer
    from llmcore.loading import load, source_kind
    from llmcore.tokenizers import load_tokenizer

    src, out = Path(args.from_hf), Path(args.out)
    if source_kind(src) == "gguf":  # a GGUF file carries its tokenizer
        loaded = load(src, dtype=args.dtype)
        model, cfg, tokenizer = loaded.model, loaded.config, loaded.tokenizer
    else:
        model, cfg = load_hf(src, dtype=args.dtype)
        tokenizer = None
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer)
    elif tokenizer is None and (src / TOKENIZER_FILE).exists():
        tokenizer = load_hf_tokenizer(src)
    elif tokenizer is None:
        raise CheckpointError(
            f"{src}: no {TOKENIZER_FILE}; an llmcore run needs a tokenizer: pass --tokenizer PATH"
        )
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise CheckpointError(
            f"{src}: the tokenizer has {tokenizer.vocab_size} ids but the model only {cfg.model.vocab_size}"
        )
    cfg.tokenizer = TokenizerConfig(getattr(tokenizer, "name", "bpe"))
    cfg.train.name = out.name
    if args.dtype == "bfloat16":
        cfg.train.dtype = "bfloat16"
    with replacing(out, force=args.force, error=CheckpointError) as tmp:
        (tmp / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        ckpt = out / "ckpt" / save_checkpoint(tmp, 0, model, cfg, tokenizer).name
    print(f"wrote {ckpt} ({cfg.model.n_layer} layers, {model.num_params() / 1e6:.2f}M params)")
    return 0


def _to_hf(args: argparse.Namespace) -> int:
    from llmcore.cli.output import replacing
    from llmcore.errors import CheckpointError
    from llmcore.hf import save_hf
    from llmcore.hf.loading import DTYPES
    from llmcore.loading import load

    loaded = load(args.to_hf)
    dtype = DTYPES[args.dtype] if args.dtype else None
    with replacing(args.out, force=args.force, error=CheckpointError) as tmp:
        notes = save_hf(loaded.model, tmp, loaded.tokenizer, dtype=dtype)
    for note in notes:
        print(f"llmcore: note: {note}", file=sys.stderr)
    print(f"wrote {args.out} from {loaded.path}")
    return 0


def _to_gguf(args: argparse.Namespace) -> int:
    import os

    from llmcore.cli.output import check_free
    from llmcore.errors import CheckpointError
    from llmcore.gguf import save_gguf
    from llmcore.loading import load

    if args.source is None or args.out is not None:
        raise CheckpointError("convert: --to-gguf OUT takes a SOURCE (run, HF folder or GGUF file)")
    out = Path(args.to_gguf)
    check_free(out, force=args.force, error=CheckpointError)  # before any loading
    loaded = load(args.source)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:  # written aside, then renamed: a failed write leaves no half file under the name
        save_gguf(
            loaded.model,
            loaded.tokenizer,
            tmp,
            args.type,
            name=out.stem,
            chat_template=loaded.chat_template,
        )
        os.replace(tmp, out)
    except OSError as exc:
        raise CheckpointError(f"{out}: writing failed ({exc}); nothing was changed") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({args.type}) from {loaded.path}")
    return 0

"""``llmcore train [CONFIG_FILE] [--preset NAME] [--set key=value ...] [--out DIR] [--resume DIR]``."""

from __future__ import annotations

import argparse

from llmcore.cli.options import add_set_option


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (default: the shakespeare-char preset)")
    p.add_argument("config", nargs="?", help="config file (YAML, TOML or JSON)")
    p.add_argument("--preset", help="a shipped preset; a config file given too is laid over it")
    add_set_option(p, "train.max_iters=100")
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run (or checkpoint) in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.config import load_config

    resume = args.resume
    if resume:  # resolved once, so a fallback from a broken checkpoint is reported once
        from llmcore.checkpoint import CONFIG_FILE, resolve_checkpoint

        resume = resolve_checkpoint(resume, resumable=True)
    if resume and not args.config and not args.preset:
        cfg = load_config(resume / CONFIG_FILE, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides, preset=args.preset)
        if args.config is None and args.preset:
            cfg.source = args.preset
    import sys

    from llmcore.train import Trainer
    from llmcore.train.signals import TrainingInterrupted

    trainer = Trainer(cfg, out_dir=args.out, resume=resume, progress=not args.no_progress)
    try:
        run_dir = trainer.run()
    except TrainingInterrupted as exc:
        print(f"llmcore: {exc}", file=sys.stderr)
        return exc.exit_code
    if not trainer.env.is_main:
        return 0
    print(f"run written to {run_dir}")
    if cfg.train.sample_tokens > 0:
        _print_sample(cfg, trainer, run_dir)
    return 0


def _print_sample(cfg, trainer, run_dir) -> None:
    """A sample of ``train.sample_tokens`` tokens from the trained model, with the configured
    samplers (a top-k larger than the vocabulary is clamped to it). Past ``block_size`` it
    conditions on the last ``block_size`` tokens, as ``llmcore generate`` does.

    After an FSDP run this rank holds only its shard of the weights (and the process group
    is gone): the sample comes from the last checkpoint, which holds them all."""
    from llmcore.components import build_sampler
    from llmcore.generation import generate

    model = trainer.model
    if trainer.env.mode == "fsdp" and trainer.env.enabled:
        from llmcore.loading import load

        model = load(run_dir, device=trainer.device).model

    vocab = trainer.tokenizer.vocab_size
    for comp in cfg.generate.samplers:
        if comp.name == "top_k" and int(comp.params.get("k", 0)) > vocab:
            comp.params["k"] = vocab
    samplers, decoder = build_sampler(cfg)
    out = generate(
        model,
        trainer.tokenizer,
        cfg.generate.prompt,
        max_new_tokens=cfg.train.sample_tokens,
        samplers=samplers,
        decoder=decoder,
        seed=cfg.generate.seed,
        sliding_context=True,
    )
    print("sample:\n" + cfg.generate.prompt + out[0].text)

"""A tiny model served on a free 127.0.0.1 port for the server tests."""

from __future__ import annotations

import contextlib
import socket

import torch

from llmcore import build_model
from llmcore.builtin.char_tokenizer import CharTokenizer
from llmcore.config import load_config

ALPHABET = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.:!?\n"))


def tiny_model(vocab_size: int, *, block_size: int = 64, seed: int = 0, tied: bool = True):
    """A 2-layer model with random weights spread wide enough that greedy choices are clear."""
    shape = [
        "model.n_layer=2",
        "model.n_embd=32",
        "model.n_head=2",
        f"model.block_size={block_size}",
    ]
    cfg = load_config("shakespeare-char", [*shape, f"model.tie_embeddings={str(tied).lower()}"])
    cfg.model.init_std = 0.4
    torch.manual_seed(seed)
    return build_model(cfg, vocab_size=vocab_size).eval(), cfg


def char_served(name: str = "tiny"):
    from llmcore.serve import Served

    tok = CharTokenizer(ALPHABET)
    model, cfg = tiny_model(tok.vocab_size)
    return Served(name, model, tok, cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(served, **kw):
    """Serve ``served`` on a free port in a thread; yield the base URL; always stop."""
    from llmcore.serve.app import Running
    from llmcore.serve.engine import Engine

    server_kw = {k: kw.pop(k) for k in ("api_key", "max_body") if k in kw}
    engine = Engine(served, **kw).start()
    running = Running(engine, "127.0.0.1", free_port(), **server_kw).start()
    try:
        yield running.url, engine
    finally:
        running.stop()


def bigram_model(vocab_size: int, follows: dict[int, int]):
    """A model whose greedy choice after token ``t`` is ``follows[t]``: the blocks add
    nothing to the residual stream, positions are zero, and each head row ``v`` is the
    final-norm state of the tokens that ``v`` follows."""
    model, cfg = tiny_model(vocab_size, tied=False)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("attn.proj", "mlp.proj", "mlp.down")):
                module.weight.zero_()
        model.position.wpe.weight.zero_()
        model.lm_head.weight.zero_()
        for t, v in follows.items():
            h = model.hidden_states(torch.tensor([[t]]))[0, 0]  # (C,): only token t's embedding
            model.lm_head.weight[v] += h
    return model, cfg

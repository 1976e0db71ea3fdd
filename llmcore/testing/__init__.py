"""Conformance checks for plugin authors.

Call these from your plugin's tests to check that a component meets its contract in
:mod:`llmcore.contracts`; each raises :class:`ConformanceError` (an AssertionError) saying
what is wrong::

    from llmcore.testing import check_component

    def test_my_norm():
        check_component("norm", ScaleNorm)
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcore.contracts import COMPONENT_KINDS
from llmcore.testing.attention import check_attention  # noqa: F401  (in _CHECKS, re-exported)
from llmcore.testing.base import ConformanceError, _require


def check_norm(factory: Callable[..., Any], dim: int = 16, **params: Any) -> None:
    """A norm is an nn.Module mapping ``(..., dim)`` to the same shape, with gradients."""
    norm = factory(dim, bias=False, **params)
    _require(
        isinstance(norm, nn.Module),
        f"norm factory returned {type(norm).__name__}, not an nn.Module",
    )
    x = torch.randn(2, 5, dim, requires_grad=True)
    y = norm(x)
    _require(y.shape == x.shape, f"norm changed the shape {tuple(x.shape)} -> {tuple(y.shape)}")
    _require(bool(torch.isfinite(y).all()), "norm produced non-finite values")
    y.sum().backward()
    _require(x.grad is not None, "norm output has no gradient path to its input")


def check_mlp(factory: Callable[..., Any], dim: int = 16, **params: Any) -> None:
    """An MLP maps ``(B, T, dim)`` to the same shape and accepts ``hidden_dim``."""
    for hidden in (None, 24):
        mlp = factory(dim, hidden_dim=hidden, bias=True, **params)
        _require(
            isinstance(mlp, nn.Module),
            f"mlp factory returned {type(mlp).__name__}, not an nn.Module",
        )
        x = torch.randn(2, 3, dim)
        y = mlp(x)
        _require(y.shape == x.shape, f"mlp changed the shape {tuple(x.shape)} -> {tuple(y.shape)}")


def check_position(
    factory: Callable[..., Any], dim: int = 16, head_dim: int = 8, **params: Any
) -> None:
    """A position module has ``embed`` and ``rotate`` that keep shapes, and an optional
    ``score_bias`` gives a finite float bias broadcastable to ``(B, H, Tq, Tk)``."""
    pos = factory(dim=dim, head_dim=head_dim, max_seq_len=32, **params)
    positions = torch.arange(5)
    x = torch.randn(2, 5, dim)
    _require(pos.embed(x, positions).shape == x.shape, "position.embed changed the shape")
    q, k = torch.randn(2, 4, 5, head_dim), torch.randn(2, 2, 5, head_dim)
    q2, k2 = pos.rotate(q, k, positions)
    _require(q2.shape == q.shape and k2.shape == k.shape, "position.rotate changed a shape")
    if callable(getattr(pos, "score_bias", None)):  # optional: a bias on the attention scores
        rows = torch.stack((positions, positions + 3))  # (B=2, T) per-row positions
        bias = pos.score_bias(4, rows, rows)
        _require(
            isinstance(bias, torch.Tensor) and bias.is_floating_point(),
            f"position.score_bias must return a float tensor, got {getattr(bias, 'dtype', bias)}",
        )
        try:
            fits = torch.broadcast_shapes(bias.shape, (2, 4, 5, 5)) == (2, 4, 5, 5)
        except RuntimeError:
            fits = False
        _require(
            fits,
            f"position.score_bias gave {tuple(bias.shape)}, not broadcastable to "
            "(B, H, Tq, Tk) = (2, 4, 5, 5)",
        )
        _require(bool(torch.isfinite(bias).all()), "position.score_bias produced non-finite values")


def check_sampler(factory: Callable[..., Any], vocab: int = 50, **params: Any) -> None:
    """A logits processor keeps ``(B, V)``, never turns a token into NaN and never revives a
    token that was already ``-inf``."""
    proc = factory(**params)
    torch.manual_seed(0)
    ids = torch.randint(0, vocab, (3, 6))
    logits = torch.randn(3, vocab)
    logits[0, :5] = float("-inf")
    out = proc(ids, logits.clone())
    _require(
        isinstance(out, torch.Tensor) and out.shape == logits.shape,
        f"sampler must return a (B, V) tensor, got {getattr(out, 'shape', type(out))}",
    )
    _require(not bool(torch.isnan(out).any()), "sampler produced NaN")
    _require(
        bool(torch.isinf(out[0, :5]).all() and (out[0, :5] < 0).all()),
        "sampler revived a -inf token",
    )
    _require(bool(torch.isfinite(out).any(dim=-1).all()), "sampler removed every token of a row")


def check_decoder(factory: Callable[..., Any], vocab: int = 50, **params: Any) -> None:
    """A step decoder returns ``(B,)`` long ids of tokens that are not ``-inf``; a search
    decoder (``runs_search = True``) returns at most ``max_new_tokens`` ids in the vocabulary,
    without the stop id, and a float score or None, for a small model."""
    dec = factory(**params)
    if getattr(dec, "runs_search", False) is True:
        _check_search_decoder(dec, vocab)
        return
    logits = torch.randn(4, vocab)
    logits[:, ::2] = float("-inf")
    ids = dec(logits, torch.Generator().manual_seed(0))
    _require(
        ids.shape == (4,) and ids.dtype == torch.long,
        f"decoder must return (B,) long ids, got {ids.shape} {ids.dtype}",
    )
    _require(bool((ids % 2 == 1).all()), "decoder chose a token whose score was -inf")


def _check_search_decoder(dec: Any, vocab: int) -> None:
    from llmcore.config import ModelConfig
    from llmcore.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = build_model(cfg).eval()
    with torch.inference_mode():
        ids, score = dec.search(
            model,
            [1, 2, 3],
            max_new_tokens=5,
            samplers=[],
            stop_ids={0},
            generator=torch.Generator().manual_seed(0),
        )
    ids = list(ids)
    _require(len(ids) <= 5, f"search returned {len(ids)} ids for max_new_tokens=5")
    _require(
        all(isinstance(i, int) and 0 <= i < vocab for i in ids),
        f"search must return ids in [0, {vocab}), got {ids}",
    )
    _require(0 not in ids, "search returned the stop id (it ends the answer, unreturned)")
    _require(score is None or isinstance(score, float), f"score must be a float or None: {score!r}")


def check_optimizer(factory: Callable[..., Any], **params: Any) -> None:
    """An optimizer built from named params lowers a simple quadratic loss."""
    model = nn.Linear(4, 1)
    opt = factory(list(model.named_parameters()), **params)
    _require(
        isinstance(opt, torch.optim.Optimizer),
        "optimizer factory must return a torch.optim.Optimizer",
    )
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(20):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    _require(
        loss.item() < first, f"optimizer did not lower the loss ({first:.4f} -> {loss.item():.4f})"
    )


def check_schedule(factory: Callable[..., Any], **params: Any) -> None:
    """A schedule is an LRScheduler that keeps the learning rate finite and non-negative."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = factory(opt, **params)
    for _ in range(50):
        opt.step()
        sched.step()
        lr = opt.param_groups[0]["lr"]
        _require(math.isfinite(lr) and lr >= 0, f"schedule produced learning rate {lr}")


def check_tokenizer(
    tokenizer: Any, samples: tuple[str, ...] = ("hello world", "", "a\nb  c")
) -> None:
    """Round-trips sample text, and survives ``save``/``load``."""
    for s in samples:
        ids = tokenizer.encode(s)
        _require(
            all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids),
            f"bad ids for {s!r}: {ids}",
        )
        _require(tokenizer.decode(ids) == s, f"decode(encode({s!r})) == {tokenizer.decode(ids)!r}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        again = type(tokenizer).load(tmp)
        for s in samples:
            _require(
                again.encode(s) == tokenizer.encode(s),
                f"a saved and loaded tokenizer encodes {s!r} differently",
            )


def check_tokenizer_class(factory: Callable[..., Any], **params: Any) -> None:
    """A tokenizer built from ``params`` (or, without params, trained on sample text by
    ``factory.train``) meets :func:`check_tokenizer`."""
    samples = ("hello world", "", "a\nb  c")
    if params or not hasattr(factory, "train"):
        tokenizer = factory(**params)
    else:
        tokenizer = factory.train(list(samples))
    check_tokenizer(tokenizer, samples)


def check_logger(factory: Callable[..., Any], **params: Any) -> None:
    """A logger built with ``run_dir`` takes metric rows (``nan`` included) and closes."""
    with tempfile.TemporaryDirectory() as tmp:
        logger = factory(run_dir=Path(tmp), **params)
        for name in ("log", "close"):
            _require(callable(getattr(logger, name, None)), f"logger has no {name}() method")
        logger.log({"step": 1, "train_loss": 2.5, "lr": 1e-3})
        logger.log({"step": 2, "train_loss": float("nan")})
        logger.close()


def check_reward(factory: Callable[..., Any], **params: Any) -> None:
    """A reward function returns one finite float per (prompt, response) pair."""
    reward = factory(**params)
    prompts, responses = ["Q: 1+1?", "Say hi", ""], ["2", "hi there", ""]
    scores = list(reward(prompts, responses))
    _require(
        len(scores) == len(prompts),
        f"reward returned {len(scores)} scores for {len(prompts)} pairs",
    )
    _require(
        all(isinstance(x, (int, float)) and math.isfinite(x) for x in scores),
        f"reward scores must be finite floats, got {scores}",
    )


def check_quantized_linear(
    factory: Callable[..., Any], qtype: str = "q8_0", in_features: int = 64, out_features: int = 8
) -> None:
    """A quantized linear layer over the ``qtype`` blocks of a random weight computes
    ``x @ W.T + b`` with ``W`` the blocks dequantized by :mod:`llmcore.ops.quant`, reports
    the weight's shape, dtype and device, and refuses to run with gradients."""
    from llmcore.errors import TrainingError
    from llmcore.ops import quant

    g = torch.Generator().manual_seed(0)
    w = torch.randn(out_features, in_features, generator=g)
    blocks = quant.quantize(qtype, w)
    bias = torch.randn(out_features, generator=g)
    layer = factory(blocks=blocks, in_features=in_features, out_features=out_features, bias=bias)
    _require(
        isinstance(layer, nn.Module), f"a quantized linear must be an nn.Module, got {layer!r}"
    )
    dense = quant.dequantize(qtype, blocks, (out_features, in_features))
    x = torch.randn(2, 3, in_features, generator=g)
    with torch.no_grad():
        y = layer(x)
    _require(tuple(y.shape) == (2, 3, out_features), f"output shape {tuple(y.shape)}")
    ref = x @ dense.T + bias
    # a layer may round its input to 8-bit blocks of 32 first, as llama.cpp does: each input
    # then moves by at most half a step, max|x| of its block / 254
    half_step = x.abs().unflatten(-1, (-1, 32)).amax(-1, keepdim=True) / 254  # (2, 3, K/32, 1)
    reach = (half_step * dense.abs().unflatten(-1, (-1, 32))[:, None, None]).sum((-2, -1))
    bound = reach.permute(1, 2, 0) * 1.01 + 1e-4 * (1 + ref.abs())  # (2, 3, N)
    _require(
        bool(((y - ref).abs() <= bound).all()),
        "output differs from x @ W.T + b by more than 8-bit activation rounding",
    )
    wt = layer.weight
    _require(
        tuple(wt.shape) == (out_features, in_features) and wt.device == x.device,
        f"weight reports shape {tuple(wt.shape)} on {wt.device}",
    )
    _require(torch.equal(wt.dequantize(), dense), "weight.dequantize() differs from the blocks")
    try:
        layer(x.requires_grad_(True))
    except TrainingError:
        return
    raise ConformanceError("a quantized linear must raise TrainingError when asked for gradients")


def check_component(kind: str, factory: Callable[..., Any], **params: Any) -> None:
    """Run the conformance check of ``kind`` on ``factory`` built with ``params``.

    The check of each kind is the one named in :data:`llmcore.contracts.COMPONENT_KINDS`;
    the arguments llmcore itself passes to the factory (``dim`` for a norm, ...) are
    supplied by the check, ``params`` are the component's own.
    """
    if kind not in _CHECKS:
        raise ValueError(
            f"no conformance check for kind {kind!r}; checks exist for {', '.join(_CHECKS)}"
        )
    _CHECKS[kind](factory, **params)


def check_registered(kind: str, name: str, **params: Any) -> None:
    """Look ``name`` up through the plugin manager (so the entry point is exercised) and check it."""
    from llmcore import plugins

    check_component(kind, plugins.factory(kind, name), **params)


#: kind -> its conformance check, as the table of kinds names them (a name missing here
#: fails at import).
_CHECKS: dict[str, Callable[..., None]] = {
    k.name: globals()[k.check] for k in COMPONENT_KINDS.values() if k.check is not None
}

"""The sampler view: how the configured processors reshape one next-token distribution, and
what greedy decoding, sampling and beam search would pick there.

The chain is the one generation would run: the config's ``generate.samplers`` built by
:func:`llmcore.components.build_sampler`, each processor shown on its own (generation may
fuse neighbours, with the same result). Greedy and sampling are the registered ``greedy``
and ``multinomial`` decoders applied to the processed scores, as the engine applies them.
Beam is the registered ``beam`` decoder run for two tokens (one step of lookahead): its
first token is what beam search of that width picks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmcore import plugins
from llmcore.errors import ConfigError

#: how many tokens the beam looks ahead (its first token is the pick shown)
BEAM_DEPTH = 2


@dataclass
class SamplerStage:
    """The distribution after one processor (the first stage is the model's own)."""

    name: str
    probs: torch.Tensor  # (V,) softmax of the scores after this processor


@dataclass
class SamplerView:
    """The distributions at ``position`` and the picks of the three strategies."""

    position: int
    stages: list[SamplerStage]
    greedy: int
    sampled: int
    seed: int
    beam_width: int
    beam_tokens: list[int]  # the best beam's BEAM_DEPTH tokens
    beam_score: float | None


def sampler_chain(config=None, samplers: Sequence | None = None) -> list:
    """The processors to show: ``samplers`` if given, else those of ``config``'s
    ``generate.samplers`` (built as generation builds them), else none."""
    if samplers is not None:
        return list(samplers)
    if config is None:
        return []
    from llmcore.components import build_sampler

    return build_sampler(config)[0]


def sampler_view(
    model,
    ids: Sequence[int],
    position: int,
    *,
    samplers: Sequence = (),
    seed: int = 0,
    beam_width: int = 3,
) -> SamplerView:
    """The distributions of the next token after ``ids[: position + 1]``, before and after
    each processor of ``samplers``, and the greedy, sampled and beam picks.

    Raises:
        ConfigError: ``position`` outside the ids, or a beam width outside 1..8.
    """
    if isinstance(position, bool) or not isinstance(position, int):
        raise ConfigError(f"sampler view: position must be an integer, found {position!r}")
    if not 0 <= position < len(ids):
        raise ConfigError(
            f"sampler view: position {position} is outside the text's {len(ids)} tokens "
            f"(0..{len(ids) - 1})"
        )
    if not 1 <= beam_width <= 8:
        raise ConfigError(f"sampler view: beam_width must be in 1..8, found {beam_width}")
    device = model.lm_head.weight.device
    prefix = torch.tensor([list(ids[: position + 1])], dtype=torch.long, device=device)  # (1, P)
    with torch.no_grad():
        scores = model(prefix)[:, -1].float()  # (1, V)
        stages = [SamplerStage("model", torch.softmax(scores, -1)[0].cpu())]
        for proc in samplers:
            scores = proc(prefix, scores.clone())
            stages.append(SamplerStage(_name(proc), torch.softmax(scores.float(), -1)[0].cpu()))
        greedy = int(plugins.create("decoder", "greedy")(scores)[0])
        gen = torch.Generator(device=scores.device).manual_seed(seed)
        sampled = int(plugins.create("decoder", "multinomial")(scores, gen)[0])
        beam = plugins.create("decoder", "beam", width=beam_width)
        tokens, score = beam.search(
            model, prefix[0].tolist(), max_new_tokens=BEAM_DEPTH, samplers=list(samplers)
        )
    return SamplerView(position, stages, greedy, sampled, seed, beam_width, tokens, score)


def _name(proc) -> str:
    """A processor's label: its class and its settings (public numeric attributes)."""
    params = {
        k: v
        for k, v in vars(proc).items()
        if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    inner = ", ".join(f"{k}={v:g}" for k, v in params.items())
    return f"{type(proc).__name__}({inner})"

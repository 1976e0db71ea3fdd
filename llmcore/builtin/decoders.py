"""Decoder plugins: the final choice of the next token, ``greedy`` or ``multinomial``
(step decoders), and ``beam`` search, a search decoder that drives the model itself
(both forms are stated by :class:`llmcore.contracts.Decoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmcore.errors import GenerationError
from llmcore.hookspecs import hookimpl


class Greedy:
    """The highest-scoring token (the first one on ties)."""

    runs_search = False

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return logits.argmax(dim=-1)


class Multinomial:
    """A draw from ``softmax(logits)``, reproducible with a seeded ``generator``."""

    runs_search = False

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Beam:
    """Beam search with Hugging Face's rules (``num_beams``, ``length_penalty``,
    ``early_stopping``), keeping ``width`` hypotheses in the KV cache.

    Args:
        width: number of beams (>= 1).
        length_penalty: a finished hypothesis scores ``sum of log-probs / length **
            length_penalty`` (length counts the generated tokens, end token included);
            > 0 favours longer outputs, < 0 shorter ones.
        early_stopping: True stops as soon as ``width`` hypotheses are finished; False stops
            when no running beam can still beat the worst finished one at its current
            length; ``"never"`` assumes the longest possible length for that bound.

    Samplers process the log-probabilities before the beams are ranked, as in Hugging
    Face's ``generate``.
    """

    runs_search = True  # the engine calls search() once per prompt

    def __init__(
        self, width: int = 4, length_penalty: float = 1.0, early_stopping: bool | str = False
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise GenerationError(f"beam width must be an integer >= 1, found {width!r}")
        if early_stopping not in (True, False, "never"):
            raise GenerationError(
                f"beam early_stopping must be true, false or 'never', found {early_stopping!r}"
            )
        self.width = width
        self.length_penalty = float(length_penalty)
        self.early_stopping = early_stopping

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None = None):
        raise GenerationError("beam search drives the model itself: use it through generate()")

    def search(
        self,
        model,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        samplers: Sequence = (),
        stop_ids: set[int] | Sequence[int] = (),
        generator: torch.Generator | None = None,
    ) -> tuple[list[int], float | None]:
        """The best hypothesis's new tokens (end token excluded) and its score."""
        if max_new_tokens <= 0:
            return [], None
        nb, lp = self.width, self.length_penalty
        stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
        keep = max(2, 1 + len(stop)) * nb  # enough candidates that nb stay unfinished
        dev = model.lm_head.weight.device
        P = len(prompt_ids)
        seqs = torch.empty(nb, P + max_new_tokens, dtype=torch.long, device=dev)
        seqs[:, :P] = torch.tensor(list(prompt_ids), dtype=torch.long, device=dev)
        cache = model.new_cache(nb, P + max_new_tokens)
        x = model.hidden_states(seqs[:, :P], cache=cache)
        logits = model.lm_head(x[:, -1]).float()  # (nb, V)
        V = logits.shape[-1]
        running = torch.zeros(nb, device=dev)
        running[1:] = -1e9  # only the first beam's tokens count at the first step
        done: list[tuple[float, list[int]]] = []  # (score, tokens) of finished hypotheses
        improvable = True
        for step in range(max_new_tokens):
            cur = P + step
            logp = torch.log_softmax(logits, dim=-1)
            for proc in samplers:
                logp = proc(seqs[:, :cur], logp)
            total = (logp + running[:, None]).view(-1)  # (nb * V,)
            scores, idx = torch.topk(total, keep)
            beams, tokens = (idx // V).tolist(), (idx % V).tolist()
            scores_l = scores.tolist()
            last = step == max_new_tokens - 1
            gen_len = step + 1
            full = len(done) == nb
            # Finished candidates among the top nb enter the finished list (as HF: only
            # while the list is not closed by early stopping or the heuristic).
            can_add = improvable and not (full and self.early_stopping is True)
            nxt_beams, nxt_tokens, nxt_scores = [], [], []
            for rank, (b, t, sc) in enumerate(zip(beams, tokens, scores_l)):
                finished = last or t in stop_ids
                if finished:
                    if rank < nb and can_add:
                        hyp = seqs[b, P:cur].tolist() + ([] if t in stop_ids else [t])
                        done.append((sc / gen_len**lp, hyp))
                elif len(nxt_beams) < nb:
                    nxt_beams.append(b)
                    nxt_tokens.append(t)
                    nxt_scores.append(sc)
            done.sort(key=lambda h: -h[0])
            del done[nb:]
            if last or not nxt_beams:
                break
            while len(nxt_beams) < nb:  # every candidate finished: pad with dead beams
                nxt_beams.append(nxt_beams[0])
                nxt_tokens.append(nxt_tokens[0])
                nxt_scores.append(-1e9)
            _reorder(seqs, cache, cur, nxt_beams, nxt_tokens)
            running = torch.tensor(nxt_scores, device=dev)
            if len(done) == nb:
                if self.early_stopping is True:
                    break
                improvable = improvable and self._can_improve(
                    nxt_scores[0], done, gen_len, max_new_tokens
                )
                if not improvable:
                    break
            x = model.hidden_states(seqs[:, cur : cur + 1], cache=cache)
            logits = model.lm_head(x[:, -1]).float()
        if not done:
            return [], None
        score, hyp = done[0]
        return hyp, score

    def _can_improve(
        self, best_running: float, done: list, gen_len: int, max_new_tokens: int
    ) -> bool:
        """Whether the best running beam can still beat the worst finished hypothesis,
        judged at the longest length it could still reach (``"never"``), else at its
        length now (Hugging Face's rule)."""
        lp = self.length_penalty
        never = self.early_stopping == "never" and lp > 0
        length = max_new_tokens if never else gen_len
        return best_running / length**lp > min(s for s, _ in done)


def _reorder(seqs: torch.Tensor, cache, cur: int, beams: list[int], tokens: list[int]) -> None:
    """Make row ``i`` of the sequences (nb, T) and of the KV cache beam ``beams[i]``'s, then
    append ``tokens[i]`` at position ``cur``."""
    order = torch.tensor(beams, device=seqs.device)
    seqs[:, :cur] = seqs[order, :cur]
    seqs[:, cur] = torch.tensor(tokens, device=seqs.device)
    cache.k.copy_(cache.k.index_select(1, order))
    cache.v.copy_(cache.v.index_select(1, order))


@hookimpl
def register_decoders(register):
    register("greedy", Greedy)
    register("multinomial", Multinomial)
    register("beam", Beam)

"""The inspect page: one self-contained HTML file showing a :class:`~llmcore.inspect.Trace`
and a :class:`~llmcore.inspect.SamplerView`.

No CDN and no network: the script and style in ``assets/`` are inlined. The record travels
as JSON in a ``<script type="application/json">`` element with ``<``, ``>`` and ``&``
written as ``\\u`` escapes, so text containing ``</script>`` or markup cannot end the element
or inject anything; the script puts every string into the page with ``textContent``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import torch

from llmcore.inspect.sampler_view import SamplerView
from llmcore.inspect.tracing import Trace, token_bytes

ASSETS = Path(__file__).parent / "assets"
#: how many tokens each stage of the sampler view lists
SAMPLER_TOKENS = 12


def page_data(tr: Trace, view: SamplerView | None, token_text, title: str = "") -> dict[str, Any]:
    """The plain JSON-ready record the page script reads.

    ``token_text(id) -> str`` names the candidate tokens (the tokenizer's text of one id).
    """
    att = None
    if tr.attention is not None:  # causal: row q ends at key q, the rest is zeros (half the size)
        att = [
            [[_rounded(row[: q + 1]) for q, row in enumerate(head)] for head in layer]
            for layer in tr.attention
        ]
    ids = {int(i) for i in tr.top_ids.flatten().tolist()} | {
        int(i) for i in tr.lens.top_ids.flatten().tolist()
    }
    data: dict[str, Any] = {
        "title": title,
        "tokens": [
            {"id": t.id, "text": t.text, "start": t.start, "end": t.end, "hex": t.bytes.hex(" ")}
            for t in tr.tokens
        ],
        "top_ids": tr.top_ids.tolist(),
        "top_probs": _rounded(tr.top_probs),
        "entropy": _rounded(tr.entropy),
        "loss": _rounded(tr.loss),
        "layers": tr.layers,
        "heads": tr.heads,
        "attention": att,
        "attention_note": tr.attention_note,
        "lens": {
            "layers": tr.lens.layers,
            "top_ids": tr.lens.top_ids.tolist(),
            "top_probs": _rounded(tr.lens.top_probs),
            "rank": tr.lens.rank.tolist(),
        },
        "residual_norms": _rounded(tr.residual_norms),
        "sampler": _sampler_data(view, ids) if view is not None else None,
    }
    data["vocab"] = {str(i): token_text(i) for i in sorted(ids)}
    return data


def _sampler_data(view: SamplerView, ids: set[int]) -> dict[str, Any]:
    """The view's stages, each as its likeliest tokens; the ids named are added to ``ids``."""
    shown = view.stages[0].probs.topk(min(SAMPLER_TOKENS, view.stages[0].probs.numel())).indices
    picks = [view.greedy, view.sampled, *view.beam_tokens]
    order = list(dict.fromkeys([*shown.tolist(), *picks]))
    ids.update(order)
    return {
        "position": view.position,
        "tokens": order,
        "stages": [
            {
                "name": s.name,
                "probs": _rounded(s.probs[order]),
                "kept": int((s.probs > 0).sum()),
            }
            for s in view.stages
        ],
        "greedy": view.greedy,
        "sampled": view.sampled,
        "seed": view.seed,
        "beam_width": view.beam_width,
        "beam_tokens": view.beam_tokens,
        "beam_score": view.beam_score,
    }


def _rounded(t: torch.Tensor) -> Any:
    """Nested lists of 5-digit floats; NaN and infinities become None (JSON has neither)."""
    if t.dim() == 0:
        v = float(t)
        return round(v, 5) if math.isfinite(v) else None
    return [_rounded(x) for x in t] if t.dim() > 1 else [_scalar(v) for v in t.tolist()]


def _scalar(v: float) -> float | None:
    return round(v, 5) if math.isfinite(v) else None


def script_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&``."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    # U+2028/2029 are fine in JSON but ended lines in old script parsers: escape them too
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def page_html(data: dict[str, Any]) -> str:
    """The whole page: style, the record and the script, inlined."""
    css = (ASSETS / "page.css").read_text(encoding="utf-8")
    js = (ASSETS / "page.js").read_text(encoding="utf-8")
    title = html.escape(data.get("title") or "llmcore inspect")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{css}</style></head><body>\n"
        f'<script type="application/json" id="trace-data">{script_json(data)}</script>\n'
        f"<script>{js}</script>\n</body></html>\n"
    )


def write_page(path: str | Path, tr: Trace, view: SamplerView | None, tokenizer, title="") -> Path:
    """Write the page of ``tr`` and ``view`` to ``path``; returns the path."""

    def token_text(i: int) -> str:
        return token_bytes(tokenizer, i).decode("utf-8", errors="replace")

    path = Path(path)
    path.write_text(page_html(page_data(tr, view, token_text, title)), encoding="utf-8")
    return path

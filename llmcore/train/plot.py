"""The loss curves of a run, from the records its loggers wrote: ``loss.html`` always (an
inline SVG of train and val loss and, below it, the learning rate; no optional dependency)
and ``loss.png`` where matplotlib is installed."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the curves drawn: record key -> label
CURVES = {"train_loss": "train", "val_loss": "val"}


def series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """The finite ``(step, value)`` points of ``key`` in ``records``."""
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and "step" in r:
            out.append((float(r["step"]), float(v)))
    return out


def plot_losses(run_dir: Path, records: list[dict[str, Any]], say: Callable[[str], Any]) -> None:
    """Write ``loss.html`` (and ``loss.png`` with matplotlib) into ``run_dir``."""
    curves = {label: series(records, key) for key, label in CURVES.items()}
    curves = {k: v for k, v in curves.items() if v}
    page = svg_page(curves, series(records, "lr"))
    (run_dir / "loss.html").write_text(page, encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is not installed, so no loss.png (pip install 'llmcore[plot]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, pts in curves.items():
        ax.plot(*zip(*pts), "o-" if label == "val" else "-", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if curves:
        ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)


def svg_page(
    curves: dict[str, list[tuple[float, float]]], lr: list[tuple[float, float]] = ()
) -> str:
    """A self-contained page with the loss curves as polylines on one pair of axes and the
    learning rate ``lr`` (if any) as a path on its own axes below."""
    w, h, pad = 640, 360, 40
    pts = [p for c in curves.values() for p in c]
    x0, x1 = (min(p[0] for p in pts), max(p[0] for p in pts)) if pts else (0.0, 1.0)
    y0, y1 = (min(p[1] for p in pts), max(p[1] for p in pts)) if pts else (0.0, 1.0)
    sx = (w - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (h - 2 * pad) / ((y1 - y0) or 1.0)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    lines = []
    for i, (label, c) in enumerate(curves.items()):
        coords = " ".join(f"{pad + (x - x0) * sx:.1f},{h - pad - (y - y0) * sy:.1f}" for x, y in c)
        colour = colours[i % len(colours)]
        lines.append(f'<polyline fill="none" stroke="{colour}" points="{coords}"/>')
        lines.append(
            f'<text x="{w - pad - 60}" y="{pad + 16 * i}" fill="{colour}">{html.escape(label)}</text>'
        )
    axes = (
        f'<text x="{pad}" y="{h - 10}">step {x0:g} to {x1:g}</text>'
        f'<text x="4" y="{pad - 10}">loss {y0:.4g} to {y1:.4g}</text>'
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>loss</title>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">{axes}{"".join(lines)}</svg>\n'
        + (lr_svg(lr) if lr else "")
    )


def lr_svg(lr: list[tuple[float, float]]) -> str:
    """The learning rate over the steps, as one path on its own axes."""
    w, h, pad = 640, 160, 40
    x0, x1 = min(p[0] for p in lr), max(p[0] for p in lr)
    y0, y1 = min(0.0, min(p[1] for p in lr)), max(p[1] for p in lr)
    sx = (w - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (h - 2 * pad) / ((y1 - y0) or 1.0)
    d = " ".join(
        f"{'M' if i == 0 else 'L'}{pad + (x - x0) * sx:.1f},{h - pad - (y - y0) * sy:.1f}"
        for i, (x, y) in enumerate(lr)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">'
        f'<text x="4" y="{pad - 10}">learning rate {y0:.3g} to {y1:.3g}</text>'
        f'<text x="{pad}" y="{h - 10}">step {x0:g} to {x1:g}</text>'
        f'<path id="lr" fill="none" stroke="#2ca02c" d="{d}"/></svg>\n'
    )

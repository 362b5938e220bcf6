"""Render an :class:`~sparsecbm.explanations.Explanation` as a picture or a web page.

- :func:`pathway_figure` / :func:`save_png`: the decision pathway (paper
  Fig. 2) for a person who is not an ML engineer: per concept, the words it
  read, its subnetwork, its value, and how hard it pushed the label.
- :func:`save_html`: one self-contained page (inline CSS, images as data
  URIs, nothing fetched from a network) with the text highlighted per concept,
  the concept table, the pathway and the subnetwork heatmaps.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import textwrap

import numpy as np

from .explanations import Explanation
from .files import atomic_path, write_text
from .plotting import pyplot
from .predictions import what_if_line

POSITIVE = (0.13, 0.55, 0.13)  # pushes toward the label / supports the value
NEGATIVE = (0.80, 0.15, 0.15)
UNSIGNED = (0.20, 0.40, 0.80)  # a word score with no sign (grad): only its size is shown
_LAYER = re.compile(r"^(.*?)\.(\d+)\.(.+?)(?:\.weight)?$")


def layer_grid(layers: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """Per-matrix values keyed by parameter name -> (layers x matrix kinds) array and the kind names."""
    cells: dict[tuple[int, str], float] = {}
    kinds: list[str] = []
    for name, value in layers.items():
        m = _LAYER.match(name)
        layer, kind = (int(m.group(2)), m.group(3)) if m else (0, name)
        if kind not in kinds:
            kinds.append(kind)
        cells[(layer, kind)] = value
    n_layers = max(layer for layer, _ in cells) + 1
    grid = np.full((n_layers, len(kinds)), np.nan)
    for (layer, kind), value in cells.items():
        grid[layer, kinds.index(kind)] = value
    return grid, kinds


def mosaic(heatmaps: dict[str, list[list[float]]]) -> np.ndarray:
    """Tile the per-matrix heatmaps: rows are layers, columns matrix kinds (NaN gaps between)."""
    grid, kinds = layer_grid({n: 0.0 for n in heatmaps})
    size = max(max(len(h), len(h[0])) for h in heatmaps.values())
    out = np.full((grid.shape[0] * (size + 1), len(kinds) * (size + 1)), np.nan)
    for name, h in heatmaps.items():
        m = _LAYER.match(name)
        layer, kind = (int(m.group(2)), m.group(3)) if m else (0, name)
        a = np.asarray(h)
        r, c = layer * (size + 1), kinds.index(kind) * (size + 1)
        out[r : r + a.shape[0], c : c + a.shape[1]] = a
    return out


def word_colour(score: float, top: float, signed: bool) -> tuple[float, float, float, float]:
    base = UNSIGNED if not signed else POSITIVE if score >= 0 else NEGATIVE
    return (*base, min(1.0, abs(score) / top) * 0.55 if top > 0 else 0.0)


def word_legend(e: Explanation) -> str:
    """What a word's colour means for this explanation's method."""
    if e.method is None:
        return ""
    if e.signed:
        return f"Words ({e.method}): green supports the concept's value, red argues against it; stronger = more."
    return f"Words ({e.method}, a size with no sign): darker blue = mattered more to the concept's value."


def pathway_figure(e: Explanation, words: int = 5):
    """The decision pathway as a matplotlib figure: words -> subnetwork -> concept -> label."""
    plt = pyplot()
    k = len(e.concepts)
    footer = textwrap.wrap(f"{word_legend(e)} Bar length = how much the concept pushed the label (logit units). "
                           f"{e.decision_sentence()}", 190)
    height = 1.75 + 1.05 * k + 0.18 * len(footer)
    fig = plt.figure(figsize=(13, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    row_h = 1.05 / height
    top = 1 - 1.35 / height

    quote = textwrap.shorten(e.text, 190, placeholder=" ...")
    ax.text(0.01, 1 - 0.25 / height, f"\u201c{quote}\u201d", fontsize=11, va="top", style="italic", wrap=True)
    headers = [(0.01, "words each concept read"), (0.40, "its subnetwork"), (0.55, "concept (model's reading)"),
               (0.72, f"push on label \u2018{e.label}\u2019")]
    for x, h in headers:
        ax.text(x, top + 0.35 / height, h, fontsize=10, color="0.35", weight="bold")

    subnets = (e.subnetworks or {}).get("concepts", {})
    biggest = max((abs(c.contribution) for c in e.concepts), default=1.0) or 1.0
    renderer = fig.canvas.get_renderer()
    for i, c in enumerate(e.concepts):
        y = top - (i + 0.5) * row_h
        # words
        x = 0.01
        chosen = c.top_words(words)
        peak = max((abs(w.score) for w in chosen), default=0.0)
        for w in chosen:
            t = ax.text(x, y, w.text, fontsize=12, va="center",
                        bbox=dict(boxstyle="round,pad=0.25", fc=word_colour(w.score, peak, e.signed), ec="none"))
            x += t.get_window_extent(renderer).width / fig.bbox.width + 0.012
            if x > 0.36:
                break
        if not chosen:
            ax.text(x, y, "(no token scores)", fontsize=10, va="center", color="0.5")
        ax.annotate("", xy=(0.395, y), xytext=(0.375, y), arrowprops=dict(arrowstyle="->", color="0.5"))
        # subnetwork
        if c.name in subnets:
            grid, _ = layer_grid(subnets[c.name]["layers"])
            inset = fig.add_axes((0.40, y - 0.4 * row_h, 0.05, 0.8 * row_h))
            inset.imshow(grid, cmap="Greens", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            inset.set_xticks([])
            inset.set_yticks([])
            ax.text(0.455, y, f"keeps\n{100 * subnets[c.name]['kept']:.0f}% of\nweights", fontsize=9, va="center")
        else:
            ax.text(0.40, y, "shared\nbackbone", fontsize=9, va="center", color="0.4")
        ax.annotate("", xy=(0.545, y), xytext=(0.515, y), arrowprops=dict(arrowstyle="->", color="0.5"))
        # concept
        ax.text(0.55, y + 0.12 * row_h, f"{c.name} = {c.value}", fontsize=12, va="bottom", weight="bold")
        ax.text(0.55, y - 0.05 * row_h, f"{100 * c.probability:.0f}% sure", fontsize=10, va="top", color="0.3")
        if e.what_if.get(c.name):
            ax.text(0.55, y - 0.2 * row_h, "\n".join(f"if {value}: label {w.label} ({100 * w.probability:.0f}%)"
                                                   for value, w in e.what_if[c.name].items()),
                    fontsize=7.5, va="top", color="0.4", linespacing=1.1)
        # contribution bar, centred at 0.83
        centre, half = 0.79, 0.07
        width = half * c.contribution / biggest
        colour = POSITIVE if c.contribution >= 0 else NEGATIVE
        ax.add_patch(plt.Rectangle((centre + min(0.0, width), y - 0.18 * row_h), abs(width), 0.36 * row_h, color=colour))
        ax.plot([centre, centre], [y - 0.3 * row_h, y + 0.3 * row_h], color="0.3", lw=1)
        ax.text(centre + half + 0.005, y, f"{c.contribution:+.2f}", fontsize=10, va="center")
    # label
    label_y = top - k * row_h / 2
    p = e.probabilities[e.label]
    ax.text(0.955, label_y, f"label\n{e.label}\n{100 * p:.0f}%", fontsize=14, ha="center", va="center", weight="bold",
            bbox=dict(boxstyle="round,pad=0.5", fc=(0.93, 0.93, 1.0), ec="0.4"))
    ax.text(0.01, 0.12 / height, "\n".join(footer), fontsize=9, color="0.35", va="bottom")
    return fig


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    pyplot().close(fig)
    return buf.getvalue()


def save_png(e: Explanation, path: str | os.PathLike) -> None:
    data = _png_bytes(pathway_figure(e))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def heatmap_figure(e: Explanation):
    """One mosaic per concept: every weight matrix's mask, downsampled (dark = kept)."""
    plt = pyplot()
    concepts = e.subnetworks["concepts"]
    names = [c for c in concepts if "heatmaps" in concepts[c]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.8), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names):
        tiles = mosaic(concepts[name]["heatmaps"])
        ax.imshow(tiles, cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        _, kinds = layer_grid(concepts[name]["layers"])
        ax.set_title(f"{name}: {100 * concepts[name]['kept']:.1f}% kept", fontsize=11)
        size = tiles.shape[1] / len(kinds)
        ax.set_xticks([size * (j + 0.45) for j in range(len(kinds))], [_short(kind) for kind in kinds],
                      rotation=60, fontsize=8)
        layers = round(tiles.shape[0] / size)
        ax.set_yticks([size * (j + 0.45) for j in range(layers)], [f"layer {j}" for j in range(layers)], fontsize=8)
    fig.tight_layout()
    return fig


def _short(kind: str) -> str:
    """A matrix kind's short name: 'attention.self.query' -> 'query', 'attention.output.dense' -> 'attention.output'."""
    parts = kind.split(".")
    if parts[-1] == "dense" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts[-2:]) if parts[-1] == "output" else parts[-1]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _highlight(e: Explanation, concept) -> str:
    peak = max((abs(w.score) for w in concept.words), default=0.0)
    parts, pos = [], 0
    for w in concept.words:
        parts.append(html.escape(e.text[pos : w.start]))
        r, g, b, a = word_colour(w.score, peak, e.signed)
        style = f"background: rgba({int(255 * r)},{int(255 * g)},{int(255 * b)},{a:.2f})"
        parts.append(f'<span style="{style}" title="{w.score:.4g}">{html.escape(e.text[w.start : w.end])}</span>')
        pos = w.end
    parts.append(html.escape(e.text[pos:]))
    return "".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.45 }
h1 { font-size: 1.4em } h2 { font-size: 1.15em; margin-top: 1.6em }
table { border-collapse: collapse } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left }
.bar { display: inline-block; height: 0.9em; vertical-align: middle }
.text { background: #fafafa; padding: 0.6em 0.9em; border-radius: 6px; margin: 0.3em 0 1em }
img { max-width: 100% } .muted { color: #666; font-size: 0.9em }
"""


def html_report(e: Explanation) -> str:
    """The whole report as one HTML string (no external resources)."""
    p = e.probabilities[e.label]
    biggest = max((abs(c.contribution) for c in e.concepts), default=1.0) or 1.0
    rows = []
    for c in e.concepts:
        width = int(120 * abs(c.contribution) / biggest)
        colour = "#228b22" if c.contribution >= 0 else "#cc2626"
        rows.append(
            f"<tr><td>{html.escape(c.name)}</td><td><b>{html.escape(c.value)}</b></td>"
            f"<td>{100 * c.probability:.0f}%</td><td>{c.activation:.3f}</td>"
            f'<td><span class="bar" style="width:{width}px;background:{colour}"></span> {c.contribution:+.3f}</td>'
            f'<td class="muted">{html.escape(what_if_line(e.what_if.get(c.name, {})))}</td></tr>'
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>sparsecbm explanation</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Predicted label: {html.escape(e.label)} ({100 * p:.0f}%)</h1>",
        '<p class="muted">Probabilities: '
        + ", ".join(f"{html.escape(k)} {100 * v:.1f}%" for k, v in e.probabilities.items()) + "</p>",
        "<h2>Decision pathway</h2>",
        f'<img alt="decision pathway" src="{_data_uri(_png_bytes(pathway_figure(e)))}">',
        "<h2>Concepts</h2>",
        f'<p class="muted">{html.escape(e.decision_sentence())} Ranked by size of contribution.</p>',
        "<table><tr><th>concept</th><th>value</th><th>confidence</th><th>activation</th><th>contribution</th>"
        "<th>had the text said another value: the label (its probability)</th></tr>",
        *rows,
        "</table>",
    ]
    if any(c.words for c in e.concepts):
        parts.append(f"<h2>Words each concept read ({html.escape(e.method or '')})</h2>")
        parts.append(f'<p class="muted">{html.escape(word_legend(e))}</p>')
        if e.truncated:
            parts.append('<p class="muted">The text was longer than the model reads; only the highlighted part counted.</p>')
        for c in e.concepts:
            parts.append(f"<h3>{html.escape(c.name)} = {html.escape(c.value)}</h3>")
            parts.append(f'<div class="text">{_highlight(e, c)}</div>')
    if e.subnetworks:
        parts.append("<h2>Subnetworks</h2>")
        jac = e.subnetworks.get("jaccard", {})
        if jac:
            parts.append("<p>Overlap of the concepts' kept weights (Jaccard):</p><table>")
            parts += [f"<tr><td>{html.escape(pair.replace('|', ' & '))}</td><td>{v:.3f}</td></tr>" for pair, v in jac.items()]
            parts.append("</table>")
        if any("heatmaps" in v for v in e.subnetworks["concepts"].values()):
            parts.append('<p class="muted">Each weight matrix\'s mask, downsampled; dark = kept.</p>')
            parts.append(f'<img alt="mask heatmaps" src="{_data_uri(_png_bytes(heatmap_figure(e)))}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def save_html(e: Explanation, path: str | os.PathLike) -> None:
    write_text(path, html_report(e))

"""Pictures of what the model does: attention patterns, the sampler's cut, the logit lens, token colours.

Each idea is two plain functions: one computes the numbers (arrays you can check), one draws them
and returns a matplotlib `Figure`. Figures are made with `matplotlib.figure.Figure`, not pyplot,
so nothing is shown twice in a notebook and nothing global changes; a notebook shows one by
leaving it as a cell's last value. The explorers in widgets.py redraw these same figures.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont, get_font
from matplotlib.patches import Rectangle

from ..decoding.sampling import next_token_probs

DPI = 80


# ---- token labels ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _font_charmap() -> frozenset[int]:
    return frozenset(get_font(findfont(FontProperties())).get_charmap())


def label(piece: str, max_len: int = 12) -> str:
    """A token piece made safe to print in a plot.

    Newlines and tabs become visible escapes, `$` is escaped (matplotlib would start maths),
    characters the default font lacks (CJK, most emoji) become '?', long pieces are cut.
    """
    piece = piece.replace("\n", "\\n").replace("\t", "\\t")
    if len(piece) > max_len:
        piece = piece[: max_len - 1] + "…"
    charmap = _font_charmap()
    piece = "".join(c if ord(c) in charmap else "?" for c in piece)
    return piece.replace("$", r"\$")


def token_labels(tok, ids: Sequence[int], max_len: int = 12) -> list[str]:
    """Plot labels for token ids: the SentencePiece pieces, where ▁ marks a leading space."""
    return [label(tok.id_to_piece(int(i)), max_len) for i in ids]


class VizFigure(Figure):
    """A Figure that shows itself as a PNG when it is a notebook cell's value, without pyplot."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def _figure(width: float, height: float) -> Figure:
    fig = VizFigure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # a canvas of its own, so the figure can be measured and saved without pyplot
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what the explorers put in their output)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ---- attention -------------------------------------------------------------------------------

def attention_figure(pattern, labels: Sequence[str], title: str = "", window: int | None = None) -> Figure:
    """Heatmap of one head's attention weights, queries down, keys across.

    Row q shows where token q takes its information from; every row sums to 1. A local
    (sliding-window) layer's window edge is drawn as a dashed line when the text is longer
    than the window; past it the weights are exactly 0.
    """
    pattern = np.asarray(pattern, dtype=np.float32)  # (q, k)
    n = pattern.shape[0]
    size = min(7.0, 2.5 + 0.25 * n)
    fig = _figure(size + 0.8, size)
    ax = fig.add_subplot()
    im = ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if window is not None and window < n:
        # Query q sees keys q - window + 1 .. q: the window's left edge is a staircase.
        xs, ys = [], []
        for q in range(window, n):
            left = q - window + 0.5
            xs += [left, left]
            ys += [q - 0.5, q + 0.5]
        ax.plot(xs, ys, "--", color="tab:red", linewidth=1.2, label=f"window edge ({window})")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


SUMMARIES = {
    "previous token": "mean weight on the token just before (previous-token heads light up)",
    "first token": "mean weight on position 0, the BOS token (attention sinks light up)",
    "distance": "mean distance attended back, in tokens",
    "entropy": "mean entropy of each row, in bits (0 = looks at one token)",
}


def head_summary(patterns, kind: str = "previous token") -> np.ndarray:
    """One number per (layer, head) from attention patterns (layers, heads, q, k) or a list of (heads, q, k).

    Averages over queries 1.. (query 0 can only look at itself, which says nothing).
    """
    if kind not in SUMMARIES:
        raise ValueError(f"kind must be one of {', '.join(map(repr, SUMMARIES))}, got {kind!r}")
    p = torch.as_tensor(np.stack([np.asarray(x, dtype=np.float32) for x in patterns]))  # (layers, heads, q, k)
    n = p.shape[-1]
    if n < 2:
        raise ValueError("need at least 2 tokens to summarise attention heads")
    rows = p[..., 1:, :]  # (layers, heads, q - 1, k)
    q = torch.arange(1, n, dtype=torch.float32)
    if kind == "previous token":
        values = torch.diagonal(p, offset=-1, dim1=-2, dim2=-1)  # weight of query i on key i - 1
    elif kind == "first token":
        values = rows[..., 0]
    elif kind == "distance":
        values = (rows * (q[:, None] - torch.arange(n, dtype=torch.float32))).clamp(min=0).sum(-1)
    else:
        values = -(rows * torch.log2(rows.clamp(min=1e-12))).sum(-1)
    return values.mean(-1).numpy()


def head_summary_figure(values: np.ndarray, kind: str, local: Sequence[bool] | None = None,
                        selected: tuple[int, int] | None = None) -> Figure:
    """Grid of layers x heads coloured by a head_summary value; global layers are marked in the labels."""
    values = np.asarray(values)
    layers, heads = values.shape
    fig = _figure(max(3.5, 1.0 + 0.6 * heads), 1.2 + 0.28 * layers)
    ax = fig.add_subplot()
    vmax = 1.0 if kind in ("previous token", "first token") else None
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    for (layer, head), v in np.ndenumerate(values):
        ax.text(head, layer, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="center", fontsize=7,
                color="white" if v < 0.6 * (vmax or values.max() or 1) else "black")
    ax.set_xticks(range(heads), [f"head {h}" for h in range(heads)], fontsize=8)
    local = list(local) if local is not None else [False] * layers
    ax.set_yticks(range(layers), [f"{i} {'local' if loc else 'GLOBAL'}" for i, loc in enumerate(local)], fontsize=7)
    for ticklabel, loc in zip(ax.get_yticklabels(), local):
        if not loc and any(local):
            ticklabel.set_fontweight("bold")
    if selected is not None:
        layer, head = selected
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2))
    ax.set_title(f"{kind}: {SUMMARIES[kind].split(' (')[0]}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


# ---- sampling --------------------------------------------------------------------------------

def sampler_data(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, n: int = 15) -> dict:
    """The n most likely next tokens, before and after the cut, from `next_token_probs`.

    Returns ids (n,), `before` = softmax(logits / temperature) (the T=1 softmax when greedy),
    `after` = the probability each token is actually sampled with (0 where cut), `kept`
    (bool, n), and `num_kept` = how many tokens of the whole vocabulary survive the cut.
    """
    logits = torch.as_tensor(logits).float().reshape(-1)  # (vocab,)
    after = next_token_probs(logits, temperature, top_k, top_p)
    before = next_token_probs(logits, temperature if temperature > 0 else 1.0)
    ids = logits.topk(min(n, logits.numel())).indices  # temperature never changes the ranking
    return {
        "ids": ids.tolist(),
        "before": before[ids].numpy(),
        "after": after[ids].numpy(),
        "kept": (after[ids] > 0).numpy(),
        "num_kept": int((after > 0).sum()),
        "settings": (temperature, top_k, top_p),
    }


def sampler_figure(data: dict, labels: Sequence[str]) -> Figure:
    """Horizontal bars, most likely token on top: kept tokens blue at the probability they are
    sampled with; cut tokens grey and hatched at the probability they had before the cut."""
    n = len(data["ids"])
    fig = _figure(6, 0.8 + 0.22 * n)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]  # most likely on top
    kept = np.asarray(data["kept"], dtype=bool)
    ax.barh(y[kept], data["after"][kept], color="tab:blue", gid="kept", label="kept: probability when sampled")
    ax.barh(y[~kept], data["before"][~kept], color="lightgrey", hatch="///", edgecolor="grey", gid="cut",
            label="cut: probability before the cut")
    for yi, b, a, k in zip(y, data["before"], data["after"], kept):
        ax.text(a if k else b, yi, f" {a:.3f}" if k else " cut", va="center", fontsize=7,
                color="black" if k else "grey")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    t, k, p = data["settings"]
    ax.set_xlim(0, max(1e-3, float(np.max(np.maximum(data["before"], data["after"])))) * 1.2)
    ax.set_xlabel("probability")
    ax.set_title(f"temperature {t:g}, top-k {k or 'off'}, top-p {p if p not in (None, 1.0) else 'off'}: "
                 f"{data['num_kept']} token{'s' if data['num_kept'] != 1 else ''} can be sampled", fontsize=9)
    # Fixed margins (labels are at most 12 characters) instead of tight_layout: this figure is
    # redrawn at every slider move and every sampled token, and measuring the text costs a draw.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.17, right=0.97, top=1 - 0.3 / height, bottom=0.5 / height)
    return fig


# ---- logit lens ------------------------------------------------------------------------------

def logit_lens_figure(values, cell_labels: Sequence[Sequence[str]], row_labels: Sequence[str],
                      col_labels: Sequence[str], title: str = "logit lens: top token and its probability") -> Figure:
    """Heatmap (rows = layers, bottom = embedding; columns = positions) with a token written in each cell."""
    values = np.asarray(values, dtype=np.float32)
    rows, cols = values.shape
    fig = _figure(1.6 + 0.75 * cols, 1.0 + 0.26 * rows)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="magma", vmin=0, vmax=1, aspect="auto", origin="lower")
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, cell_labels[r][c], ha="center", va="center", fontsize=6,
                color="white" if v < 0.55 else "black")
    ax.set_xticks(range(cols), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(rows), row_labels, fontsize=7)
    ax.set_xlabel("input position (the cell predicts the token after it)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


# ---- tokens coloured by a quantity -----------------------------------------------------------

def token_stats(logits: torch.Tensor, ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Per token, from the prediction made one position earlier (NaN for the first token):

    surprisal  -log2 p(token): bits of surprise when the token arrived;
    entropy    of that predicted distribution, in bits: how unsure the model was before it.
    """
    logp = torch.as_tensor(logits).float().reshape(len(ids), -1).log_softmax(-1)[:-1]  # (seq - 1, vocab)
    target = torch.as_tensor(list(ids)[1:])
    surprisal = -logp.gather(-1, target[:, None]).squeeze(-1) / math.log(2)
    entropy = -(logp.exp() * logp).sum(-1) / math.log(2)
    nan = torch.tensor([float("nan")])
    return {"surprisal": torch.cat([nan, surprisal]).numpy(), "entropy": torch.cat([nan, entropy]).numpy()}


def token_figure(labels: Sequence[str], values, quantity: str = "surprisal", width: float = 6.0,
                 cmap: str = "YlOrRd", vmax: float | None = None) -> Figure:
    """The text as coloured boxes, one per token, wrapped like a paragraph; grey = no value."""
    values = np.asarray(values, dtype=np.float32)
    finite = values[np.isfinite(values)]
    norm = Normalize(0, vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0))
    probe = _figure(width, 1)
    renderer = probe.canvas.get_renderer()  # measures text in pixels, to wrap lines like a paragraph
    prop = FontProperties(size=10)
    pad, line_h, max_w = 4.0, 22.0, width * DPI - 10
    placed, x, y = [], 2.0, 0.0
    for text in labels:
        w = renderer.get_text_width_height_descent(text or " ", prop, ismath=False)[0] + 2 * pad
        if x + w > max_w and x > 2.0:
            x, y = 2.0, y + line_h
        placed.append((x, y, w))
        x += w + 2
    height_px = y + line_h + 4
    total = height_px + 75  # below the tokens: the colour bar (10 px), its ticks and its label
    fig = _figure(width, total / DPI)
    ax = fig.add_axes((0, 65 / total, 1, height_px / total))
    ax.set_xlim(0, width * DPI)
    ax.set_ylim(height_px, 0)
    ax.axis("off")
    cm = colormaps[cmap]
    for (x, y, w), text, v in zip(placed, labels, values):
        colour = cm(norm(v)) if np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
        ax.add_patch(Rectangle((x, y + 2), w, line_h - 4, facecolor=colour, edgecolor="white", gid=text))
        ax.text(x + pad, y + line_h / 2, text, va="center", fontsize=10,
                color="white" if np.isfinite(v) and norm(v) > 0.7 else "black")
    cax = fig.add_axes((0.1, 38 / total, 0.8, 10 / total))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cm), cax=cax, orientation="horizontal")
    cax.set_xlabel(f"{quantity} (bits)", fontsize=8)
    cax.tick_params(labelsize=7)
    return fig

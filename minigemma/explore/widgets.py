"""Interactive explorers for a notebook: drag a slider, see the model change its mind.

Each explorer is an ipywidgets box that a reader makes with `(model, tok, text)` and shows by
leaving it as a cell's last value:

    attention_explorer(model, tok, "The cat sat on the mat.")   # heads, layers, local windows
    sampler_playground(model, tok, "Once upon a time")          # temperature / top-k / top-p, live
    logit_lens_explorer(model, tok, "The capital of France is") # the prediction forming layer by layer
    token_view(model, tok, "Some text")                         # tokens coloured by surprisal/entropy

Pictures are matplotlib PNGs (drawn by viz.py) placed in an `Output` widget: no JavaScript of
our own, no CDN, works offline. The model runs only when the text changes or a token is
sampled; moving a slider redraws from numbers kept in memory. Each explorer keeps its last
figures in `.figures` and its controls as attributes, so tests can drive it without a browser.
"""

from __future__ import annotations

import base64
import html
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from . import viz
from .inspection import lens_filter, logit_lens_table, run_with_cache
from ..decoding.sampling import next_token_probs


def show_figure(out: widgets.Output, fig: Figure) -> None:
    """Replace what `out` shows with the figure as a PNG.

    Setting `outputs` directly (instead of `with out: display(fig)`) works the same with or
    without a running kernel, so a test sees exactly what a browser would.
    """
    png = base64.b64encode(viz.figure_png(fig)).decode("ascii")
    w, h = fig.get_size_inches() * fig.dpi
    out.outputs = ({"output_type": "display_data",
                    "data": {"image/png": png, "text/plain": f"<Figure size {w:.0f}x{h:.0f}>"},
                    "metadata": {}},)


@contextmanager
def errors_shown_in(out: widgets.Output) -> Iterator[None]:
    """Show an exception from the block in the explorer itself, then let it propagate: a widget
    callback's error would otherwise go only to the kernel's log, where a reader never looks."""
    try:
        yield
    except Exception as err:
        # From the block's frames on, as if caught there: this frame tells the reader nothing.
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next, limit=3))
        out.outputs = ({"output_type": "stream", "name": "stderr", "text": text},)
        raise


def _encode(tok, text: str, max_tokens: int) -> list[int]:
    if not isinstance(text, str) or not text:
        raise ValueError("give the explorer some text, e.g. \"The cat sat on the mat.\"")
    ids = tok.encode(text, add_bos=True)  # pitfall 5: Gemma always sees BOS first
    if len(ids) > max_tokens:
        raise ValueError(f"the text is {len(ids)} tokens; this view stays readable up to {max_tokens}. "
                         "Use a shorter text.")
    return ids


class AttentionExplorer(widgets.VBox):
    """One head's attention pattern (pick layer and head) beside a layers x heads summary grid."""

    def __init__(self, model, tok, text: str, max_tokens: int = 64):
        self.model, self.tok = model, tok
        cfg = model.config
        self.ids = _encode(tok, text, max_tokens)
        self.labels = viz.token_labels(tok, self.ids)
        _, cache = run_with_cache(model, self.ids, "hook_pattern")
        # (layers, heads, q, k), kept in memory so moving a slider needs no model run
        self.patterns = np.stack([cache[f"blocks.{i}.attn.hook_pattern"][0].float().cpu().numpy()
                                  for i in range(cfg.num_layers)])
        self.local = [cfg.is_local_layer(i) for i in range(cfg.num_layers)]
        self.layer = widgets.IntSlider(0, min=0, max=cfg.num_layers - 1, description="layer",
                                       continuous_update=False)
        self.head = widgets.IntSlider(0, min=0, max=cfg.num_heads - 1, description="head",
                                      continuous_update=False)
        self.summary = widgets.Dropdown(options=list(viz.SUMMARIES), value="previous token",
                                        description="grid shows")
        self.heatmap_out, self.summary_out = widgets.Output(), widgets.Output()
        self.figures: dict[str, Figure] = {}
        self.layer.observe(self._redraw_all, "value")
        self.head.observe(self._redraw_all, "value")
        self.summary.observe(self._redraw_summary, "value")
        self._redraw_all()
        super().__init__([widgets.HBox([self.layer, self.head, self.summary]),
                          widgets.HBox([self.heatmap_out, self.summary_out])])
        self.add_class("minigemma-attention-explorer")  # a stable handle for the browser test

    def _title(self) -> str:
        layer, head = self.layer.value, self.head.value
        cfg = self.model.config
        kind = f"local, window {cfg.sliding_window}" if self.local[layer] else "global"
        kv = head // (cfg.num_heads // cfg.num_kv_heads)  # grouped-query: heads share key/value heads
        return f"layer {layer} ({kind}), head {head} (kv head {kv})"

    def _redraw_all(self, change=None) -> None:
        with errors_shown_in(self.heatmap_out):
            layer, head = self.layer.value, self.head.value
            window = self.model.config.sliding_window if self.local[layer] else None
            fig = viz.attention_figure(self.patterns[layer, head], self.labels, self._title(), window)
            self.figures["heatmap"] = fig
            show_figure(self.heatmap_out, fig)
        self._redraw_summary()

    def _redraw_summary(self, change=None) -> None:
        with errors_shown_in(self.summary_out):
            values = viz.head_summary(self.patterns, self.summary.value)
            fig = viz.head_summary_figure(values, self.summary.value, self.local,
                                          (self.layer.value, self.head.value))
            self.figures["summary"] = fig
            show_figure(self.summary_out, fig)


class SamplerPlayground(widgets.VBox):
    """The next-token distribution under temperature / top-k / top-p, and a button that samples from it.

    The bars are `next_token_probs` itself, the function generation samples from, so what
    you see is exactly what "sample / step" draws. Each step feeds only the new token to the
    model: the keys and values of everything before it wait in a KV cache.
    """

    def __init__(self, model, tok, text: str, max_new_tokens: int = 64, seed: int = 0, bars: int = 15):
        self.model, self.tok, self.bars = model, tok, bars
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.temperature = widgets.FloatSlider(1.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                               continuous_update=False, readout_format=".2f")
        self.top_k = widgets.IntSlider(0, min=0, max=bars, description="top-k (0=off)",
                                       continuous_update=False, style={"description_width": "initial"})
        self.top_p = widgets.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="top-p (1=off)",
                                         continuous_update=False, readout_format=".2f",
                                         style={"description_width": "initial"})
        self.prompt = widgets.Text(text, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="60%"))
        self.step_button = widgets.Button(description="sample / step", button_style="primary", icon="play")
        self.reset_button = widgets.Button(description="reset", icon="undo")
        self.text_view = widgets.HTML()
        self.chart_out = widgets.Output()
        self.figures: dict[str, Figure] = {}
        for control in (self.temperature, self.top_k, self.top_p):
            control.observe(self._redraw, "value")
        self.prompt.observe(self._on_prompt, "value")
        self.step_button.on_click(lambda button: self.step())
        self.reset_button.on_click(lambda button: self.reset())
        self.reset()
        super().__init__([widgets.HBox([self.prompt, self.reset_button]),
                          widgets.HBox([self.temperature, self.top_k, self.top_p]),
                          self.step_button, self.text_view, self.chart_out])
        self.add_class("minigemma-sampler-playground")

    def _on_prompt(self, change) -> None:
        with errors_shown_in(self.chart_out):
            self.reset()

    def settings(self) -> tuple[float, int | None, float | None]:
        """The sliders as next_token_probs arguments (0 and 1.0 mean "off")."""
        return self.temperature.value, (self.top_k.value or None), (self.top_p.value if self.top_p.value < 1 else None)

    @torch.no_grad()
    def reset(self) -> None:
        """Start again from the prompt: fill a fresh KV cache with it in one forward pass (prefill)."""
        self.prompt_ids = _encode(self.tok, self.prompt.value, self.model.config.max_position_embeddings
                                  - self.max_new_tokens)
        self.new_ids: list[int] = []
        self.generator = torch.Generator().manual_seed(self.seed)
        self.cache = self.model.new_cache(batch=1, max_len=len(self.prompt_ids) + self.max_new_tokens)
        ids = torch.tensor([self.prompt_ids], device=self.model.device)
        self.logits = self.model(ids, cache=self.cache, last_only=True)[0, -1]  # (vocab,)
        self.step_button.disabled = False
        self._redraw()

    @torch.no_grad()
    def step(self) -> int:
        """Sample one token from the distribution on screen, append it, and run the model on it alone."""
        probs = next_token_probs(self.logits, *self.settings())
        # The generator lives on the CPU, so draw there: the same seed gives the same text everywhere.
        token = int(torch.multinomial(probs.cpu(), 1, generator=self.generator))
        self.new_ids.append(token)
        stop = token in (self.tok.eos_id, getattr(self.tok, "end_of_turn_id", None))
        if stop or len(self.new_ids) >= self.max_new_tokens:
            self.step_button.disabled = True
        else:
            # Decode: one token in; every earlier key and value comes from the cache.
            new = torch.tensor([[token]], device=self.model.device)
            self.logits = self.model(new, cache=self.cache, last_only=True)[0, -1]
        self._redraw()
        return token

    def _redraw(self, change=None) -> None:
        new_text = html.escape(self.tok.decode(self.new_ids))
        done = " <i>(stopped)</i>" if self.step_button.disabled else ""
        self.text_view.value = (f"<div style='white-space: pre-wrap'>{html.escape(self.prompt.value)}"
                                f"<b style='color: #1f77b4'>{new_text}</b>{done}</div>")
        with errors_shown_in(self.chart_out):
            self.data = viz.sampler_data(self.logits, *self.settings(), n=self.bars)
            fig = viz.sampler_figure(self.data, viz.token_labels(self.tok, self.data["ids"]))
            self.figures["chart"] = fig
            show_figure(self.chart_out, fig)


class LogitLensExplorer(widgets.VBox):
    """What the model would predict if it stopped after each layer, for each position of the text."""

    MODES = ("top token", "actual next token")

    def __init__(self, model, tok, text: str, max_tokens: int = 48, columns: int = 12):
        self.model, self.tok = model, tok
        self.ids = _encode(tok, text, max_tokens)
        self.labels = viz.token_labels(tok, self.ids, max_len=10)
        _, cache = run_with_cache(model, self.ids, lens_filter)
        lens = logit_lens_table(model, cache, k=1, target_ids=self.ids[1:])
        self.row_labels = lens.labels
        self.top_ids = lens.top_ids[..., 0].cpu().numpy()      # (layers + 1, seq)
        self.top_probs = lens.top_probs[..., 0].cpu().numpy()  # (layers + 1, seq)
        self.next_probs = lens.target_probs.cpu().numpy()      # (layers + 1, seq), NaN at the last position
        self.mode = widgets.ToggleButtons(options=self.MODES, description="cells show")
        n = len(self.ids)
        self.positions = widgets.IntRangeSlider(value=(max(0, n - columns), n - 1), min=0, max=n - 1,
                                                description="positions", continuous_update=False)
        self.out = widgets.Output()
        self.figures: dict[str, Figure] = {}
        self.mode.observe(self._redraw, "value")
        self.positions.observe(self._redraw, "value")
        self._redraw()
        super().__init__([widgets.HBox([self.mode, self.positions]), self.out])
        self.add_class("minigemma-logit-lens")

    def table(self) -> tuple[np.ndarray, list[list[str]]]:
        """(values, cell labels) for the chosen mode and positions, rows = embed, layer 0, ..."""
        lo, hi = self.positions.value
        cols = range(lo, hi + 1)
        if self.mode.value == "top token":
            values = self.top_probs[:, lo:hi + 1]
            cells = [[viz.label(self.tok.id_to_piece(int(self.top_ids[r, c])), 8) for c in cols]
                     for r in range(len(self.row_labels))]
        else:  # the true next token's probability; the last position has no next token
            values = self.next_probs[:, lo:hi + 1]
            nxt = [viz.label(self.tok.id_to_piece(self.ids[c + 1]), 8) if c + 1 < len(self.ids) else "" for c in cols]
            cells = [nxt for _ in self.row_labels]
        return values, cells

    def _redraw(self, change=None) -> None:
        with errors_shown_in(self.out):
            values, cells = self.table()
            lo, hi = self.positions.value
            title = ("logit lens: top token and its probability" if self.mode.value == "top token"
                     else "logit lens: probability of the token that actually comes next")
            fig = viz.logit_lens_figure(values, cells, self.row_labels, self.labels[lo:hi + 1], title)
            self.figures["lens"] = fig
            show_figure(self.out, fig)


class TokenView(widgets.VBox):
    """The text with each token coloured by how surprising it was, or how unsure the model was before it."""

    def __init__(self, model, tok, text: str, max_tokens: int = 512):
        self.model, self.tok = model, tok
        self.ids = _encode(tok, text, max_tokens)
        self.labels = viz.token_labels(tok, self.ids, max_len=20)
        with torch.no_grad():
            logits = model(torch.tensor([self.ids], device=model.device))[0]
        self.stats = viz.token_stats(logits.cpu(), self.ids)
        self.quantity = widgets.Dropdown(options=list(self.stats), value="surprisal", description="colour by")
        self.summary = widgets.HTML()
        self.out = widgets.Output()
        self.figures: dict[str, Figure] = {}
        self.quantity.observe(self._redraw, "value")
        self._redraw()
        super().__init__([widgets.HBox([self.quantity, self.summary]), self.out])
        self.add_class("minigemma-token-view")

    def _redraw(self, change=None) -> None:
        with errors_shown_in(self.out):
            values = self.stats[self.quantity.value]
            mean = float(np.nanmean(values))
            extra = f", perplexity {2 ** mean:.1f}" if self.quantity.value == "surprisal" else ""
            self.summary.value = f"mean {self.quantity.value}: {mean:.2f} bits per token{extra}"
            fig = viz.token_figure(self.labels, values, self.quantity.value)
            self.figures["tokens"] = fig
            show_figure(self.out, fig)


def attention_explorer(model, tok, text: str, **kwargs) -> AttentionExplorer:
    """Attention heatmap for any layer and head, and a grid summarising every head."""
    return AttentionExplorer(model, tok, text, **kwargs)


def sampler_playground(model, tok, text: str, **kwargs) -> SamplerPlayground:
    """Temperature, top-k and top-p sliders over the live next-token distribution, with a sample button."""
    return SamplerPlayground(model, tok, text, **kwargs)


def logit_lens_explorer(model, tok, text: str, **kwargs) -> LogitLensExplorer:
    """Each layer's prediction at each position, read through the final norm and the unembedding."""
    return LogitLensExplorer(model, tok, text, **kwargs)


def token_view(model, tok, text: str, **kwargs) -> TokenView:
    """The text's tokens coloured by surprisal or entropy (bits)."""
    return TokenView(model, tok, text, **kwargs)

"""The explorers, driven headlessly: move a control, check the drawn data changed as it should.

Observers fire synchronously when a test sets `control.value`, and every explorer keeps its
last figures in `.figures`, so the assertions read the matplotlib artists (image arrays, bar
patches, titles) that a reader would see as the PNG. Tiny random models keep this fast; one
test per explorer also runs the real 270M.
"""

from __future__ import annotations

import base64
import html

import numpy as np
import pytest
import torch

from minigemma import Gemma, get_config
from minigemma.explore import viz
from minigemma.explore.inspection import run_with_cache
from minigemma.decoding.sampling import next_token_probs
from minigemma.explore.widgets import (attention_explorer, logit_lens_explorer, sampler_playground, show_figure,
                               token_view)

TEXT = "def forward(self, x): return self.norm(x) + x"


@pytest.fixture(scope="module", params=["fp32", "int8"])
def tiny(tiny_tokenizer, request):
    """Every explorer test runs on the float model and on the same model quantized to int8
    (module swaps keep the hook points, so the explorers must work unchanged)."""
    torch.manual_seed(0)
    model = Gemma(get_config("tiny-gemma3")).eval()
    with torch.no_grad():  # sharper than a fresh init, so distributions are not flat
        model.embed.weight.normal_(0, 0.15)
    if request.param == "int8":
        from minigemma.quantize import quantize

        quantize(model, bits=8)
    return model, tiny_tokenizer


def image(fig):
    return np.ma.filled(fig.axes[0].images[0].get_array().astype(float), np.nan)  # imshow masks NaN


def bars(fig, gid):
    return [p for p in fig.axes[0].patches if p.get_gid() == gid]


def test_png_lands_in_the_output_widget():
    import ipywidgets as widgets

    out = widgets.Output()
    fig = viz._figure(2, 1)
    fig.add_subplot().plot([0, 1])
    show_figure(out, fig)
    (output,) = out.outputs
    assert base64.b64decode(output["data"]["image/png"]).startswith(b"\x89PNG")


# ---- attention explorer ----------------------------------------------------------------------

def test_attention_layer_and_head_sliders(tiny):
    model, tok = tiny
    ex = attention_explorer(model, tok, TEXT)
    ids = tok.encode(TEXT, add_bos=True)
    _, cache = run_with_cache(model, ids, "hook_pattern")
    assert len(ids) > model.config.sliding_window, "the test text must be longer than the window"

    first = image(ex.figures["heatmap"]).copy()
    np.testing.assert_allclose(first, cache["blocks.0.attn.hook_pattern"][0, 0].numpy())
    ex.layer.value = 2  # tiny-gemma3: every 3rd layer is global
    second = image(ex.figures["heatmap"])
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, cache["blocks.2.attn.hook_pattern"][0, 0].numpy())
    assert "global" in ex.figures["heatmap"].axes[0].get_title()
    assert not ex.figures["heatmap"].axes[0].lines, "a global layer has no window edge"

    ex.layer.value, ex.head.value = 1, 3
    fig = ex.figures["heatmap"]
    np.testing.assert_allclose(image(fig), cache["blocks.1.attn.hook_pattern"][0, 3].numpy())
    assert "local, window 8" in fig.axes[0].get_title() and "kv head 1" in fig.axes[0].get_title()
    (edge,) = fig.axes[0].lines  # the dashed window edge of a local layer
    assert min(edge.get_xdata()) == 0.5  # query 8 can no longer see key 0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == viz.token_labels(tok, ids)


def test_attention_summary_grid(tiny):
    model, tok = tiny
    ex = attention_explorer(model, tok, TEXT)
    grid = image(ex.figures["summary"]).copy()
    assert grid.shape == (model.config.num_layers, model.config.num_heads)
    np.testing.assert_allclose(grid, viz.head_summary(ex.patterns, "previous token"))
    ex.summary.value = "entropy"
    assert not np.allclose(grid, image(ex.figures["summary"]))
    ex.layer.value, ex.head.value = 4, 2  # the selected head is outlined in the grid
    (box,) = ex.figures["summary"].axes[0].patches
    assert box.get_xy() == (1.5, 3.5)
    labels = [t.get_text() for t in ex.figures["summary"].axes[0].get_yticklabels()]
    assert labels[2] == "2 GLOBAL" and labels[0] == "0 local"


def test_head_summary_on_known_patterns():
    n = 5
    prev = np.eye(n, k=-1)
    prev[0, 0] = 1  # query 0 can only attend to itself
    bos = np.zeros((n, n))
    bos[:, 0] = 1
    patterns = np.stack([prev, bos])[:, None]  # (layers=2, heads=1, q, k)
    np.testing.assert_allclose(viz.head_summary(patterns, "previous token")[:, 0], [1, 0.25])
    np.testing.assert_allclose(viz.head_summary(patterns, "first token")[:, 0], [0.25, 1])
    np.testing.assert_allclose(viz.head_summary(patterns, "distance")[:, 0], [1, 2.5])
    np.testing.assert_allclose(viz.head_summary(patterns, "entropy")[:, 0], [0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="kind must be one of"):
        viz.head_summary(patterns, "sinks")


# ---- sampler playground ----------------------------------------------------------------------

def kept_in_full_vocab(logits, temperature=1.0, top_p=None, top_k=None):
    return int((next_token_probs(logits, temperature, top_k, top_p) > 0).sum())


def test_sampler_top_k_leaves_k_bars(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def forward(self")
    fig = pg.figures["chart"]
    assert len(bars(fig, "kept")) == pg.bars and not bars(fig, "cut")  # everything can be sampled
    pg.top_k.value = 3
    fig = pg.figures["chart"]
    assert len(bars(fig, "kept")) == 3 and len(bars(fig, "cut")) == pg.bars - 3
    assert all(p.get_hatch() == "///" for p in bars(fig, "cut"))
    assert pg.data["num_kept"] == 3
    np.testing.assert_allclose(sum(p.get_width() for p in bars(fig, "kept")), 1.0, rtol=1e-5)
    assert "top-k 3" in fig.axes[0].get_title()


def test_sampler_top_p_keeps_the_tokens_that_first_reach_p():
    # A handmade distribution: 0.40, 0.25, 0.15, 0.10, 0.06, 0.04.
    probs = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
    logits = probs.log()
    for p, n_kept in [(0.3, 1), (0.5, 2), (0.6, 2), (0.7, 3), (0.85, 4), (0.95, 5), (0.99, 6)]:
        data = viz.sampler_data(logits, 1.0, None, p, n=6)
        assert data["num_kept"] == n_kept and data["kept"].tolist() == [True] * n_kept + [False] * (6 - n_kept)
        np.testing.assert_allclose(data["after"][:n_kept], probs[:n_kept] / probs[:n_kept].sum(), rtol=1e-5)


def test_sampler_top_p_slider(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def forward(self")
    pg.top_p.value = 0.5
    sorted_probs = pg.logits.float().softmax(-1).sort(descending=True).values
    first_reaching = int((sorted_probs.cumsum(0) < 0.5).sum()) + 1  # tokens until the running total reaches 0.5
    assert pg.data["num_kept"] == first_reaching == kept_in_full_vocab(pg.logits, top_p=0.5)
    assert sorted_probs[:first_reaching].sum() >= 0.5 > sorted_probs[:first_reaching - 1].sum()
    shown_kept = len(bars(pg.figures["chart"], "kept"))
    assert shown_kept == min(first_reaching, pg.bars)


def test_sampler_temperature(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def forward(self")
    top_before = pg.data["after"][0]
    pg.temperature.value = 0.5  # sharper: the favourite gains
    assert pg.data["after"][0] > top_before
    pg.temperature.value = 1.5  # flatter: it loses
    assert pg.data["after"][0] < top_before
    pg.temperature.value = 0.0  # greedy: one bar, certainty
    assert pg.data["kept"].tolist() == [True] + [False] * (pg.bars - 1) and pg.data["after"][0] == 1.0
    assert len(bars(pg.figures["chart"], "kept")) == 1


def test_sampler_step_appends_and_reuses_the_cache(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def forward(self", max_new_tokens=8, seed=3)
    prompt_len = len(pg.prompt_ids)
    assert pg.cache.length == prompt_len
    first_chart = pg.data["after"].copy()
    pg.step_button.click()
    assert len(pg.new_ids) == 1 and pg.cache.length == prompt_len + 1
    assert not np.allclose(first_chart, pg.data["after"]), "the chart shows the next position now"
    for _ in range(3):
        pg.step()
    assert pg.cache.length == prompt_len + 4
    assert html.escape(tok.decode(pg.new_ids)) in pg.text_view.value
    # The cached logits equal a full forward pass over prompt + sampled tokens.
    with torch.no_grad():
        full = model(torch.tensor([pg.prompt_ids + pg.new_ids]))[0, -1]
    # int8: every matmul rounds its bf16 output, so one logit may move by a bf16 step (1/64 at 2-4)
    # between one row at a time and the whole sequence; float32 agrees to float rounding.
    tol = 1e-4 if isinstance(model.embed, torch.nn.Embedding) else 0.05
    torch.testing.assert_close(pg.logits, full, rtol=tol, atol=tol)
    # The same seed samples the same tokens; reset starts over from the prompt.
    again = sampler_playground(model, tok, "def forward(self", max_new_tokens=8, seed=3)
    assert [again.step() for _ in range(4)] == pg.new_ids
    pg.reset_button.click()
    assert pg.new_ids == [] and pg.cache.length == prompt_len


def test_sampler_sampled_token_is_allowed(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def forward(self", max_new_tokens=8, seed=1)
    pg.top_k.value = 2
    for _ in range(4):
        allowed = set(np.array(pg.data["ids"])[pg.data["kept"]].tolist())
        assert pg.step() in allowed
    pg.top_k.value, pg.temperature.value = 0, 0.0
    for _ in range(2):
        greedy = int(pg.logits.argmax())
        assert pg.step() == greedy


def test_sampler_stops_when_full_and_reports_bad_prompts(tiny):
    model, tok = tiny
    pg = sampler_playground(model, tok, "def", max_new_tokens=2)
    pg.step(), pg.step()
    assert pg.step_button.disabled and pg.cache.length == len(pg.prompt_ids) + 1
    assert "stopped" in pg.text_view.value
    with pytest.raises(ValueError, match="some text"):
        pg.prompt.value = ""
    assert "some text" in pg.chart_out.outputs[0]["text"]  # the reader sees why, in the widget
    pg.prompt.value = "class"
    assert pg.cache.length == len(tok.encode("class", add_bos=True)) and not pg.step_button.disabled


# ---- logit lens ------------------------------------------------------------------------------

def test_logit_lens_explorer(tiny):
    model, tok = tiny
    ex = logit_lens_explorer(model, tok, TEXT, columns=6)
    ids = ex.ids
    n_rows = model.config.num_layers + 1
    values = image(ex.figures["lens"]).copy()
    assert values.shape == (n_rows, 6)
    # The top row is the model's own output.
    with torch.no_grad():
        probs = model(torch.tensor([ids]))[0].softmax(-1)
    # int8: the lens sends all its rows at once through dequantize-then-F.linear (float32), the
    # model's forward its 12 through the int8 kernel on bf16 inputs: ~1% apart (measured 2.2% at most).
    rtol = 1e-4 if isinstance(model.embed, torch.nn.Embedding) else 0.05
    np.testing.assert_allclose(values[-1], probs[-6:].max(-1).values.numpy(), rtol=rtol)
    cells = [t.get_text() for t in ex.figures["lens"].axes[0].texts]
    assert cells[-1] == viz.label(tok.id_to_piece(int(probs[-1].argmax())), 8)

    ex.mode.value = "actual next token"
    nxt = image(ex.figures["lens"])
    assert not np.allclose(np.nan_to_num(nxt), values)
    expected = probs[-6:-1].gather(-1, torch.tensor(ids[-5:])[:, None]).squeeze(-1).numpy()
    np.testing.assert_allclose(nxt[-1, :-1], expected, rtol=rtol)
    assert np.isnan(nxt[:, -1]).all()  # the last position has no next token yet

    ex.positions.value = (0, 2)
    assert image(ex.figures["lens"]).shape == (n_rows, 3)
    assert [t.get_text() for t in ex.figures["lens"].axes[0].get_xticklabels()] == ex.labels[:3]


# ---- token view ------------------------------------------------------------------------------

def test_token_view(tiny):
    model, tok = tiny
    tv = token_view(model, tok, TEXT)
    ids = tv.ids
    with torch.no_grad():
        logp = model(torch.tensor([ids]))[0].log_softmax(-1)
    surprisal = -logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1) / np.log(2)
    np.testing.assert_allclose(tv.stats["surprisal"][1:], surprisal.numpy(), rtol=1e-4)
    assert np.isnan(tv.stats["surprisal"][0])

    def colours():
        boxes = [p for p in tv.figures["tokens"].axes[0].patches]
        assert len(boxes) == len(ids)
        return np.array([p.get_facecolor() for p in boxes])

    before = colours()
    assert "surprisal" in tv.summary.value and "perplexity" in tv.summary.value
    tv.quantity.value = "entropy"
    assert not np.allclose(before, colours())
    assert "entropy" in tv.figures["tokens"].axes[1].get_xlabel()


def test_token_stats_entropy_of_uniform():
    logits = torch.zeros(3, 8)  # uniform over 8 tokens: 3 bits of entropy, 3 bits of surprise
    stats = viz.token_stats(logits, [0, 1, 2])
    np.testing.assert_allclose(stats["entropy"][1:], [3, 3], rtol=1e-6)
    np.testing.assert_allclose(stats["surprisal"][1:], [3, 3], rtol=1e-6)


def test_labels_are_safe_for_matplotlib():
    assert viz.label("$5\n") == r"\$5\n"
    assert viz.label("▁the") == "▁the"
    assert viz.label("漢字") == "??"
    assert len(viz.label("a" * 40)) == 12


# ---- the real model --------------------------------------------------------------------------

def test_real_model_explorers(gemma3_270m):
    model, tok = gemma3_270m
    ex = attention_explorer(model, tok, "The cat sat on the mat. The cat")
    assert ex.patterns.shape[:2] == (18, 4)
    ex.layer.value = 5
    assert "layer 5 (global)" in ex.figures["heatmap"].axes[0].get_title()
    # Attention sinks: on average the heads put a lot of weight on the BOS token.
    assert viz.head_summary(ex.patterns, "first token").mean() > 0.3

    pg = sampler_playground(model, tok, "The capital of France is", seed=0)
    pg.temperature.value = 0.0
    favourite = pg.data["ids"][0]
    assert pg.data["num_kept"] == 1 and pg.step() == favourite
    pg.temperature.value, pg.top_p.value = 1.0, 0.5
    assert pg.data["num_kept"] == kept_in_full_vocab(pg.logits, top_p=0.5)

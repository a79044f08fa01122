"""Write notebooks 02-04 from the cells below (then execute them with nbconvert).

    .venv/bin/python notebooks/_build/build_02_04.py            # all three
    .venv/bin/python notebooks/_build/build_02_04.py 03         # one
    for nb in notebooks/0[234]_*.ipynb; do
        .venv/bin/jupyter nbconvert --to notebook --execute --inplace "$nb"; done

Keeping the source here makes diffs reviewable and the cells easy to reorder; the executed
.ipynb files (outputs included, for nbval) are what readers open.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nbcells import code, md, write_notebook


# --------------------------------------------------------------------------------------------
# 02: embeddings and RMSNorm
# --------------------------------------------------------------------------------------------
NB02 = [
    md(r"""
    # 02 · Embeddings and RMSNorm

    **What you will learn**
    - how a token id becomes a vector: an embedding is a row lookup (the same thing as a one-hot
      matrix product), and Gemma reuses that matrix to produce its logits;
    - why Gemma multiplies embeddings by $\sqrt{\text{hidden}}$, and why *the dtype of that one
      number* matters (45.25 in bf16 versus 45.2548 in fp32 for Gemma 2B);
    - RMSNorm: you write it by hand, set it beside LayerNorm, and check it against
      `minigemma.model.norm.RMSNorm` and transformers' `GemmaRMSNorm`;
    - Gemma's `(1 + weight)` convention, and why a freshly initialised norm is the identity;
    - how large the activations of the real Gemma 3 270M grow from layer to layer, and why
      normalising every sublayer's input makes that harmless.

    **Builds on** `01_tokenizer` (text to token ids). **Next:** `03_rope` (where position comes in).

    **Read along:** the Gemma report (Gemma Team, 2024), section 2 "Model Architecture"
    (shared input/output embeddings, RMSNorm); Zhang & Sennrich (2019), *Root Mean Square Layer
    Normalization*; Vaswani et al. (2017), *Attention Is All You Need*, section 3.4 (the
    $\sqrt{d_\text{model}}$ factor).
    """),
    code(r"""
    import torch
    import torch.nn.functional as F
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.model.norm import RMSNorm

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    cfg = model.config
    print(f"{cfg.name}: vocab {cfg.vocab_size:,}, hidden {cfg.hidden_size}, {cfg.num_layers} layers")
    """),
    md(r"""
    ## 1. Token embeddings: one row per token

    The tokenizer gave us integers. The model's first step looks each one up in a matrix
    `E` of shape (vocab, hidden): row *i* **is** the vector of token *i*. Nothing else happens
    here: the vector knows neither its position nor its neighbours.
    """),
    code(r"""
    ids = tok.encode("The cat sat on the mat", add_bos=True)  # Gemma always starts with <bos> (notebook 01)
    E = model.embed.weight.detach()                           # (vocab, hidden) = (262144, 640)
    x = E[ids]                                                 # (seq, hidden): plain row indexing
    print(ids)
    print(tuple(E.shape), "->", tuple(x.shape))
    """),
    md(r"""
    Check: `nn.Embedding` is exactly that lookup, which is also a product with one-hot vectors
    (the way papers write it; the lookup just skips the 262,143 rows a one-hot vector
    multiplies by zero).
    """),
    code(r"""
    assert torch.equal(model.embed(torch.tensor(ids)).detach(), x)
    one_hot = F.one_hot(torch.tensor(ids), cfg.vocab_size).float()  # (seq, vocab)
    torch.testing.assert_close(one_hot @ E, x)
    """),
    md(r"""
    Gemma **ties** its embeddings: the same `E` turns the last hidden state back into one score
    per vocabulary entry, `logits = h @ E.T` (Gemma report, section 2). With a 262k-entry
    vocabulary that single matrix is most of the 270M model:
    """),
    code(r"""
    n_embed, n_total = E.numel(), model.num_parameters()
    print(f"embedding matrix: {n_embed:,} of {n_total:,} parameters ({n_embed / n_total:.0%})")
    assert n_embed == cfg.vocab_size * cfg.hidden_size
    """),
    md(r"""
    ## 2. The $\sqrt{\text{hidden}}$ scale

    Before the first block, Gemma multiplies every embedding by $\sqrt{\text{hidden}}$ (the
    original Transformer did the same, Vaswani et al. 2017, section 3.4; gemma_pytorch calls the
    factor the "normalizer"). One way to see why: the same matrix also produces the logits,
    $h \cdot E^\top$ summed over 640 channels, which keeps its entries small, about
    $1/\sqrt{\text{hidden}}$; as an input, a vector that small would be drowned by everything the
    blocks add. Look at the real matrix: every row has root-mean-square close to $1/\sqrt{640}$,
    so after the scale each token enters the residual stream with RMS about 1, the size a
    normalised vector has.
    """),
    code(r"""
    row_rms = E.pow(2).mean(dim=-1).sqrt()  # (vocab,): one number per token
    scale = cfg.hidden_size ** 0.5
    print(f"RMS of a row of E:       {row_rms.min():.4f} .. {row_rms.max():.4f}   (1/sqrt(640) = {1 / scale:.4f})")
    print(f"after x sqrt(640) = {scale:.3f}: {row_rms.min() * scale:.3f} .. {row_rms.max() * scale:.3f}")
    """),
    md(r"""
    Check that the model does this: the hook point `hook_embed` (see `minigemma/model/hooks.py`: an
    identity module we can attach a PyTorch forward hook to) shows what enters block 0.
    """),
    code(r"""
    seen = {}
    handle = model.hook_embed.register_forward_hook(lambda module, inputs, output: seen.update(embed=output))
    with torch.no_grad():
        model(torch.tensor([ids]), last_only=True)
    handle.remove()
    torch.testing.assert_close(seen["embed"][0], x * scale)
    """),
    md(r"""
    ### Why the dtype of $\sqrt{\text{hidden}}$ matters

    The reference implementations build the factor as a tensor **in the activation dtype**.
    bfloat16 keeps 8 significant bits, so $\sqrt{2048} = 45.2548\ldots$ becomes 45.25, and
    $\sqrt{3072} = 55.4256\ldots$ becomes 55.5. The checkpoints were trained with the rounded
    numbers, so a faithful reimplementation rounds too (transformers' Gemma code has a comment on
    exactly this; it is pitfall 3 in [docs/pitfalls.md](../docs/pitfalls.md)).
    """),
    code(r"""
    for name in ["gemma-2b", "gemma-7b", "gemma3-270m"]:
        hidden = minigemma.get_config(name).hidden_size
        fp32 = torch.tensor(hidden ** 0.5, dtype=torch.float32).item()
        bf16 = torch.tensor(hidden ** 0.5, dtype=torch.bfloat16).item()
        print(f"{name:12s} hidden {hidden:5d}   fp32 {fp32:8.4f}   bf16 {bf16:6.2f}   change {(bf16 - fp32) / fp32:+.3%}")
    assert torch.tensor(2048 ** 0.5, dtype=torch.bfloat16).item() == 45.25
    """),
    md(r"""
    Check it in the package and in transformers: a model with Gemma 2B's width (one tiny layer,
    512-token vocabulary, so it builds in a blink) run in bf16 multiplies by exactly 45.25, and
    transformers' Gemma embedding module gives bit-identical output.
    """),
    code(r"""
    from transformers.models.gemma.modeling_gemma import GemmaTextScaledWordEmbedding

    narrow = minigemma.get_config("tiny-gemma").replace(hidden_size=2048, num_layers=1)
    m2b = minigemma.Gemma(narrow).to(torch.bfloat16)
    tiny_ids = torch.tensor([[2, 10, 20, 30]])
    handle = m2b.hook_embed.register_forward_hook(lambda module, inputs, output: seen.update(embed=output))
    with torch.no_grad():
        m2b(tiny_ids, last_only=True)
    handle.remove()

    rows = m2b.embed.weight.detach()[tiny_ids]  # (1, 4, 2048) in bf16
    assert torch.equal(seen["embed"], rows * 45.25)
    hf_embed = GemmaTextScaledWordEmbedding(narrow.vocab_size, 2048, 0, embed_scale=2048 ** 0.5).to(torch.bfloat16)
    hf_embed.weight.data.copy_(m2b.embed.weight.data)
    assert torch.equal(hf_embed(tiny_ids), seen["embed"])
    unrounded = (rows.float() * 2048 ** 0.5).to(torch.bfloat16)
    print(f"entries that differ from the fp32-scaled version: {(unrounded != seen['embed']).float().mean():.1%}")
    """),
    md(r"""
    How much does it matter? Run the real 270M (fp32) once more with its embeddings rescaled
    from 25.298 to 25.25, the bf16 value: the logits move by a few hundredths. Too little to
    change the top prediction on this sentence, far too much for a parity test at $10^{-5}$:
    this is the kind of detail that decides whether "matches the reference" is true.
    """),
    code(r"""
    bf16_scale = torch.tensor(scale, dtype=torch.bfloat16).item()
    with torch.no_grad():
        reference = model(torch.tensor([ids]))
        handle = model.hook_embed.register_forward_hook(lambda module, inputs, output: output * (bf16_scale / scale))
        rounded = model(torch.tensor([ids]))
        handle.remove()
    change = (rounded - reference).abs().max().item()
    print(f"largest logit change: {change:.2f}")
    assert 1e-3 < change < 1.0
    assert torch.equal(rounded.argmax(-1), reference.argmax(-1))
    """),
    md(r"""
    ## 3. RMSNorm versus LayerNorm

    LayerNorm (Ba et al., 2016) re-centres and re-scales each vector:
    $\;y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\, g + b$.
    Zhang & Sennrich (2019) argue that the re-scaling is what helps training, not the
    re-centring, and drop the mean and the bias:

    $$y = \frac{x}{\operatorname{RMS}(x)}\, g, \qquad \operatorname{RMS}(x) = \sqrt{\tfrac{1}{n}\textstyle\sum_i x_i^2 + \epsilon}$$

    One statistic instead of two, no bias. Gemma uses RMSNorm for every norm in the network.
    Two details of Gemma's version: the gain is stored as an offset, $g = 1 + w$ (section 4
    below), and the statistics are computed in float32 even when activations are bf16.
    """),
    code(r"""
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        x32 = x.float()  # the mean of a few hundred squares needs fp32's bits, whatever x's dtype
        rms = x32.pow(2).mean(dim=-1, keepdim=True).add(eps).sqrt()  # (..., 1): one number per vector
        return (x32 / rms * (1 + weight.float())).to(x.dtype)
    """),
    md(r"""
    Check against the package's `RMSNorm` and transformers' `GemmaRMSNorm`, with a random gain
    (a zero gain would hide a wrong convention) and activations of an arbitrary scale:
    """),
    code(r"""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    h = torch.randn(2, 5, 640) * 30
    w = torch.randn(640) * 0.5
    ours, theirs = RMSNorm(640), GemmaRMSNorm(640)
    with torch.no_grad():
        ours.weight.copy_(w)
        theirs.weight.copy_(w)
        torch.testing.assert_close(rms_norm(h, w), ours(h))
        assert torch.equal(ours(h), theirs(h))  # same formula, same float32 steps: bit-identical
        torch.testing.assert_close(rms_norm(h.bfloat16(), w), ours(h.bfloat16()))
    """),
    md(r"""
    The difference from LayerNorm is only the mean. On a vector whose mean is zero, RMS and
    standard deviation are the same number and the two norms agree; otherwise they do not.
    Both are unchanged when the input is multiplied by a positive constant: that re-scaling
    invariance is the property Zhang & Sennrich keep.
    """),
    code(r"""
    v = torch.randn(640) + 0.5
    no_gain = torch.zeros(640)  # RMSNorm's gain is 1 + 0
    layer = F.layer_norm(v, (640,), eps=1e-6)
    print(f"mean {v.mean():.2f}: LayerNorm and RMSNorm differ by up to {(layer - rms_norm(v, no_gain)).abs().max():.2f}")

    centred = v - v.mean()
    torch.testing.assert_close(F.layer_norm(centred, (640,), eps=1e-6), rms_norm(centred, no_gain))
    torch.testing.assert_close(rms_norm(1000 * v, no_gain), rms_norm(v, no_gain))
    """),
    md(r"""
    ## 4. The `(1 + weight)` convention

    Gemma's checkpoints store the gain as an offset from one, so the multiplier is $1 + w$
    (gemma_pytorch's `add_unit_offset`; transformers and minigemma do the same). A new norm is
    initialised with $w = 0$: its multiplier is exactly 1, so before any training it only
    normalises, and a vector that already has RMS 1 passes through unchanged. (Beware when
    converting: llama.cpp's GGUF files store the multiplier $1 + w$ itself.)
    """),
    code(r"""
    fresh = RMSNorm(640)
    assert torch.equal(fresh.weight.detach(), torch.zeros(640))
    unit = h / h.pow(2).mean(dim=-1, keepdim=True).sqrt()  # every vector already has RMS 1
    with torch.no_grad():
        torch.testing.assert_close(fresh(unit), unit)
    """),
    md(r"""
    Training moves the multipliers far from 1. In the real model the norms that write into the
    residual stream (after attention and after the MLP, Gemma 3's "sandwich" norms) end up with
    multipliers in the hundreds in the last layers:
    """),
    code(r"""
    kinds = ["attn_norm", "post_attn_norm", "mlp_norm", "post_mlp_norm"]
    print("median multiplier (1 + w)".ljust(26), "".join(f"{k:>15s}" for k in kinds))
    for layer in [0, 5, 11, 17]:
        block = model.blocks[layer]
        medians = [(1 + getattr(block, k).weight.detach()).median().item() for k in kinds]
        print(f"layer {layer:2d}".ljust(26), "".join(f"{m:15.2f}" for m in medians))
    """),
    md(r"""
    ## 5. How big do activations get?

    Record the residual stream after every block (`blocks.{L}.hook_resid_post`) for one
    sentence and measure each token's RMS. The first token, `<bos>`, is plotted on its own: like
    in many LLMs it grows far larger than the others.
    """),
    code(r"""
    names = ["hook_embed"] + [f"blocks.{L}.hook_resid_post" for L in range(cfg.num_layers)]
    names += ["blocks.3.hook_resid_pre", "blocks.3.attn_norm.hook_normalized"]
    points = dict(model.named_modules())
    acts = {}
    handles = [points[n].register_forward_hook(lambda module, inputs, output, n=n: acts.update({n: output[0]}))
               for n in names]
    sentence = tok.encode("Gemma normalises the input of every sublayer, so the scale of the stream does not matter.",
                          add_bos=True)
    with torch.no_grad():
        model(torch.tensor([sentence]), last_only=True)
    for handle in handles:
        handle.remove()
    stream = torch.stack([acts[n] for n in names[:cfg.num_layers + 1]])  # (layers + 1, seq, hidden)
    token_rms = stream.pow(2).mean(dim=-1).sqrt()                       # (layers + 1, seq)
    print(f"{len(sentence)} tokens; median RMS of ordinary tokens, embedding -> last layer: "
          f"{token_rms[0, 1:].median():.2f} -> {token_rms[-1, 1:].median():.0f}")
    """),
    code(r"""
    layers = range(-1, cfg.num_layers)  # -1: the scaled embedding
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.fill_between(layers, token_rms[:, 1:].min(dim=1).values, token_rms[:, 1:].max(dim=1).values,
                    alpha=0.3, label="other tokens (min..max)")
    ax.plot(layers, token_rms[:, 1:].median(dim=1).values, label="other tokens (median)")
    ax.plot(layers, token_rms[:, 0], "k--", label="<bos>")
    ax.set_yscale("log")
    ax.set_xticks(range(-1, cfg.num_layers, 2))
    ax.set_xlabel("after block (-1 = scaled embedding)")
    ax.set_ylabel("RMS of residual stream")
    ax.set_title("Gemma 3 270M: the residual stream grows ~1000x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    The stream grows by three orders of magnitude, yet every sublayer sees a unit-scale input,
    because it reads `attn_norm(x)` or `mlp_norm(x)`, never `x` itself (the "pre-norm" placement,
    see Xiong et al., 2020, *On Layer Normalization in the Transformer Architecture*). Check with our hand-written norm: it
    reproduces the real model's `blocks.3.attn_norm`, and before its gain every layer's
    normalised stream has RMS 1. The mean of each vector is small next to its RMS, so LayerNorm's
    re-centring would change little: one more reason dropping it is safe here.
    """),
    code(r"""
    block3 = model.blocks[3].attn_norm
    torch.testing.assert_close(rms_norm(acts["blocks.3.hook_resid_pre"], block3.weight.detach()),
                               acts["blocks.3.attn_norm.hook_normalized"])
    normalised = rms_norm(stream, torch.zeros(cfg.hidden_size))
    torch.testing.assert_close(normalised.pow(2).mean(dim=-1).sqrt(), torch.ones(token_rms.shape))
    mean_over_rms = (stream.mean(dim=-1).abs() / token_rms)[:, 1:]
    print(f"|mean| / RMS of the stream's vectors: median {mean_over_rms.median():.3f}, max {mean_over_rms.max():.2f}")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/02_embeddings_and_rmsnorm.py` (run by
    `tests/test_exercises_02.py`).

    1. **LayerNorm by hand.** Write `layer_norm(x, weight, bias, eps)` with the biased variance,
       check it against `F.layer_norm`, and show that with `weight=1, bias=0` it equals
       `rms_norm(x, zeros)` on zero-mean vectors.
    2. **Which widths survive bf16?** Write `embed_scale(hidden_size, dtype)` returning the factor
       the model really multiplies by. Among the hidden sizes 64, 128, ..., 4096, which ones have a
       $\sqrt{\text{hidden}}$ that bf16 stores exactly? Why those?
    3. **From GGUF's convention to ours.** A GGUF file stores each norm's multiplier $m = 1 + w$.
       Write `rmsnorm_from_multiplier(m)` returning a `minigemma.model.norm.RMSNorm` whose output is
       $x / \operatorname{RMS}(x) \cdot m$, and check it on `1 + model.ln_final.weight`.
    """),
    code(r"""
    def layer_norm(x, weight, bias, eps=1e-6):
        ...  # your code


    def embed_scale(hidden_size, dtype=torch.float32):
        ...  # your code


    def rmsnorm_from_multiplier(multiplier, eps=1e-6):
        ...  # your code

    # When your functions return something, check them, e.g.:
    # torch.testing.assert_close(layer_norm(v, torch.ones(640), torch.zeros(640)), F.layer_norm(v, (640,), eps=1e-6))
    """),
]


# --------------------------------------------------------------------------------------------
# 03: rotary position embeddings
# --------------------------------------------------------------------------------------------
NB03 = [
    md(r"""
    # 03 · Rotary position embeddings (RoPE)

    **What you will learn**
    - why attention needs to be told where each token is;
    - how RoPE encodes position by *rotating* queries and keys, derived from a 2-D rotation;
    - how the rotation speeds (one per channel pair) spread over many orders of magnitude, and
      why Gemma 3 uses two bases: 10,000 for local layers and 1,000,000 for global ones;
    - a numerical check that after RoPE the score $q \cdot k$ depends only on the *relative*
      position of the two tokens;
    - a hand-written RoPE, checked against `minigemma.model.rope.apply_rope`, transformers'
      `apply_rotary_pos_emb`, and the queries inside the real Gemma 3 270M.

    **Builds on** `02_embeddings_and_rmsnorm` (embeddings carry no position). **Next:**
    `04_attention`, where the rotated queries and keys meet.

    **Read along:** Su et al. (2021), *RoFormer: Enhanced Transformer with Rotary Position
    Embedding*, section 3; the Gemma report, section 2 ("Rotary Positional Embeddings");
    the Gemma 3 report, section 2 (local and global layers, RoPE base 10k and 1M).
    """),
    code(r"""
    import math

    import torch
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.model.rope import apply_rope, rope_cos_sin, rope_frequencies

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)
    cfg = model.config
    """),
    md(r"""
    ## 1. Attention is blind to order

    An embedding is a row lookup (notebook 02): the vector of "dog" is the same wherever "dog"
    stands. Attention mixes these vectors with weights computed from dot products, and a dot
    product does not know where its two vectors came from. "the dog bit the man" and "the man
    bit the dog" are made of exactly the same vectors:
    """),
    code(r"""
    a = tok.encode("the dog bit the man")
    b = tok.encode("the man bit the dog")
    E = model.embed.weight.detach()
    print(a, b)
    assert sorted(a) == sorted(b) and a != b
    torch.testing.assert_close(E[a].sum(dim=0), E[b].sum(dim=0))  # any order-blind summary cannot tell them apart
    """),
    md(r"""
    The original Transformer *added* a sinusoidal position vector to each embedding (Vaswani et
    al., 2017, section 3.5). RoPE instead **rotates** the query and the key just before their dot
    product, by an angle proportional to the token's position. Why a rotation? We want the score
    of a query at position $m$ and a key at position $n$ to depend on $n - m$ only. In 2-D, with
    $R(\alpha)$ the rotation by $\alpha$:

    $$\big(R(m\theta)\,q\big)^\top \big(R(n\theta)\,k\big) = q^\top R(m\theta)^\top R(n\theta)\,k = q^\top R\big((n-m)\theta\big)\,k$$

    because $R(\alpha)^\top = R(-\alpha)$ and rotations add their angles. The absolute positions
    cancel; only the offset is left (RoFormer, section 3.2.1).
    """),
    code(r"""
    def rotation(angle: float) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        return torch.tensor([[c, -s], [s, c]])

    theta = 0.3  # radians per position
    q2, k2 = torch.tensor([1.0, 0.5]), torch.tensor([0.2, -1.0])

    def score_2d(m: int, n: int) -> float:
        return ((rotation(m * theta) @ q2) @ (rotation(n * theta) @ k2)).item()

    for m, n in [(3, 1), (10, 8), (1000, 998), (3, 2)]:
        print(f"query at {m:4d}, key at {n:4d} (offset {m - n}): score {score_2d(m, n):+.4f}")
    """),
    code(r"""
    assert math.isclose(score_2d(3, 1), score_2d(1000, 998), abs_tol=1e-5)  # same offset, same score
    assert not math.isclose(score_2d(3, 1), score_2d(3, 2), abs_tol=1e-3)   # another offset, another score
    """),
    md(r"""
    ## 2. From 2-D to `head_dim` dimensions: many clocks

    A head has `head_dim` = 256 channels, so RoPE cuts them into 128 pairs and rotates pair $i$
    at its own speed $\theta_i = \text{base}^{-2i/d}$ (RoFormer, section 3.2.2). Pair 0 turns one radian
    per token, like a seconds hand; the last pairs barely move over thousands of tokens, like an
    hour hand. Nearby tokens are told apart by the fast pairs, distant ones by the slow pairs.

    Which two channels form a pair is a convention. The RoFormer paper pairs neighbours
    $(x_0, x_1), (x_2, x_3), \dots$; gemma_pytorch, transformers and llama.cpp's Gemma code pair
    channel $i$ with channel $i + d/2$ ("rotate half"). Same rotations, channels permuted
    (exercise 1). Checkpoints are trained in one layout, so we must use theirs: rotate-half.
    """),
    code(r"""
    def rope_by_hand(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
        half = x.shape[-1] // 2
        freqs = 1.0 / base ** (torch.arange(half, dtype=torch.float32) * 2 / x.shape[-1])  # (d/2,) radians per position
        angles = positions.float()[:, None] * freqs[None, :]                                # (seq, d/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x[..., :half].float(), x[..., half:].float()  # pair i = (x1[i], x2[i])
        # each pair (x1, x2) -> R(angle) (x1, x2), all pairs at once
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
    """),
    md(r"""
    Check against the package (`rope_frequencies`, `rope_cos_sin`, `apply_rope`) and against
    transformers, whose `GemmaRotaryEmbedding` builds its own cos/sin tables. Queries are shaped
    (batch, heads, seq, head_dim); positions are integers, and every angle is computed in float32
    (pitfall 4 in [docs/pitfalls.md](../docs/pitfalls.md), exercise 3).
    """),
    code(r"""
    import transformers
    from transformers.models.gemma.modeling_gemma import GemmaRotaryEmbedding, apply_rotary_pos_emb

    q = torch.randn(1, 4, 10, 256)  # (batch, heads, seq, head_dim)
    k = torch.randn(1, 1, 10, 256)  # one key/value head, as in Gemma 3 270M
    positions = torch.arange(10)

    half = torch.arange(128, dtype=torch.float32)
    torch.testing.assert_close(rope_frequencies(256, 10_000.0), 1.0 / 10_000.0 ** (half * 2 / 256))
    cos, sin = rope_cos_sin(positions, head_dim=256, theta=10_000.0)  # (seq, head_dim) each
    torch.testing.assert_close(rope_by_hand(q, positions, 10_000.0), apply_rope(q, cos, sin))

    hf_rope = GemmaRotaryEmbedding(transformers.GemmaConfig(
        head_dim=256, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}))
    hf_cos, hf_sin = hf_rope(q, positions[None])  # (1, seq, head_dim)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(rope_by_hand(q, positions, 10_000.0), hf_q)
    torch.testing.assert_close(rope_by_hand(k, positions, 10_000.0), hf_k)
    """),
    md(r"""
    Watch one vector turn. We put a 1 in channel $i$ and follow the pair $(i, i + 128)$ as the
    same vector is placed at positions 0 to 15: the fast pair 0 laps the circle more than twice,
    pair 24 covers about half a turn, pair 48 hardly moves.
    """),
    code(r"""
    steps = torch.arange(16)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8), dpi=80)
    for ax, i in zip(axes, [0, 24, 48]):
        v = torch.zeros(1, 256)
        v[0, i] = 1.0
        rotated = rope_by_hand(v.expand(16, 256), steps, 10_000.0)  # (16 positions, 256)
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.8"))
        ax.scatter(rotated[:, i], rotated[:, i + 128], c=steps, cmap="viridis", s=18, zorder=2)
        ax.plot([0, rotated[-1, i]], [0, rotated[-1, i + 128]], color="0.3", lw=1)
        ax.set_title(f"pair {i}: {1 / 10_000 ** (2 * i / 256):.3f} rad/token", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("the same vector at positions 0..15 (colour = position; line = position 15)", fontsize=9)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    A rotation never changes a vector's length, so RoPE moves information around within each
    pair but never scales it. And how many positions does pair $i$ need for a full turn? Its
    wavelength $2\pi / \theta_i$, from $2\pi \approx 6$ tokens up to tens of thousands (base 10k)
    or millions (base 1M):
    """),
    code(r"""
    torch.testing.assert_close(rope_by_hand(q, positions, 10_000.0).norm(dim=-1), q.norm(dim=-1))

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for base, label in [(cfg.rope_local_theta, "base 10k (local layers)"), (cfg.rope_theta, "base 1M (global layers)")]:
        ax.plot(2 * math.pi / rope_frequencies(cfg.head_dim, base), label=label)
    ax.axhline(cfg.sliding_window, color="0.5", ls=":", label=f"sliding window ({cfg.sliding_window})")
    ax.axhline(cfg.max_position_embeddings, color="0.5", ls="--", label=f"context ({cfg.max_position_embeddings:,})")
    ax.set_yscale("log")
    ax.set_xlabel("channel pair i")
    ax.set_ylabel("wavelength (tokens)")
    ax.set_title("one full turn of each channel pair, head_dim 256")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 3. Only the offset matters: a numerical check

    In 256 dimensions the 2-D argument holds pair by pair, so it holds for the whole dot product.
    Same offset, different absolute positions, same score:
    """),
    code(r"""
    q1, k1 = torch.randn(1, 256), torch.randn(1, 256)

    def score(m: int, n: int, base: float = 10_000.0) -> float:
        rq = rope_by_hand(q1, torch.tensor([m]), base)
        rk = rope_by_hand(k1, torch.tensor([n]), base)
        return (rq @ rk.T).item()

    for m, n in [(5, 2), (105, 102), (4005, 4002), (5, 3)]:
        print(f"query {m:5d}, key {n:5d}, offset {m - n}: {score(m, n):+.2f}")
    """),
    code(r"""
    # angles near 4000 radians keep ~4 significant digits in float32, hence the tolerance
    assert math.isclose(score(5, 2), score(105, 102), abs_tol=1e-3)
    assert math.isclose(score(5, 2), score(4005, 4002), abs_tol=1e-2)
    assert not math.isclose(score(5, 2), score(5, 3), abs_tol=0.1)
    """),
    md(r"""
    The same check over a whole sequence: put `q1` and `k1` at every position 0..63 and compute
    all 64 x 64 scores. If only $m - n$ matters, the matrix is constant along each diagonal
    (a Toeplitz matrix).
    """),
    code(r"""
    pos = torch.arange(64)
    rq = rope_by_hand(q1.expand(64, 256), pos, 10_000.0)  # (64, 256): q1 at every position
    rk = rope_by_hand(k1.expand(64, 256), pos, 10_000.0)
    scores = rq @ rk.T                                     # (query position m, key position n)
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], atol=1e-4, rtol=1e-4)
    print("score at offsets 0, 1, 2:", [round(scores.diagonal(-o)[0].item(), 3) for o in range(3)])
    """),
    md(r"""
    ## 4. Two bases in Gemma 3

    Gemma 1 used base 10,000 everywhere. Gemma 3 interleaves 5 *local* layers, which only see a
    sliding window of recent tokens (512 in the 270M), with 1 *global* layer that sees the whole
    context, and raises the global layers' base to 1,000,000 for long contexts while the local
    layers keep 10,000 (Gemma 3 report, section 2). A larger base means slower clocks: in the
    wavelength plot the 1M curve sits two orders of magnitude higher.

    What that changes: RoFormer (section 3.4.3) notes a *long-term decay*, the score between a
    query and a matching key shrinks as they move apart. Take a key equal to the query, a vector
    of ones; its score at offset $\Delta$, divided by its score at offset 0, is the mean of
    $\cos(\Delta\,\theta_i)$ over the pairs. With base 10k it has decayed to noise a few thousand
    tokens out; with 1M it is still well above zero across the whole 32k context. Local layers
    never look further than 512 tokens, where both bases still work.
    """),
    code(r"""
    offsets = torch.logspace(0, math.log10(cfg.max_position_embeddings), 200)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for base, label in [(cfg.rope_local_theta, "base 10k"), (cfg.rope_theta, "base 1M")]:
        similarity = torch.cos(offsets[:, None] * rope_frequencies(cfg.head_dim, base)[None, :]).mean(dim=1)
        ax.plot(offsets, similarity, label=label)
    ax.axvline(cfg.sliding_window, color="0.5", ls=":", label="sliding window")
    ax.set_xscale("log")
    ax.set_xlabel("offset between query and key (tokens)")
    ax.set_ylabel("mean cos(offset * theta_i)")
    ax.set_title("a key compared with itself further away")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    The real model: each layer's attention module knows its base and window. Layers 5, 11 and 17
    are global.
    """),
    code(r"""
    for layer, block in enumerate(model.blocks):
        kind = "local " if block.attn.window else "global"
        print(f"layer {layer:2d}: {kind} window {str(block.attn.window):>4s}  RoPE base {block.attn.rope_theta:>11,.0f}")
    assert [L for L in range(cfg.num_layers) if not cfg.is_local_layer(L)] == [5, 11, 17]
    """),
    md(r"""
    Last check, on the real weights: rebuild layer 0's (local) and layer 5's (global) queries
    from the attention input, rotate them with `rope_by_hand`, and compare with what the model
    computed (`blocks.{L}.attn.hook_q` sees the queries right after RoPE). Gemma 3 normalises each
    query head with an RMSNorm before rotating (QK-norm, notebook 04).
    """),
    code(r"""
    ids = tok.encode("Rotary embeddings turn every query by its position.", add_bos=True)
    points = dict(model.named_modules())
    acts = {}
    names = [f"blocks.{L}.{n}" for L in (0, 5) for n in ("attn_norm.hook_normalized", "attn.hook_q")]
    handles = [points[n].register_forward_hook(lambda module, inputs, output, n=n: acts.update({n: output}))
               for n in names]
    with torch.no_grad():
        model(torch.tensor([ids]), last_only=True)
    for handle in handles:
        handle.remove()

    positions = torch.arange(len(ids))
    for layer in (0, 5):
        attn = model.blocks[layer].attn
        x = acts[f"blocks.{layer}.attn_norm.hook_normalized"]  # (1, seq, hidden): the attention's input
        with torch.no_grad():
            q_raw = attn.q_proj(x).view(1, len(ids), attn.num_heads, attn.head_dim).transpose(1, 2)
            q_raw = attn.q_norm(q_raw)  # (1, heads, seq, head_dim), before RoPE
        torch.testing.assert_close(rope_by_hand(q_raw, positions, attn.rope_theta), acts[f"blocks.{layer}.attn.hook_q"])
        print(f"layer {layer}: hand-rotated queries match the model (base {attn.rope_theta:,.0f})")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/03_rope.py` (run by `tests/test_exercises_03.py`).

    1. **The paper's layout.** Write `rope_interleaved(x, positions, theta)` that rotates the
       neighbouring pairs $(x_0, x_1), (x_2, x_3), \dots$ as in RoFormer, and a permutation of the
       channels (0, 128, 1, 129, ...) under which it equals `rope_by_hand`. Check that the
       relative-position property still holds.
    2. **Who turns inside the window?** Write `wavelengths(head_dim, theta)` and
       `pairs_turning_within(span, head_dim, theta)`. How many of the 128 pairs complete a full
       turn inside a local layer's 512-token window (base 10k)? Inside the 32,768-token context,
       for base 10k and for base 1M?
    3. **Why positions stay integers.** What is the first positive integer that bfloat16
       cannot store? (`torch.tensor(257.0, dtype=torch.bfloat16)`.) If positions were stored in
       bf16, by how many radians would pair 0's angle be off at position 5001? And in float32?
    """),
    code(r"""
    def rope_interleaved(x, positions, theta):
        ...  # your code


    def pairs_turning_within(span, head_dim, theta):
        ...  # your code

    print(torch.tensor(5001.0, dtype=torch.bfloat16).item())  # a start for exercise 3
    """),
]


# --------------------------------------------------------------------------------------------
# 04: attention
# --------------------------------------------------------------------------------------------
NB04 = [
    md(r"""
    # 04 · Attention: causal masks, shared key/value heads, the KV cache

    **What you will learn**
    - scaled dot-product attention and why it divides by $\sqrt{d}$;
    - the causal mask, and what real attention patterns of Gemma 3 270M look like;
    - multi-head (Gemma 7B), multi-query (Gemma 2B) and grouped-query (Gemma 3) attention:
      you write one function for all three and check it against `minigemma.model.attention.Attention`;
    - what the KV cache costs in memory for Gemma 2B and 7B at 8192 tokens, computed from the
      presets, and why multi-query attention makes it 16x smaller per layer;
    - a cached decode on the real model that matches the uncached one, and proof that it really
      uses the cache;
    - a preview of Gemma 3's sliding-window attention.

    **Builds on** `02_embeddings_and_rmsnorm` (the normalised input, QK-norm) and `03_rope`
    (rotated queries and keys). **Next:** `05_geglu`, the other half of every block.

    **Read along:** Vaswani et al. (2017), *Attention Is All You Need*, sections 3.2.1-3.2.3;
    Shazeer (2019), *Fast Transformer Decoding: One Write-Head is All You Need* (multi-query);
    Ainslie et al. (2023), *GQA: Training Generalized Multi-Query Transformer Models from
    Multi-Head Checkpoints*; the Gemma report, section 2 ("Multi-Query Attention"); the Gemma 3
    report, section 2 (5 local : 1 global layers, QK-norm).
    """),
    code(r"""
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.model.attention import Attention, KVCache, attention_mask
    from minigemma.decoding.generate import generate_ids
    from minigemma.model.rope import apply_rope, rope_cos_sin

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)
    cfg = model.config
    """),
    md(r"""
    ## 1. Scaled dot-product attention

    Every position emits a **query** ("what am I looking for"), a **key** ("what do I contain")
    and a **value** ("what I pass on"). A query scores each key with a dot product, a softmax
    turns the scores into weights that sum to 1, and the output is the weighted mean of the
    values (Vaswani et al., section 3.2.1):

    $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt{d}}\Big)\,V$$

    Why divide by $\sqrt{d}$? The dot product of two random vectors with unit-variance entries
    has variance $d$. With $d = 256$ scores would spread over $\pm 16$ or more, and the softmax
    would put almost all weight on one key, with vanishing gradients everywhere else. (Gemma 1
    divides by √`head_dim`; Gemma 2 and 3 by √`query_pre_attn_scalar`,
    which is 256 in the 270M: the same number.)
    """),
    code(r"""
    q_rand, k_rand = torch.randn(10_000, 256), torch.randn(10_000, 256)
    raw = (q_rand * k_rand).sum(dim=-1)  # 10,000 dot products
    print(f"std of q.k: {raw.std():.1f}   after / sqrt(256): {(raw / 16).std():.2f}")
    assert 15 < raw.std() < 17 and 0.9 < (raw / 16).std() < 1.1
    """),
    code(r"""
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) * scale           # (..., q_len, k_len)
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: a masked key gets no weight at all
        return scores.softmax(dim=-1) @ v                  # (..., q_len, head_dim)
    """),
    md(r"""
    ## 2. The causal mask

    A language model predicts token $t + 1$ from tokens $\le t$. In training (and in the prompt
    pass) all positions are computed at once, so position $t$ must be stopped from reading the
    answer: query $t$ may only look at keys $\le t$, a lower-triangular mask.
    """),
    code(r"""
    positions = torch.arange(6)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()  # row = query position, column = key position
    print(causal.int())
    assert torch.equal(causal, attention_mask(positions, positions, window=None))
    """),
    md(r"""
    Check `attend` against PyTorch's fused kernel (`F.scaled_dot_product_attention`, which never
    materialises the score matrix), and check causality itself: changing the last token's key
    and value must leave every earlier output untouched.
    """),
    code(r"""
    q, k, v = torch.randn(3, 1, 4, 6, 16).unbind(0)  # each (batch, heads, seq, head_dim)
    out = attend(q, k, v, causal, scale=16 ** -0.5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    k2, v2 = k.clone(), v.clone()
    k2[..., -1, :], v2[..., -1, :] = 100.0, -100.0  # tamper with the future
    out2 = attend(q, k2, v2, causal, scale=16 ** -0.5)
    torch.testing.assert_close(out2[..., :-1, :], out[..., :-1, :])  # the past cannot see it
    assert not torch.allclose(out2[..., -1, :], out[..., -1, :])
    """),
    md(r"""
    What does the real model do with this? Record the attention weights
    (`blocks.{L}.attn.hook_pattern`, shaped (batch, head, query, key)) on a sentence said twice.
    Layer 2's head 3 mostly looks at the **previous token**; layer 5's head 3 is an
    **induction head**: in the second copy it looks at the token that *followed* the current
    token last time, the model's way of continuing a pattern it has seen (Olsson et al., 2022).
    (The same pass also keeps what enters the attention of layers 0 and 5, for section 3.)
    """),
    code(r"""
    ids = tok.encode("The cat sat on the mat. The cat sat on the mat.", add_bos=True)
    labels = [tok.decode([i]) or "<bos>" for i in ids]
    points = dict(model.named_modules())
    patterns, attn_inputs = {}, {}
    handles = [points[f"blocks.{L}.attn.hook_pattern"].register_forward_hook(
        lambda module, args, output, L=L: patterns.update({L: output[0]})) for L in (2, 5)]
    handles += [points[f"blocks.{L}.attn_norm.hook_normalized"].register_forward_hook(
        lambda module, args, output, L=L: attn_inputs.update({L: output})) for L in (0, 5)]
    with torch.no_grad():
        model(torch.tensor([ids]), last_only=True)
    for handle in handles:
        handle.remove()

    n, half = len(ids), (len(ids) - 1) // 2  # <bos> + two copies of 7 tokens
    previous = torch.stack([patterns[2][3, i, i - 1] for i in range(1, n)]).mean().item()
    induction = torch.stack([patterns[5][3, i, i - half + 1] for i in range(half + 1, n)]).mean().item()
    print(f"layer 2 head 3: mean weight on the previous token {previous:.2f}")
    print(f"layer 5 head 3: mean weight on the token after the earlier copy {induction:.2f}")
    assert previous > 0.5 and induction > 0.5
    assert torch.all(patterns[2].triu(diagonal=1) == 0)  # causal: nothing above the diagonal
    """),
    code(r"""
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8), dpi=80)
    panels = [(attention_mask(torch.arange(n), torch.arange(n), None).float(), "causal mask"),
              (patterns[2][3], "layer 2, head 3: previous token"),
              (patterns[5][3], "layer 5, head 3: induction")]
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=6)
    axes[0].set_ylabel("query")
    axes[1].set_xlabel("key")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 3. Many heads, shared keys and values: MHA, MQA, GQA

    One softmax can only look for one kind of thing, so a layer runs several heads in parallel,
    each with its own projections, and concatenates their outputs (Vaswani et al., section 3.2.2).
    When generating, every step must read all stored keys and values of every head: for long
    contexts that memory traffic dominates. **Multi-query** attention (Shazeer, 2019) keeps many
    query heads but only *one* key/value head that all of them share: Gemma 2B does this. The
    7B model keeps ordinary **multi-head** attention (Gemma report, section 2: multi-query worked
    well at the small scale). **Grouped-query** attention (Ainslie et al., 2023) sits between:
    $G$ key/value heads, each shared by a group of query heads; Gemma 3 uses it, and its
    smallest model, the 270M, sits at the multi-query end with a single key/value head.
    """),
    code(r"""
    print(f"{'preset':14s} {'query heads':>11s} {'kv heads':>9s} {'group':>6s} {'head_dim':>9s}   kind")
    for name in ["gemma-7b", "gemma-2b", "gemma3-270m", "tiny-gemma-mha", "tiny-gemma", "tiny-gemma3"]:
        c = minigemma.get_config(name)
        kind = "multi-head" if c.num_kv_heads == c.num_heads else "multi-query" if c.num_kv_heads == 1 else "grouped-query"
        print(f"{name:14s} {c.num_heads:11d} {c.num_kv_heads:9d} {c.num_heads // c.num_kv_heads:6d} {c.head_dim:9d}   {kind}")
    c7 = minigemma.get_config("gemma-7b")
    assert c7.num_heads * c7.head_dim == 4096 != c7.hidden_size == 3072  # see the next cell
    """),
    md(r"""
    One function covers all three: project, split into heads, (Gemma 3) normalise each query and
    key head with an RMSNorm (QK-norm, notebook 02's norm), rotate (notebook 03), let each key/value
    head serve its group of query heads, attend, merge the heads, project back. Note
    `head_dim` comes from the config, never `hidden // heads`: the 7B has 16 heads of 256 = 4096,
    wider than its hidden size of 3072.
    """),
    code(r"""
    def attention_by_hand(attn: Attention, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        H, K, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q = (x @ attn.q_proj.weight.T).view(b, s, H, D).transpose(1, 2)  # (b, H, s, D)
        k = (x @ attn.k_proj.weight.T).view(b, s, K, D).transpose(1, 2)  # (b, K, s, D)
        v = (x @ attn.v_proj.weight.T).view(b, s, K, D).transpose(1, 2)  # (b, K, s, D)
        if attn.q_norm is not None:  # Gemma 3: QK-norm
            q, k = attn.q_norm(q), attn.k_norm(k)
        cos, sin = rope_cos_sin(positions, D, attn.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(H // K, dim=1)  # (b, H, s, D): query head h reads key/value head h // group
        v = v.repeat_interleave(H // K, dim=1)
        mask = attention_mask(positions, positions, attn.window)
        z = attend(q, k, v, mask, attn.scale)         # (b, H, s, D)
        z = z.transpose(1, 2).reshape(b, s, H * D)    # heads side by side
        return z @ attn.o_proj.weight.T               # (b, s, hidden)
    """),
    md(r"""
    Check against `minigemma.model.attention.Attention` on the three tiny presets (random weights,
    norms included: a zero-initialised norm would hide a wrong convention), 12 positions: longer
    than `tiny-gemma3`'s sliding window of 8, so its local layer 0 really forgets.
    """),
    code(r"""
    for name, layer in [("tiny-gemma-mha", 0), ("tiny-gemma", 0), ("tiny-gemma3", 0), ("tiny-gemma3", 2)]:
        c = minigemma.get_config(name)
        attn = Attention(c, layer)
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_(0, 0.2)
            x, pos = torch.randn(2, 12, c.hidden_size), torch.arange(12)
            torch.testing.assert_close(attention_by_hand(attn, x, pos), attn(x, pos))
        print(f"{name:14s} layer {layer}: {attn.num_heads} query heads, {attn.num_kv_heads} kv heads, "
              f"window {attn.window}: matches")
    """),
    md(r"""
    And the core against transformers' own Gemma 3 attention function, which repeats the
    key/value heads with its `repeat_kv` and takes an additive mask (0 or $-\infty$):
    """),
    code(r"""
    from transformers.models.gemma3.modeling_gemma3 import eager_attention_forward

    q = torch.randn(1, 4, 6, 16)  # 4 query heads
    k = torch.randn(1, 2, 6, 16)  # 2 key/value heads: groups of 2
    v = torch.randn(1, 2, 6, 16)
    additive = torch.zeros(6, 6).masked_fill(~causal, float("-inf"))[None, None]
    theirs, _ = eager_attention_forward(SimpleNamespace(num_key_value_groups=2, training=False), q, k, v,
                                        additive, scaling=0.25)           # (batch, seq, heads, head_dim)
    ours = attend(q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), causal, scale=0.25)
    torch.testing.assert_close(ours.transpose(1, 2), theirs)
    """),
    md(r"""
    Finally the real thing: layer 0 (local) and layer 5 (global) of Gemma 3 270M, on the input
    they really received in section 2 (the output of their `attn_norm`).
    """),
    code(r"""
    with torch.no_grad():
        for L in (0, 5):
            attn = model.blocks[L].attn
            # Equal to float rounding: the matmuls sum 640 products, in an order that depends on the CPU.
            torch.testing.assert_close(attention_by_hand(attn, attn_inputs[L], torch.arange(n)),
                                       attn(attn_inputs[L], torch.arange(n)), rtol=1e-4, atol=1e-4)
    print("attention_by_hand reproduces layers 0 and 5 of the real model")
    """),
    md(r"""
    ## 4. The KV cache, and what it costs

    Causality has a useful consequence: the keys and values of token $t$ depend only on tokens
    $\le t$, so they never change once computed. When generating, we keep them in a **KV cache**
    and each new token computes only its own query, key and value. The price is memory, per
    sequence:

    $$\text{bytes} = 2\,(\text{k and v}) \times \text{layers} \times \text{kv heads} \times \text{head dim} \times \text{positions} \times \text{bytes per value}$$

    Here sharing key/value heads pays off. `KVCache` can be created on PyTorch's `meta` device,
    which records shapes without allocating anything, so we can ask for the real size of a 7B
    cache at no cost:
    """),
    code(r"""
    BF16 = 2  # bytes per value
    sizes = {}
    for name in ["gemma-2b", "gemma-7b"]:
        c = minigemma.get_config(name)
        per_layer_per_token = 2 * c.num_kv_heads * c.head_dim * BF16
        total = c.num_layers * 8192 * per_layer_per_token
        assert KVCache(c, batch=1, max_len=8192, device="meta", dtype=torch.bfloat16).memory_bytes() == total
        sizes[name] = (per_layer_per_token, total)
        print(f"{name}: {c.num_kv_heads:2d} kv heads x {c.head_dim} x 2 (k, v) x 2 bytes = {per_layer_per_token:6,} bytes "
              f"per layer per token; x {c.num_layers} layers x 8192 tokens = {total:,} bytes ({total / 2**20:,.0f} MiB)")
    (per_2b, total_2b), (per_7b, total_7b) = sizes["gemma-2b"], sizes["gemma-7b"]
    assert per_7b == 16 * per_2b
    print(f"per layer 7B / 2B = {per_7b // per_2b}x; whole cache {total_7b / total_2b:.1f}x (7B also has 28 layers, not 18)")
    """),
    md(r"""
    For scale: the 2B's weights take about 5 GB in bf16, so its full-context cache (144 MiB) is
    a rounding error, while the 7B's 3.5 GiB per sequence is a fifth of its 17 GB of weights, and
    grows with every sequence in a batch. The plot adds the cache the 2B *would* need with
    ordinary multi-head attention (8 key/value heads). The 270M's cache per token is the same as
    the 2B's: 18 layers with one key/value head of 256 each.
    """),
    code(r"""
    lengths = torch.arange(0, 8193, 256)
    variants = [minigemma.get_config("gemma-7b"), minigemma.get_config("gemma-2b").replace(name="2b as multi-head", num_kv_heads=8),
                minigemma.get_config("gemma-2b")]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for c in variants:
        per_token = c.num_layers * 2 * c.num_kv_heads * c.head_dim * BF16
        ax.plot(lengths, lengths * per_token / 2**20, label=f"{c.name} ({c.num_kv_heads} kv heads, {c.num_layers} layers)")
    ax.set_xlabel("tokens in the cache")
    ax.set_ylabel("KV cache, MiB (bf16)")
    ax.set_title("KV-cache memory per sequence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 5. A cached decode on the real model

    The model takes a cache and continues from `cache.length`. Feed the prompt except its last
    token (the "prefill"), then the last token **alone**: its logits must equal those of a full
    forward pass over the whole prompt.
    """),
    code(r"""
    prompt = tok.encode("Paris is the capital of", add_bos=True)
    with torch.no_grad():
        full = model(torch.tensor([prompt]), last_only=True)    # (1, 1, vocab): no cache, whole prompt
        cache = model.new_cache(batch=1, max_len=32)
        model(torch.tensor([prompt[:-1]]), cache=cache, last_only=True)  # prefill
        print("cache.length after the prefill:", cache.length)
        step = model(torch.tensor([prompt[-1:]]), cache=cache)  # one token in, (1, 1, vocab) out
        print("cache.length after one more token:", cache.length)
    torch.testing.assert_close(step[0, -1], full[0, -1], atol=1e-4, rtol=1e-4)
    print("next token, full pass:", repr(tok.decode([int(full[0, -1].argmax())])),
          " cached step:", repr(tok.decode([int(step[0, -1].argmax())])))
    """),
    md(r"""
    Is the cache really used? Its buffers hold exactly `cache.length` filled positions, and the
    same lone token fed *without* the cache, so without the memory of the prompt, gives an
    entirely different prediction:
    """),
    code(r"""
    filled = cache.k[0][0, 0].abs().sum(dim=-1) > 0  # layer 0, batch 0, kv head 0: which positions hold a key
    print("positions holding keys:", filled.nonzero().flatten().tolist())
    assert filled.sum() == cache.length == len(prompt)

    with torch.no_grad():
        alone = model(torch.tensor([prompt[-1:]]))  # (1, 1, vocab): " of" at position 0, nothing before it
    print(f"largest logit difference without the cache: {(alone[0, -1] - full[0, -1]).abs().max():.0f}")
    print("next token without the cache:", repr(tok.decode([int(alone[0, -1].argmax())])))
    assert not torch.allclose(alone[0, -1], full[0, -1], atol=1.0)
    """),
    md(r"""
    Now a whole greedy generation through the cache with `minigemma.decoding.generate.generate_ids`: one
    prefill, then one token per step. Without a cache, step $t$ would have to re-read the whole
    sequence so far. To check that nothing drifted, one uncached pass over the final sequence
    must predict, at every position, the token the cached loop chose there.
    """),
    code(r"""
    new_tokens = 6
    cached = list(generate_ids(model, prompt, max_new_tokens=new_tokens))
    print("continuation:", repr(tok.decode(cached)))
    print("tokens fed per step: with the cache", [len(prompt)] + [1] * (new_tokens - 1),
          " without:", list(range(len(prompt), len(prompt) + new_tokens)))

    with torch.no_grad():
        replay = model(torch.tensor([prompt + cached]))  # (1, len(prompt) + new_tokens, vocab), no cache
    uncached = replay[0, len(prompt) - 1:-1].argmax(dim=-1).tolist()  # what each position predicts next
    assert cached == uncached
    """),
    md(r"""
    ## 6. Preview: sliding-window attention

    Gemma 3's local layers (5 of every 6) add a second condition to the causal mask: a query
    sees only the last `window` keys, itself included (Gemma 3 report, section 2; the 270M's
    window is 512 tokens). Global layers still see everything, so information can travel far, but only the
    global layers need to keep the whole history in their cache (exercise 1 counts the saving;
    minigemma's simple cache keeps every position and lets the mask do the forgetting).
    """),
    code(r"""
    window, length = 4, 10
    pos = torch.arange(length)
    sliding = attention_mask(pos, pos, window)
    print(sliding.int())
    by_hand = torch.ones(length, length, dtype=torch.bool).tril() & ~torch.ones(length, length, dtype=torch.bool).tril(-window)
    assert torch.equal(sliding, by_hand)
    assert sliding.sum(dim=1).tolist() == [min(i + 1, window) for i in range(length)]
    print("270M layers:", "".join("L" if cfg.is_local_layer(i) else "G" for i in range(cfg.num_layers)))
    """),
    code(r"""
    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=80)
    for ax, (m, title) in zip(axes, [(attention_mask(pos, pos, None), "global layer: causal"),
                                     (sliding, f"local layer: window {window}")]):
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position")
    axes[0].set_ylabel("query position")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/04_attention.py` (run by `tests/test_exercises_04.py`).

    1. **Cache sizes.** Write `kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=2,
       windowed=False)`. Check it against `KVCache(..., device="meta").memory_bytes()` for the
       2B and 7B. With `windowed=True`, local layers keep only their last `sliding_window`
       positions: how much smaller is the 270M's bf16 cache at 32,768 tokens? (Notebook 07
       comes back to this.)
    2. **From multi-head to grouped-query.** Ainslie et al. (2023, section 2.1) turn a multi-head
       checkpoint into a grouped-query one by *mean-pooling* the key and value projections of
       each group. Write `mha_to_gqa(attn, config, num_kv_heads)` for an `Attention` built from
       `tiny-gemma-mha`. When the heads of each group already share their keys and values, the
       converted module must give exactly the same output: check it.
    3. **The decoding loop.** Write `greedy_with_cache(model, prompt_ids, max_new_tokens)` using
       `model.new_cache` and `last_only=True`, and check it gives the same ids as
       `generate_ids` on a tiny random model (and on the real one, if you like).
    """),
    code(r"""
    def kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=2, windowed=False):
        ...  # your code


    def mha_to_gqa(attn, config, num_kv_heads):
        ...  # your code


    def greedy_with_cache(model, prompt_ids, max_new_tokens):
        ...  # your code
    """),
]


NOTEBOOKS = {
    "02": ("02_embeddings_and_rmsnorm.ipynb", NB02),
    "03": ("03_rope.ipynb", NB03),
    "04": ("04_attention.ipynb", NB04),
}


def build(key: str) -> Path:
    filename, cells = NOTEBOOKS[key]
    return write_notebook(cells, filename, id_prefix=key)  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    for key in sys.argv[1:] or sorted(NOTEBOOKS):
        print(build(key))

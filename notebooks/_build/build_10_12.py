"""Write notebooks 10-12 from the cells below (then execute them with nbconvert).

    .venv/bin/python notebooks/_build/build_10_12.py            # all three
    .venv/bin/python notebooks/_build/build_10_12.py 11         # one
    for nb in notebooks/1[012]_*.ipynb; do
        .venv/bin/jupyter nbconvert --to notebook --execute --inplace "$nb"; done

Cells that display a live widget start with `# NBVAL_IGNORE_OUTPUT` (a widget's state cannot
be compared); the cells after them drive the same widget from code and print what it shows,
and those outputs are compared.
"""

from __future__ import annotations

import sys

from nbcells import code, md, write_notebook


# --------------------------------------------------------------------------------------------
# 10: sampling
# --------------------------------------------------------------------------------------------
NB10 = [
    md(r"""
    # 10 · Sampling: greedy, temperature, top-k, top-p

    **What you will learn**
    - how the model's logits become a probability for every one of 262,144 next tokens;
    - greedy decoding, and why always taking the favourite is not the end of the story;
    - temperature, top-k and top-p (nucleus) sampling as formulas: you write each in a few
      lines and check it against `minigemma.decoding.sampling.next_token_probs`, the function
      `minigemma.generate` samples from;
    - why top-p adapts to the model's confidence where top-k cannot, measured on real text;
    - a **sampler playground**: drag the three knobs and watch the distribution being cut,
      then sample token by token (each step reuses the KV cache).

    **Builds on** `06_the_model` (logits) and `04_attention` (the KV cache). **Next:**
    `11_attention_explorer` (looking inside the forward pass).

    **Read along:** Holtzman et al. (2019), *The Curious Case of Neural Text Degeneration*
    (sections 3-4: top-k and nucleus sampling); Fan et al. (2018), *Hierarchical Neural Story
    Generation* (top-k); Ackley, Hinton & Sejnowski (1985) for the temperature of a softmax.
    """),
    code(r"""
    import torch
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.explore import viz
    from minigemma.decoding.sampling import next_token_probs
    from minigemma.explore.widgets import sampler_playground

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)
    """),
    md(r"""
    ## 1. From logits to probabilities

    The model ends with one score (logit) $z_i$ per vocabulary entry. The softmax turns them
    into a distribution, $p_i = e^{z_i} / \sum_j e^{z_j}$. Generation only needs the last
    position, so we ask for `last_only=True`.
    """),
    code(r"""
    prompt = "Once upon a time, in a small village by the sea, there lived a"
    ids = tok.encode(prompt, add_bos=True)  # Gemma always starts with BOS
    with torch.no_grad():
        logits = model(torch.tensor([ids]), last_only=True)[0, -1]  # (vocab,) scores for the next token
    probs = logits.softmax(-1)
    top = probs.topk(8)
    for p, i in zip(top.values, top.indices):
        print(f"{tok.decode([int(i)])!r:>12}  {p:.4f}")
    print(f"the top 8 hold {top.values.sum():.2f} of the probability; {probs.numel():,} tokens share the rest")
    assert abs(float(probs.sum()) - 1) < 1e-4
    """),
    md(r"""
    ## 2. Greedy decoding

    Greedy takes the argmax at every step. It is deterministic and often fine for short
    factual answers, but a whole text made of "most likely next tokens" tends to be bland and
    to fall into loops, because the most likely continuation of a repetition is more
    repetition (Holtzman et al., section 3). `next_token_probs` writes greedy as
    temperature 0: all the mass on the argmax.
    """),
    code(r"""
    greedy_id = int(logits.argmax())
    assert next_token_probs(logits, temperature=0.0)[greedy_id] == 1.0
    greedy_text = minigemma.generate(model, tok, prompt, max_new_tokens=30, temperature=0.0)
    print(repr(greedy_text))
    assert greedy_text.startswith(tok.decode([greedy_id]))
    """),
    md(r"""
    ## 3. Temperature

    Divide the logits by $T$ before the softmax: $p_i(T) = \dfrac{e^{z_i/T}}{\sum_j e^{z_j/T}}$.
    The ranking never changes; only the contrast does. $T < 1$ widens the gaps (sharper,
    more conservative), $T > 1$ shrinks them (flatter, more adventurous); $T \to 0$ is
    greedy and $T \to \infty$ is uniform. The **entropy** $H = -\sum_i p_i \log_2 p_i$ (in
    bits) measures how spread out the distribution is, and it grows with $T$.
    """),
    code(r"""
    def with_temperature(logits: torch.Tensor, T: float) -> torch.Tensor:
        return (logits.float() / T).softmax(-1)


    def entropy_bits(p: torch.Tensor) -> float:
        return float(-(p * p.clamp_min(1e-30).log2()).sum())


    for T in (0.5, 1.0, 1.5):
        torch.testing.assert_close(with_temperature(logits, T), next_token_probs(logits, T))

    temperatures = [0.25, 0.5, 1.0, 1.5, 2.0]
    entropies = [entropy_bits(with_temperature(logits, T)) for T in temperatures]
    tops = [float(with_temperature(logits, T).max()) for T in temperatures]
    for T, H, top_p in zip(temperatures, entropies, tops):
        # One decimal for H: a float32 sum over 262,144 tokens, whose order differs between CPUs.
        print(f"T = {T:<4}  entropy {H:4.1f} bits   top token {top_p:.3f}")
    assert all(a < b for a, b in zip(entropies, entropies[1:]))  # hotter = flatter
    assert all(a > b for a, b in zip(tops, tops[1:]))            # colder = the favourite gains
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    order = logits.topk(10).indices
    labels = viz.token_labels(tok, order.tolist())
    for shift, T in zip((-0.27, 0, 0.27), (0.5, 1.0, 1.5)):
        ax.bar(torch.arange(10) + shift, with_temperature(logits, T)[order], width=0.27, label=f"T = {T}")
    ax.set_xticks(range(10), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title("the same ten tokens at three temperatures", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 4. Top-k

    Keep only the $k$ most likely tokens, set every other logit to $-\infty$, and renormalise
    (Fan et al., 2018). It removes the long tail of unlikely tokens, each tiny but together
    often a large share, where incoherent continuations hide. Its weakness: $k$ is fixed,
    whatever the model's confidence.
    """),
    code(r"""
    def top_k_probs(logits: torch.Tensor, k: int, T: float = 1.0) -> torch.Tensor:
        z = logits.float() / T
        kth = z.topk(k).values[-1]                       # the k-th largest logit
        return z.masked_fill(z < kth, float("-inf")).softmax(-1)


    for k in (1, 5, 40):
        torch.testing.assert_close(top_k_probs(logits, k), next_token_probs(logits, 1.0, top_k=k))
        assert int((top_k_probs(logits, k) > 0).sum()) == k
    print("top-5 renormalised:", [round(float(p), 3) for p in top_k_probs(logits, 5)[order[:5]]])
    """),
    md(r"""
    ## 5. Top-p (nucleus sampling)

    Sort the probabilities, $p_{(1)} \ge p_{(2)} \ge \dots$, and keep the smallest number $m$
    of top tokens whose total reaches $p$:

    $$m = \min\Big\{ m : \sum_{i=1}^{m} p_{(i)} \ge p \Big\}$$

    then renormalise over those $m$ (Holtzman et al., section 3.1). The token that crosses
    the threshold is kept, so at least one token always survives.
    """),
    code(r"""
    def top_p_probs(logits: torch.Tensor, top_p: float, T: float = 1.0) -> torch.Tensor:
        p = (logits.float() / T).softmax(-1)
        sorted_p, order_p = p.sort(descending=True)
        m = int((sorted_p.cumsum(0) < top_p).sum()) + 1  # tokens needed to reach top_p
        keep = order_p[:m]
        out = torch.zeros_like(p)
        out[keep] = p[keep] / p[keep].sum()
        return out


    def size_text(n: int) -> str:
        # n below 100 exactly, from 100 on as "100+", "200+", "500+", "1,000+", ... A large nucleus
        # ends among many tokens of nearly equal probability, so its exact size moves with the last
        # bits of the logits, which differ between CPUs; these steps do not.
        if n < 100:
            return str(n)
        return f"{max(b * 10**k for k in range(2, 7) for b in (1, 2, 5) if b * 10**k <= n):,}+"


    for q in (0.3, 0.9, 0.95):
        torch.testing.assert_close(top_p_probs(logits, q), next_token_probs(logits, 1.0, top_p=q))
        print(f"top-p {q}: {size_text(int((top_p_probs(logits, q) > 0).sum()))} tokens kept")
    """),
    md(r"""
    Why is this better than top-k? The size of the nucleus follows the model's confidence.
    Below, the same `top_p = 0.9` at every position of a sentence: where the next token is
    obvious (the end of a well-known phrase) one or two tokens survive; where anything could
    follow, hundreds do. A fixed $k$ is too many for the first case and too few for the second.
    """),
    code(r"""
    sentence = "The quick brown fox jumps over the lazy dog. My favourite food is"
    s_ids = tok.encode(sentence, add_bos=True)
    with torch.no_grad():
        s_logits = model(torch.tensor([s_ids]))[0]  # (seq, vocab): a prediction after every token
    nucleus = [int((next_token_probs(z, 1.0, top_p=0.9) > 0).sum()) for z in s_logits]
    s_labels = viz.token_labels(tok, s_ids)
    for piece, n in zip(s_labels, nucleus):
        print(f"after {piece!r:>12}: {size_text(n):>6} tokens in the 0.9 nucleus")
    assert min(nucleus) <= 2 and max(nucleus) > 100
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.bar(range(len(nucleus)), nucleus, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xticks(range(len(nucleus)), s_labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("tokens kept (log scale)")
    ax.set_title("size of the top-p = 0.9 nucleus after each token", fontsize=10)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    **Order matters.** `next_token_probs` applies temperature first, then top-k, then top-p
    (transformers does the same). A higher temperature flattens the distribution, so the same
    `top_p` then needs more tokens.
    """),
    code(r"""
    for T in (0.7, 1.0, 1.3):
        kept = int((next_token_probs(logits, T, top_p=0.9) > 0).sum())
        print(f"T = {T}: {size_text(kept)} tokens in the 0.9 nucleus")
        torch.testing.assert_close(next_token_probs(logits, T, top_p=0.9), top_p_probs(logits, 0.9, T))
    """),
    md(r"""
    ## 6. Drawing a token

    Sampling draws one index with these probabilities (`torch.multinomial`). Over many draws
    the frequencies approach the probabilities; a seeded generator makes the draws, and so
    the generated text, repeatable.
    """),
    code(r"""
    g = torch.Generator().manual_seed(0)
    p5 = next_token_probs(logits, 1.0, top_k=5)
    draws = torch.multinomial(p5, 5000, replacement=True, generator=g)
    freq = torch.bincount(draws, minlength=p5.numel()).float() / 5000
    for i in order[:5]:
        print(f"{tok.decode([int(i)])!r:>12}  p = {p5[i]:.3f}   seen {freq[i]:.3f}")
    assert (freq - p5).abs().max() < 0.03 and freq[p5 == 0].sum() == 0  # cut tokens are never drawn

    a = minigemma.generate(model, tok, prompt, max_new_tokens=12, temperature=0.8, top_p=0.9, seed=1)
    b = minigemma.generate(model, tok, prompt, max_new_tokens=12, temperature=0.8, top_p=0.9, seed=1)
    print(repr(a))
    assert a == b
    """),
    md(r"""
    ## 7. The sampler playground

    Drag the sliders: the bars are `next_token_probs` itself, so what you see is exactly what
    gets sampled. Blue bars can be drawn (their length is the probability they are drawn
    with); grey hatched bars are cut (their length is what they had before the cut).
    **sample / step** draws a token from the blue bars, appends it, and runs the model on
    that one token only: everything before it is in the KV cache. Type a new prompt to start
    over. (The widget needs a live kernel; the cells after it drive it from code.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    playground = sampler_playground(model, tok, prompt, seed=0)
    playground
    """),
    code(r"""
    playground.temperature.value = 0.8
    playground.top_p.value = 0.9
    print(f"{playground.data['num_kept']} tokens can be sampled at T = 0.8, top-p = 0.9")
    assert playground.data["num_kept"] == int((next_token_probs(logits, 0.8, top_p=0.9) > 0).sum())

    start = playground.cache.length
    for _ in range(6):
        playground.step()
    print(repr(tok.decode(playground.new_ids)))
    assert playground.cache.length == start + 6  # each step fed its token back: one new cache entry each
    """),
    code(r"""
    playground.top_k.value = 3
    assert len([p for p in playground.figures["chart"].axes[0].patches if p.get_gid() == "kept"]) == 3
    viz.sampler_figure(playground.data, viz.token_labels(tok, playground.data["ids"]))
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/10_sampling.py` (run by `tests/test_exercises_10.py`).

    1. **Min-p sampling.** Keep only the tokens whose probability is at least `min_p` times
       the top token's, then renormalise (Nguyen et al., 2024). Write
       `min_p_probs(logits, min_p, temperature=1.0)` and compare it with transformers'
       `MinPLogitsWarper`. How many tokens does `min_p = 0.1` keep at each position of the
       sentence in section 5?
    2. **A temperature for a target entropy.** Entropy grows with $T$, so a bisection finds
       the $T$ that gives, say, 3 bits. Write `temperature_for_entropy(logits, target_bits)`.
    3. **Repetition penalty.** CTRL (Keskar et al., 2019, section 4.1) discourages tokens
       already in the text: divide their logit by a penalty $\theta > 1$ when it is positive,
       multiply when negative. Write `repetition_penalty(logits, previous_ids, penalty)`,
       check it against transformers' `RepetitionPenaltyLogitsProcessor`, then use it in a
       greedy loop of 80 tokens: does the text change where the plain greedy text starts to
       reuse its own words?
    """),
    code(r"""
    def min_p_probs(logits, min_p, temperature=1.0):
        ...  # your code


    def temperature_for_entropy(logits, target_bits):
        ...  # your code


    def repetition_penalty(logits, previous_ids, penalty):
        ...  # your code
    """),
]


# --------------------------------------------------------------------------------------------
# 11: attention explorer
# --------------------------------------------------------------------------------------------
NB11 = [
    md(r"""
    # 11 · Looking at attention in the real Gemma 3 270M

    **What you will learn**
    - how to read any activation while the model runs: named **hook points** and
      `run_with_cache`, which returns the logits and every cached tensor (and leaves the
      model exactly as fast as before);
    - what the 72 heads (18 layers x 4) of the real 270M actually do on text:
      **attention sinks** on the BOS token, **previous-token heads**, **induction heads** that
      copy from an earlier occurrence;
    - Gemma 3's **local layers** at work: past 512 tokens their attention is exactly zero;
    - an **attention explorer**: pick a layer and head, see its pattern and a summary of all heads.

    **Builds on** `04_attention` (the attention formula, masks, sliding windows) and
    `07_gemma1_to_gemma3` (local and global layers). **Next:** `12_logit_lens`.

    **Read along:** the Gemma 3 report (Gemma Team, 2025), section 2 (5 local : 1 global
    layers, window size); Xiao et al. (2023), *Efficient Streaming Language Models with
    Attention Sinks*; Olsson et al. (2022), *In-context Learning and Induction Heads*;
    Elhage et al. (2021), *A Mathematical Framework for Transformer Circuits* (the residual
    stream view and the hook names TransformerLens made familiar).
    """),
    code(r"""
    import numpy as np
    import torch
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.explore import viz
    from minigemma.explore.inspection import hook_names, run_with_cache
    from minigemma.explore.widgets import attention_explorer

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)
    cfg = model.config
    """),
    md(r"""
    ## 1. Hook points

    Every tensor worth looking at passes through a `HookPoint`, a module that does nothing
    but return its input. Being a module gives it a name inside the model, and PyTorch lets
    us attach a *forward hook* to it that reads or replaces the tensor. The names follow
    TransformerLens: `hook_resid_pre` is the residual stream entering a block,
    `attn.hook_pattern` the softmax weights `(batch, head, query, key)`, `attn.hook_z` each
    head's output before `o_proj`.
    """),
    code(r"""
    names = hook_names(model)
    print(len(names), "hook points; in block 0:")
    print([n for n in names if n.startswith("blocks.0.") and "norm" not in n])
    """),
    md(r"""
    `run_with_cache` attaches a hook that saves the tensor at each chosen point, runs the
    model once, and removes every hook again. Caching only reads, so the logits do not
    change. (When `hook_pattern` is cached, attention switches from PyTorch's fused kernel,
    which never materialises the weights, to the explicit softmax, which agrees to float
    rounding; with nothing hooked the fused kernel runs, so hooks cost nothing when unused.)
    """),
    code(r"""
    text = "The cat sat on the mat. The dog sat on the rug. The cat"
    ids = tok.encode(text, add_bos=True)
    labels = viz.token_labels(tok, ids)
    with torch.no_grad():
        plain = model(torch.tensor([ids]))
    logits, cache = run_with_cache(model, ids, "hook_pattern")  # a substring picks the names
    torch.testing.assert_close(logits, plain, rtol=1e-4, atol=1e-4)
    assert not any(m._forward_hooks for m in model.modules())  # nothing left behind
    assert not model.blocks[0].attn.hook_pattern.active       # back on the fused kernel

    patterns = np.stack([cache[f"blocks.{i}.attn.hook_pattern"][0].numpy() for i in range(cfg.num_layers)])
    print("patterns:", patterns.shape, "(layers, heads, query, key)")
    np.testing.assert_allclose(patterns.sum(-1), 1, rtol=1e-5)  # each row is a distribution
    assert np.all(np.triu(patterns, k=1) == 0)                 # causal: no weight on the future
    """),
    md(r"""
    ## 2. One head's pattern

    Row $q$ of a pattern is where token $q$ takes its information from. Here is layer 3,
    head 1, a local layer (though with a 512-token window, a short text never reaches the edge).
    """),
    code(r"""
    viz.attention_figure(patterns[3, 1], labels, "layer 3 (local), head 1")
    """),
    md(r"""
    ## 3. Attention sinks

    A head has to put its weight *somewhere*: softmax rows sum to 1. When a head has nothing
    useful to read, it parks the weight on a token that carries little information, and in
    practice that is the first one, BOS (Xiao et al., 2023, call it an *attention sink*).
    The grid shows, for every layer and head, the mean weight on position 0.
    """),
    code(r"""
    local = [cfg.is_local_layer(i) for i in range(cfg.num_layers)]
    sinks = viz.head_summary(patterns, "first token")
    print(f"mean weight on BOS over all heads: {sinks.mean():.2f}; heads above 0.5: {(sinks > 0.5).sum()} of {sinks.size}")
    assert sinks.mean() > 0.3
    viz.head_summary_figure(sinks, "first token", local)
    """),
    md(r"""
    ## 4. Previous-token heads

    A head that always looks one token back lets the next layers know "which token came
    before me", the first ingredient of copying (Elhage et al., 2021). Score each head by its
    mean weight on the previous token and look at the best one.
    """),
    code(r"""
    prev = viz.head_summary(patterns, "previous token")
    L_prev, H_prev = np.unravel_index(prev.argmax(), prev.shape)
    print(f"best previous-token head: layer {L_prev}, head {H_prev}, score {prev.max():.2f}")
    assert prev.max() > 0.5
    viz.attention_figure(patterns[L_prev, H_prev], labels, f"layer {L_prev}, head {H_prev}: previous-token head")
    """),
    md(r"""
    ## 5. Induction heads

    Give the model 20 random tokens, then the same 20 again. The first copy is unpredictable;
    the second is easy *if* the model looks up where the current token appeared before and
    copies what followed it. Heads that do this lookup are **induction heads** (Olsson et al.,
    2022): a query in the second copy attends to the token *after* its earlier occurrence,
    a stripe `period - 1` positions below the diagonal.
    """),
    code(r"""
    period = 20
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1000, 20_000, (period,), generator=g).tolist()
    rep_ids = [tok.bos_id] + r + r
    rep_logits, rep_cache = run_with_cache(model, rep_ids, "hook_pattern")

    nll = torch.nn.functional.cross_entropy(rep_logits[0, :-1], torch.tensor(rep_ids[1:]), reduction="none")
    first, second = nll[:period].mean(), nll[period + 1:].mean()
    print(f"loss on the first copy {first:.1f} nats, on the second {second:.1f}")
    assert second < first / 3

    q = np.arange(period + 1, 2 * period + 1)  # queries in the second copy
    induction = np.stack([rep_cache[f"blocks.{i}.attn.hook_pattern"][0][:, q, q - period + 1].mean(-1).numpy()
                          for i in range(cfg.num_layers)])
    L_ind, H_ind = np.unravel_index(induction.argmax(), induction.shape)
    print(f"best induction head: layer {L_ind}, head {H_ind}, score {induction.max():.2f}")
    assert induction.max() > 0.5
    """),
    code(r"""
    rep_labels = [str(i) for i in range(len(rep_ids))]
    viz.attention_figure(rep_cache[f"blocks.{L_ind}.attn.hook_pattern"][0, H_ind], rep_labels,
                         f"layer {L_ind}, head {H_ind} on repeated random tokens")
    """),
    md(r"""
    ## 6. Local windows

    Gemma 3's local layers see only the last 512 tokens (Gemma 3 report, section 2), which
    keeps their KV cache small; every 6th layer is global. To see the window at work we need
    a text longer than 512 tokens. We cache just two patterns (layer 4, local, and layer 5,
    global) and ask only for the last position's logits, to keep this cheap.
    """),
    code(r"""
    animals = ["cat", "dog", "fox", "owl", "bee"]
    long_text = " ".join(f"Line {i}: the {animals[i % 5]} walked {i % 7 + 2} steps." for i in range(48))
    long_ids = tok.encode(long_text, add_bos=True)
    print(len(long_ids), "tokens")
    assert len(long_ids) > cfg.sliding_window + 50

    names = ["blocks.4.attn.hook_pattern", "blocks.5.attn.hook_pattern"]
    _, long_cache = run_with_cache(model, long_ids, names, last_only=True)
    last_local = long_cache[names[0]][0, :, -1]   # (heads, keys): the last query's weights
    last_global = long_cache[names[1]][0, :, -1]
    edge = len(long_ids) - cfg.sliding_window      # keys before this index are out of the window
    print(f"local layer 4: weight beyond the window {last_local[:, :edge].sum():.1f}")
    print(f"global layer 5: weight beyond the window {last_global[:, :edge].sum(-1).mean():.3f} per head")
    assert torch.all(last_local[:, :edge] == 0) and last_global[:, :edge].sum() > 0
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    keys = np.arange(len(long_ids))
    ax.plot(keys, last_local.mean(0), label="layer 4 (local), mean of heads", lw=1)
    ax.plot(keys, last_global.mean(0), label="layer 5 (global), mean of heads", lw=1, alpha=0.8)
    ax.axvline(edge - 0.5, color="tab:red", ls="--", lw=1, label="window edge")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1)
    ax.set_xlabel("key position")
    ax.set_ylabel("weight of the last query")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 7. The attention explorer

    Everything above in one widget: slide through layers and heads (the title says whether
    the layer is local or global and which key/value head the query head shares), and pick
    what the grid on the right summarises: previous-token weight, BOS weight, mean distance
    looked back, or entropy. The outlined cell is the head on the left. (It needs a live
    kernel; the cell after it drives it from code.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    explorer = attention_explorer(model, tok, text)
    explorer
    """),
    code(r"""
    explorer.layer.value, explorer.head.value = int(L_prev), int(H_prev)
    print(explorer.figures["heatmap"].axes[0].get_title())
    np.testing.assert_allclose(explorer.figures["heatmap"].axes[0].images[0].get_array(), patterns[L_prev, H_prev])
    explorer.summary.value = "distance"
    print("grid:", explorer.figures["summary"].axes[0].get_title())
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/11_attention_explorer.py` (run by `tests/test_exercises_11.py`).

    1. **Scores by hand.** Write `prev_token_scores(cache, num_layers)` that reads the
       patterns from a cache and returns the (layers, heads) previous-token scores; check it
       against `viz.head_summary(..., "previous token")`.
    2. **Induction scores.** Wrap section 5 into `induction_scores(model, period, seed)`. Are
       the same heads the best induction heads for other seeds and periods? Is the best
       induction head in a layer after the best previous-token head, as the two-step
       circuit of Olsson et al. needs?
    3. **How far can information travel?** A local layer reads up to `window - 1` positions
       back, and stacked local layers add up. Write `receptive_field(config, layers)`
       (None once a global layer is included), then check it on `tiny-gemma3` (window 8):
       change token 0 and see which positions of `blocks.{L}.hook_resid_post` change.
    """),
    code(r"""
    def prev_token_scores(cache, num_layers):
        ...  # your code


    def induction_scores(model, period=20, seed=0):
        ...  # your code


    def receptive_field(config, layers):
        ...  # your code
    """),
]


# --------------------------------------------------------------------------------------------
# 12: logit lens
# --------------------------------------------------------------------------------------------
NB12 = [
    md(r"""
    # 12 · The logit lens: watching a prediction form, layer by layer

    **What you will learn**
    - the residual stream as a running sum that each block adds to, checked on cached activations;
    - the **logit lens**: read the residual stream after any layer through the final norm
      and the unembedding, as if the model stopped there; the last layer reproduces the
      model's output exactly;
    - at which layer the real 270M "knows" the answer to a simple factual prompt;
    - **ablation**: remove one attention head, find the one this prediction depends on
      most, and see the logits change;
    - two explorers: the lens as an interactive heatmap, and the text coloured by how
      surprising each token was.

    **Builds on** `11_attention_explorer` (hooks, `run_with_cache`) and `10_sampling`
    (probabilities, entropy). **Next:** chat and the command line (`00_quickstart` showed them).

    **Read along:** nostalgebraist (2020), *interpreting GPT: the logit lens*; Belrose et al.
    (2023), *Eliciting Latent Predictions from Transformers with the Tuned Lens* (where the
    plain lens falls short); Elhage et al. (2021), *A Mathematical Framework for Transformer
    Circuits*; the Gemma report, section 2 (tied embeddings).
    """),
    code(r"""
    import numpy as np
    import torch
    import matplotlib.pyplot as plt

    import minigemma
    from minigemma.explore import viz
    from minigemma.explore.inspection import (ablate_head, hooks, lens_filter, logit_lens, logit_lens_table,
                                      run_with_cache)
    from minigemma.explore.widgets import logit_lens_explorer, token_view

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)
    cfg = model.config
    """),
    md(r"""
    ## 1. The residual stream is a sum

    Each block reads the residual stream and *adds* its attention output and its MLP output
    to it (in Gemma 3 each output is normalised first, the "sandwich" norms). So the stream
    after layer $L$ is the embedding plus everything layers $0..L$ wrote.
    """),
    code(r"""
    prompt = "The capital of France is Paris. The capital of Germany is"
    ids = tok.encode(prompt, add_bos=True)
    labels = viz.token_labels(tok, ids)
    logits, cache = run_with_cache(model, ids, lambda n: lens_filter(n) or "hook_attn_out" in n or "hook_mlp_out" in n)
    total = cache["hook_embed"] + sum(cache[f"blocks.{i}.hook_attn_out"] + cache[f"blocks.{i}.hook_mlp_out"]
                                      for i in range(cfg.num_layers))
    # Equal up to rounding: 37 float32 vectors summed in another order, with entries in the thousands.
    torch.testing.assert_close(total, cache[f"blocks.{cfg.num_layers - 1}.hook_resid_post"], rtol=1e-4, atol=1e-2)
    answer = tok.decode([int(logits[0, -1].argmax())])
    print("the model's next token:", repr(answer))
    """),
    md(r"""
    ## 2. The logit lens

    The model turns its final residual stream into logits with `ln_final` and the (tied)
    unembedding. Nothing stops us from applying the same two steps to the stream after
    *any* layer. The last row must give the model's own logits; the first row (the
    embedding itself) mostly predicts the input token back, because the unembedding is the
    embedding matrix.
    """),
    code(r"""
    lens = logit_lens(model, cache)  # (layers + 1, batch, seq, vocab)
    print("lens:", tuple(lens.shape))
    # The same numbers as the model's output, through a matmul of another shape (all layers at
    # once), which a BLAS may sum in another order: equal to float rounding, not bit for bit.
    torch.testing.assert_close(lens[-1], logits, rtol=1e-4, atol=1e-4)
    back = (lens[0, 0].argmax(-1) == torch.tensor(ids)).float().mean()
    print(f"the embedding row predicts the input token itself at {back:.0%} of positions")
    """),
    code(r"""
    def rank_text(rank: int) -> str:
        # Far down the list thousands of tokens have nearly equal logits, so a large rank moves
        # with the last bits of the arithmetic, which differ between CPUs: show its order of magnitude.
        return f"{rank}" if rank < 100 else f"> {10 ** (len(str(rank)) - 1):,}"


    answer_id = int(logits[0, -1].argmax())
    p_answer = lens[:, 0, -1].softmax(-1)[:, answer_id]
    rank = (lens[:, 0, -1] > lens[:, 0, -1, answer_id:answer_id + 1]).sum(-1)
    table = logit_lens_table(model, cache)
    for row, label in enumerate(table.labels):
        top = tok.decode([int(table.top_ids[row, -1, 0])])
        print(f"{label:>9}: top {top!r:>14} ({table.top_probs[row, -1, 0]:.2f})   "
              f"{answer!r} rank {rank_text(int(rank[row])):>9}, p = {p_answer[row]:.3f}")
    first = int((rank == 0).nonzero()[0])
    print(f"{answer!r} is first on top at row {table.labels[first]!r}")
    assert int(rank[-1]) == 0
    """),
    code(r"""
    cells = [[viz.label(tok.id_to_piece(int(i)), 8) for i in row[:, 0]] for row in table.top_ids]
    viz.logit_lens_figure(table.top_probs[..., 0], cells, table.labels, labels)
    """),
    md(r"""
    Reading the heatmap: the early rows are noise plus the input token itself; the
    continuation of the pattern "The capital of X is" shows up only in the upper half.
    The lens is a rough instrument: the intermediate streams were never trained to be read by
    the final norm (the tuned lens of Belrose et al. learns a small map per layer to fix
    that), but even untrained it shows *when* the answer becomes available.
    """),
    md(r"""
    ## 3. Ablating a head

    To test whether a head matters, remove it and see what breaks. `ablate_head(layer,
    head)` is a hook on `blocks.{layer}.attn.hook_z` that zeroes that head's output before
    `o_proj`, which is the same as deleting its columns of `o_proj`. We try all 72 heads
    and measure how much the log-probability of the answer drops. Rather than 72 forward
    passes, one pass over a batch of 72 copies of the prompt, where row $b$ loses its own
    head: rows of a batch never interact, so each row is an independent experiment (and
    the next cells check one row against a plain `ablate_head` run).
    """),
    code(r"""
    x = torch.tensor([ids])
    experiments = [(layer, head) for layer in range(cfg.num_layers) for head in range(cfg.num_heads)]


    def ablate_one_head_per_row(layer: int):
        # Batch row b removes head experiments[b] when it is in this layer: 72 experiments, one forward.
        rows = [b for b, (L, _) in enumerate(experiments) if L == layer]
        heads = [experiments[b][1] for b in rows]

        def edit(z, name):  # z: (batch, seq, heads, head_dim)
            z = z.clone()
            z[rows, :, heads] = 0  # pairs (row, head): each row loses its own head
            return z
        return edit


    edits = {f"blocks.{layer}.attn.hook_z": ablate_one_head_per_row(layer) for layer in range(cfg.num_layers)}
    with torch.no_grad():
        base = model(x, last_only=True)[0, -1].log_softmax(-1)
        with hooks(model, edits):
            ablated_all = model(x.expand(len(experiments), -1), last_only=True)[:, -1].log_softmax(-1)
    effect = (ablated_all[:, answer_id] - base[answer_id]).reshape(cfg.num_layers, cfg.num_heads).numpy()
    L_abl, H_abl = np.unravel_index(effect.argmin(), effect.shape)
    print(f"most important head: layer {L_abl}, head {H_abl}: log p({answer!r}) changes by {effect.min():.2f}")
    print(f"median change over all heads: {np.median(effect):.3f}")
    assert not any(m._forward_hooks for m in model.modules())
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    im = ax.imshow(effect, cmap="RdBu", vmin=-abs(effect).max(), vmax=abs(effect).max(), aspect="auto")
    ax.set_xticks(range(cfg.num_heads), [f"head {h}" for h in range(cfg.num_heads)], fontsize=8)
    ax.set_yticks(range(cfg.num_layers), [f"{i} {'local' if cfg.is_local_layer(i) else 'GLOBAL'}"
                                          for i in range(cfg.num_layers)], fontsize=7)
    ax.set_title(f"change in log p({answer.strip()}) when one head is removed", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    plt.show()
    """),
    code(r"""
    with torch.no_grad(), hooks(model, ablate_head(int(L_abl), int(H_abl))):
        ablated = model(x, last_only=True)[0, -1]
    before, after = base.exp(), ablated.softmax(-1)
    print(f"{'token':>14}  before  after ablating layer {L_abl} head {H_abl}")
    for i in before.topk(6).indices:
        print(f"{tok.decode([int(i)])!r:>14}  {before[i]:.3f}   {after[i]:.3f}")
    assert after[answer_id] < before[answer_id]
    row = experiments.index((L_abl, H_abl))
    torch.testing.assert_close(ablated.log_softmax(-1), ablated_all[row], rtol=1e-4, atol=1e-4)  # the batch trick is exact

    # The same edit by surgery: zero that head's input columns of o_proj in a copy of the weights.
    o_proj = model.blocks[int(L_abl)].attn.o_proj
    saved = o_proj.weight.detach().clone()
    with torch.no_grad():
        o_proj.weight[:, H_abl * cfg.head_dim:(H_abl + 1) * cfg.head_dim] = 0
        surgery = model(x, last_only=True)[0, -1]
        o_proj.weight.copy_(saved)
    torch.testing.assert_close(surgery, ablated, rtol=1e-4, atol=1e-4)
    """),
    md(r"""
    ## 4. The lens explorer

    The lens as a widget: switch between the top token of each cell and the probability of
    the token that actually comes next (how early each next token becomes predictable), and
    choose which positions to show. (It needs a live kernel; the cell after it drives it.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    lens_explorer = logit_lens_explorer(model, tok, prompt)
    lens_explorer
    """),
    code(r"""
    lens_explorer.mode.value = "actual next token"
    values, cell_labels = lens_explorer.table()
    print("rows x positions:", values.shape, "; last row (the model), next-token probabilities:")
    print([f"{p:.2f}" for p in values[-1, :-1]])
    np.testing.assert_allclose(values[-1, -1], np.nan)  # the last position has no next token yet
    """),
    md(r"""
    ## 5. Surprise, token by token

    The same numbers from the other side: colour every token by its **surprisal**
    $-\log_2 p(\text{token} \mid \text{before})$, in bits, or by the **entropy** of the
    prediction made just before it (how unsure the model was). Their mean over a text is the
    cross-entropy; $2^{\text{mean surprisal}}$ is the perplexity.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    view = token_view(model, tok, "The capital of France is Paris. The capital of Germany is Berlin. "
                                  "The capital of Italy is Madrid.")
    view
    """),
    code(r"""
    surprisal = view.stats["surprisal"]
    for piece, s in list(zip(view.labels, surprisal))[-4:]:
        print(f"{piece!r:>10}: {s:5.2f} bits")
    print(view.summary.value)
    assert surprisal[-2] > 3 * np.nanmedian(surprisal)  # "Madrid" is a wrong capital: a surprise
    viz.token_figure(view.labels, surprisal, "surprisal")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/12_logit_lens.py` (run by `tests/test_exercises_12.py`).

    1. **Rank through the layers.** Write `lens_rank(model, cache, position, target_id)`: for
       each lens row, how many tokens beat the target. Follow `" Berlin"` and `" Paris"` at
       the last position: does the model consider Paris (the capital it has just seen) before
       it settles on Berlin?
    2. **Activation patching.** Corrupt the prompt (Germany -> Italy, same token count), then
       for each layer copy the clean residual stream at the country's position into the
       corrupted run (`patch_position`). Write `patching_curve(model, clean_ids, corrupt_ids,
       position, answer_id)` returning the probability of `" Berlin"` for each layer. At which
       layer has the information left that position (Meng et al., 2022, "causal tracing")?
    3. **Copying needs attention.** On the repeated random tokens of notebook 11, write
       `copy_loss(model, ids, period, ablate=None)`, the mean loss over the second copy. How
       much does ablating the best induction head raise it? And ablating a random head?
    """),
    code(r"""
    def lens_rank(model, cache, position, target_id):
        ...  # your code


    def patching_curve(model, clean_ids, corrupt_ids, position, answer_id):
        ...  # your code


    def copy_loss(model, ids, period, ablate=None):
        ...  # your code
    """),
]


NOTEBOOKS = {"10": ("10_sampling.ipynb", NB10), "11": ("11_attention_explorer.ipynb", NB11),
             "12": ("12_logit_lens.ipynb", NB12)}


def main(which: list[str]) -> None:
    for key in which or list(NOTEBOOKS):
        name, cells = NOTEBOOKS[key]
        print("wrote", write_notebook(cells, name, id_prefix=key))  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    main(sys.argv[1:])

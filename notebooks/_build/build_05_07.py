"""Write notebooks 05-07 from the cells below (then execute them with nbconvert).

    .venv/bin/python notebooks/_build/build_05_07.py            # all three
    .venv/bin/python notebooks/_build/build_05_07.py 06         # one
    for nb in notebooks/0[567]_*.ipynb; do
        .venv/bin/jupyter nbconvert --to notebook --execute --inplace "$nb"; done
    .venv/bin/python notebooks/_build/build_05_07.py clean    # drop execution timestamps

Keeping the source here makes diffs reviewable and the cells easy to reorder; the executed
.ipynb files (outputs included, for nbval) are what readers open.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbcells import NOTEBOOKS_DIR as HERE
from nbcells import code, md, write_notebook


# --------------------------------------------------------------------------------------------
# 05: GeGLU
# --------------------------------------------------------------------------------------------
NB05 = [
    md(r"""
    # 05 · GeGLU: the feed-forward half of every block

    **What you will learn**
    - GELU, in its exact form $x\,\Phi(x)$ and in the tanh approximation Gemma was trained with,
      and how far apart the two are;
    - the bug of early 2024: Gemma's first configs said `hidden_act: "gelu"`, implementations read
      that as the exact form, and we measure on the real 270M what that does to the logits;
    - gating: GeGLU written by hand in three lines, checked against `minigemma.model.mlp.GeGLU` and
      transformers' `GemmaMLP`, and set beside the ReLU MLP of the original Transformer;
    - why the MLP holds most of the parameters of Gemma 2B and 7B (and not of the 270M).

    **Builds on** `02_embeddings_and_rmsnorm` (the MLP reads a normalised residual stream) and
    `04_attention` (the other sublayer of a block). **Next:** `06_the_model` puts both sublayers
    into a block and the blocks into the model.

    **Read along:** the Gemma report (Gemma Team, 2024), section 2, "GeGLU Activations";
    Hendrycks & Gimpel (2016), *Gaussian Error Linear Units (GELUs)*; Dauphin et al. (2017),
    *Language Modeling with Gated Convolutional Networks* (the GLU); Shazeer (2020), *GLU Variants
    Improve Transformer*.
    """),
    code(r"""
    %matplotlib inline
    import contextlib
    import math

    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    import minigemma
    import minigemma.model.mlp

    torch.manual_seed(0)
    torch.set_grad_enabled(False)               # inference only: no autograd bookkeeping
    transformers.logging.set_verbosity_error()  # keep transformers' warnings out of the outputs
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    cfg = model.config
    print(f"{cfg.name}: hidden {cfg.hidden_size}, MLP intermediate {cfg.intermediate_size}, {cfg.num_layers} layers")
    """),
    md(r"""
    ## 1. GELU: weigh the input by how likely it is to be positive

    ReLU keeps $x$ when $x > 0$ and drops it otherwise: a hard gate. GELU (Hendrycks & Gimpel,
    2016) makes the gate smooth: it multiplies $x$ by $\Phi(x)$, the probability that a standard
    normal variable is below $x$:

    $$\operatorname{GELU}(x) = x\,\Phi(x) = \tfrac{x}{2}\left(1 + \operatorname{erf}\!\left(x/\sqrt{2}\right)\right)$$

    For speed, the same paper also gives an approximation without erf,

    $$\operatorname{GELU}_{\tanh}(x) = \tfrac{x}{2}\left(1 + \tanh\!\left(\sqrt{2/\pi}\,\left(x + 0.044715\,x^3\right)\right)\right),$$

    which BERT and GPT-2 used, and which is the default of `jax.nn.gelu` (`approximate=True`):
    Gemma was trained in JAX with this form. Both, by hand:
    """),
    code(r"""
    def gelu_exact(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # x * Phi(x)


    def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    """),
    md(r"""
    Check them against PyTorch (`F.gelu` is exact by default, `approximate="tanh"` selects the
    other one) and against the function Gemma's MLP calls, `minigemma.model.mlp.gelu_tanh`:
    """),
    code(r"""
    x = torch.linspace(-6, 6, 2001)
    torch.testing.assert_close(gelu_exact(x), F.gelu(x))
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(gelu_tanh(x), minigemma.model.mlp.gelu_tanh(x))
    print("hand-written GELUs match F.gelu and minigemma.model.mlp.gelu_tanh")
    """),
    md(r"""
    Side by side they are indistinguishable; their difference (computed in float64, so it is not
    float32 rounding) is a wiggle of a few $10^{-4}$ that vanishes in both tails:
    """),
    code(r"""
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)
    x_wide = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    gap = gelu_exact(x_wide) - gelu_tanh(x_wide)  # (12001,)

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    left.plot(x, F.relu(x), ":", color="gray", label="ReLU")
    left.plot(x, gelu_exact(x), label="exact (erf)")
    left.plot(x, gelu_tanh(x), "--", label="tanh approximation")
    left.set(title="GELU", xlabel="x")
    left.legend(fontsize=8)
    right.plot(x_wide, gap)
    right.set(title="exact − tanh", xlabel="x")
    fig.tight_layout()
    plt.show()
    """),
    code(r"""
    worst = gap.abs().argmax()
    print(f"largest |exact - tanh| = {gap.abs().max():.2e} at x = ±{x_wide[worst].abs():.2f}")
    assert 4e-4 < gap.abs().max() < 5e-4
    """),
    md(r"""
    ## 2. The `hidden_act: "gelu"` bug

    The configs published with Gemma in February 2024 said `"hidden_act": "gelu"`. In
    transformers that string means the *exact* GELU, so in the first weeks after the release
    PyTorch implementations ran the weights with a slightly different non-linearity than the
    one they were trained with. It was spotted and fixed in March 2024
    (huggingface/transformers#29402, google/gemma_pytorch#37; other libraries followed).
    transformers now rewrites the legacy value when it reads a Gemma config:
    """),
    code(r"""
    legacy = transformers.GemmaConfig(hidden_act="gelu")
    print(legacy.hidden_act)
    assert legacy.hidden_act == "gelu_pytorch_tanh"
    """),
    md(r"""
    How much does the wrong GELU change the real model? `GeGLU.forward` looks up the name
    `gelu_tanh` in its module, `minigemma.model.mlp`, at every call, so we can swap in another function
    for the length of a `with` block. The `finally` puts the original back even if the forward
    pass fails: a model quietly left with the wrong activation would be the same bug again.
    """),
    code(r"""
    @contextlib.contextmanager
    def gate_activation(fn):
        # Run every GeGLU of minigemma with `fn` in place of the tanh GELU, then restore it.
        original = minigemma.model.mlp.gelu_tanh
        minigemma.model.mlp.gelu_tanh = fn
        try:
            yield
        finally:
            minigemma.model.mlp.gelu_tanh = original


    def logits_and_stream(ids: torch.Tensor):
        # Logits, and the residual stream after each block: read at the `hook_resid_post` hook points
        # (identity modules, see minigemma/model/hooks.py), whose forward hooks see the tensor going through.
        stream = []
        handles = [block.hook_resid_post.register_forward_hook(lambda module, inputs, output: stream.append(output))
                   for block in model.blocks]
        try:
            logits = model(ids)
        finally:
            for handle in handles:
                handle.remove()
        return logits, stream
    """),
    code(r"""
    TEXT = ("Gemma is a family of small open language models. Every layer reads the residual stream, "
            "looks back at earlier tokens, then sends each position through a gated feed-forward network.")
    ids = torch.tensor([tok.encode(TEXT, add_bos=True)])  # (1, seq)
    print(ids.shape[1], "tokens:", ids[0, :10].tolist(), "...")

    logits_tanh, stream_tanh = logits_and_stream(ids)
    with gate_activation(F.gelu):  # exact erf GELU, as with hidden_act "gelu"
        logits_exact, stream_exact = logits_and_stream(ids)
    """),
    md(r"""
    Check that the swap really happened and was really undone: the logits differ inside the
    `with` block, and after it the model gives bit-identical logits to before.
    """),
    code(r"""
    assert minigemma.model.mlp.gelu_tanh is not F.gelu
    assert not torch.equal(logits_exact, logits_tanh)
    assert torch.equal(model(ids), logits_tanh)
    """),
    code(r"""
    change = (logits_exact - logits_tanh).abs()                 # (1, seq, vocab)
    same_top1 = (logits_exact.argmax(-1) == logits_tanh.argmax(-1)).float().mean()
    top2 = logits_tanh[0].topk(2, dim=-1).values                # (seq, 2)
    print(f"largest logit change: {change.max():.2f} (mean {change.mean():.3f})")
    print(f"same top-1 token at {same_top1:.0%} of {ids.shape[1]} positions")
    print(f"smallest gap between the top two logits in this text: {(top2[:, 0] - top2[:, 1]).min():.2f}")
    assert 1e-3 < change.max() < 0.2 and same_top1 == 1.0
    """),
    md(r"""
    On this 18-layer model the wrong activation moves logits by a few hundredths and the top
    choice never changes here: quiet, which is why it went unnoticed. But a shift of a few
    hundredths is the size of the near-ties that decide greedy text (see the smallest top-2 gap
    in this very text), so long generations can part ways; and any parity test at
    $10^{-5}$ (the tolerance our tests use against transformers) catches it at once.

    Where does the difference come from? It enters in every MLP and the residual stream carries
    it forward, so it builds up with depth:
    """),
    code(r"""
    relative = [((e - t).norm() / t.norm()).item() for e, t in zip(stream_exact, stream_tanh)]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.semilogy(range(cfg.num_layers), relative, "o-")
    ax.set(xlabel="layer", ylabel="relative change", xticks=range(0, cfg.num_layers, 2),
           title="exact vs tanh GELU: residual stream after each block")
    fig.tight_layout()
    plt.show()
    assert relative[-1] > 2 * relative[0]
    """),
    md(r"""
    ## 3. Gating: GLU and GeGLU

    Dauphin et al. (2017) introduced the gated linear unit: two linear maps of the same input,
    one squashed into a gate in $(0, 1)$ by a sigmoid, multiplied elementwise with the other,
    $\sigma(xW) \odot xV$. One path decides *how much* of each feature passes, the other carries
    *what* passes. Shazeer (2020) swapped the sigmoid for other functions and tried them as the
    Transformer's feed-forward layer; with GELU it is **GeGLU**, Gemma's MLP (report, section 2):

    $$\operatorname{MLP}(x) = \big(\operatorname{GELU}_{\tanh}(x W_\text{gate}) \odot x W_\text{up}\big)\, W_\text{down}$$

    Gemma's names for the three matrices are `gate_proj`, `up_proj`, `down_proj`, stored as
    nn.Linear weights, (out, in). Layer 0 of the real model:
    """),
    code(r"""
    mlp = model.blocks[0].mlp
    for name, param in mlp.named_parameters():
        print(f"{name:18} {tuple(param.shape)}")
    """),
    md(r"""
    The MLP's real input is the normalised residual stream. A forward *pre*-hook on the module
    sees the arguments it is called with; keep them:
    """),
    code(r"""
    captured = []
    handle = mlp.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    model(ids, last_only=True)  # every block still runs on every position; only the unembedding is skipped
    handle.remove()
    x = captured[0]  # (1, seq, 640): what layer 0's MLP received
    print(tuple(x.shape))
    """),
    md(r"""
    GeGLU by hand: three matrix products and one elementwise product.
    """),
    code(r"""
    def geglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
        gate = gelu_tanh(x @ w_gate.T)    # (batch, seq, intermediate): how open each unit is
        value = x @ w_up.T                # (batch, seq, intermediate): what it lets through
        return (gate * value) @ w_down.T  # (batch, seq, hidden)


    out = geglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    torch.testing.assert_close(out, mlp(x))
    print("hand-written GeGLU == minigemma.model.mlp.GeGLU")
    """),
    md(r"""
    transformers' `GemmaMLP` uses the same three names, so our weights load into it as they are.
    Its config defaults to the tanh GELU now (section 2):
    """),
    code(r"""
    hf_mlp = GemmaMLP(transformers.GemmaConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size))
    hf_mlp.load_state_dict(mlp.state_dict())
    print("transformers activation:", hf_mlp.config.hidden_act)
    torch.testing.assert_close(hf_mlp(x), mlp(x), rtol=0, atol=1e-6)
    print("transformers GemmaMLP == minigemma.model.mlp.GeGLU")
    """),
    md(r"""
    What does one GeGLU unit compute? Its output is a function of *two* numbers, the gate
    pre-activation $a = xW_\text{gate}$ and the value $b = xW_\text{up}$: $\operatorname{GELU}(a)\,b$.
    A ReLU unit is a function of one. Left, the ReLU unit; right, the GeGLU unit: the gate $a$
    decides how strongly $b$ passes (almost nothing for $a < -2$), and since GELU dips slightly
    below zero for negative $a$, a nearly closed gate can even pass a small, flipped copy of $b$.
    """),
    code(r"""
    a = torch.linspace(-4, 4, 161)
    b = torch.linspace(-3, 3, 121)
    unit = gelu_tanh(a)[None, :] * b[:, None]  # (b, a): the unit's output on a grid

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    left.plot(a, F.relu(a))
    left.set(title="ReLU unit: relu(a)", xlabel="a")
    image = right.imshow(unit, origin="lower", extent=(-4, 4, -3, 3), aspect="auto", cmap="RdBu_r", vmin=-12, vmax=12)
    right.set(title="GeGLU unit: gelu(a) · b", xlabel="a (gate)", ylabel="b (value)")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 4. GeGLU against the ReLU MLP, and where the parameters go

    The original Transformer's feed-forward layer is $\operatorname{ReLU}(xW_1)\,W_2$: two matrices of
    hidden × $d_\text{ff}$. GeGLU has three, so Shazeer compared them at equal size by shrinking
    GeGLU's width to 2/3 of $d_\text{ff}$, and found the gated variants reach lower perplexity for
    the same parameters and compute. Check the equality the other way round: a ReLU MLP 1.5 times
    wider than layer 0's GeGLU has exactly its parameter count.
    """),
    code(r"""
    hidden, intermediate = cfg.hidden_size, cfg.intermediate_size
    relu_mlp = torch.nn.Sequential(
        torch.nn.Linear(hidden, 3 * intermediate // 2, bias=False),  # W1: hidden -> 1.5 x intermediate
        torch.nn.ReLU(),
        torch.nn.Linear(3 * intermediate // 2, hidden, bias=False),  # W2: back to hidden
    )
    n_geglu = sum(p.numel() for p in mlp.parameters())
    n_relu = sum(p.numel() for p in relu_mlp.parameters())
    print(f"GeGLU {n_geglu:,} parameters, ReLU MLP of width {3 * intermediate // 2}: {n_relu:,}")
    assert n_geglu == n_relu == 3 * hidden * intermediate
    """),
    md(r"""
    Gemma does not shrink its MLPs; it makes them wide: the intermediate size is 8 × hidden in 2B
    (16,384) and 7B (24,576). (The report's Table 1 lists "feedforward hidden dims" of 32,768 and
    49,152: the gate and up projections counted together.) With three hidden × intermediate
    matrices in each of 18 or 28 layers, the MLPs are most of the model. Count on the `meta`
    device, which records shapes but allocates nothing (2B in float32 would take 10 GB):
    """),
    code(r"""
    for name in ["gemma-2b", "gemma-7b", "gemma3-270m"]:
        c = minigemma.get_config(name)
        with torch.device("meta"):
            m = minigemma.Gemma(c)
        total = m.num_parameters()
        in_mlp = sum(p.numel() for n, p in m.named_parameters() if ".mlp." in n)
        assert in_mlp == 3 * c.hidden_size * c.intermediate_size * c.num_layers
        print(f"{name:12} MLP {in_mlp:>13,} of {total:>13,} parameters = {in_mlp / total:.1%}")
    """),
    md(r"""
    Three quarters of Gemma 2B and 7B are MLP weights. The 270M is different: its MLP is only
    3.2 × hidden wide and its 262k-entry embedding is 63 % of the model (notebook 02). Notebook 06
    breaks the whole count down.

    ## Exercises

    Solutions: `notebooks/solutions/05_geglu.py` (checked by `tests/test_exercises_05.py`).

    1. **The GLU family on one set of weights.** Write `glu(x, mlp, activation)` that runs the
       three matrices of a `minigemma.model.mlp.GeGLU` module with any gate function:
       `torch.sigmoid` gives Dauphin's GLU, `F.relu` ReGLU, `F.silu` SwiGLU (the LLaMA MLP),
       the identity a purely bilinear layer. Check that `minigemma.model.mlp.gelu_tanh` gives back
       `mlp(x)`. How far from GeGLU's output is each variant on the layer-0 input `x` above?
    2. **How open are the gates?** Write `gate_open_fraction(model, ids, threshold=0.1)`: for every
       layer, the fraction of (position, unit) pairs whose gate $\operatorname{GELU}(xW_\text{gate})$
       exceeds `threshold` in absolute value. Use forward pre-hooks on each `block.mlp` (and
       remove them). Are later layers' MLPs sparser than early ones on `TEXT`?
    3. **The bug as a function.** Write `exact_gelu_report(model, ids)` returning
       `{"max_abs_logit_change": float, "top1_agreement": float}` for the exact versus the tanh
       GELU, with your own context manager that patches `minigemma.model.mlp.gelu_tanh` and always
       restores it. Try it on a longer text: does the agreement stay at 100 %?
    """),
]


# --------------------------------------------------------------------------------------------
# 06: the model
# --------------------------------------------------------------------------------------------
NB06 = [
    md(r"""
    # 06 · The decoder block and the whole model

    **What you will learn**
    - the decoder block: two sublayers, each reading a normalised copy of the residual stream
      and adding its result back (pre-norm), written by hand from the package's parts;
    - the whole model, embed → 18 blocks → final norm → tied unembedding, assembled by hand for
      the real Gemma 3 270M and checked against `model(ids)`;
    - the parameter counts of Gemma 2B and 7B reproduced exactly (2,506,172,416 and
      8,537,680,896) without allocating a byte, and broken down by component;
    - the same architecture in transformers (`GemmaForCausalLM`): same weights, same logits.

    **Builds on** `02_embeddings_and_rmsnorm`, `03_rope`, `04_attention`, `05_geglu`: every part
    is built; here they are put together. **Next:** `07_gemma1_to_gemma3` (what changed between
    the report's Gemma 1 and the Gemma 3 we run).

    **Read along:** the Gemma report (Gemma Team, 2024), section 2 "Model Architecture" and
    Table 1 (sizes) and Table 2 (parameter counts); Vaswani et al. (2017), section 3.1 (the
    decoder stack); Xiong et al. (2020), *On Layer Normalization in the Transformer Architecture*
    (why pre-norm).
    """),
    code(r"""
    %matplotlib inline
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    import transformers

    import minigemma
    from minigemma.loading.names import hf_names

    torch.manual_seed(0)
    torch.set_grad_enabled(False)  # inference only: no autograd bookkeeping
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    cfg = model.config
    ids = torch.tensor([tok.encode("The Eiffel Tower is in the city of", add_bos=True)])  # (1, seq)
    print(cfg.name, "| prompt ids:", ids[0].tolist())
    """),
    md(r"""
    ## 1. The block: read, compute, add back

    Think of the model as one vector per position, the **residual stream**, that flows from the
    embedding to the output. Each block reads it twice and writes to it twice:

    $$x \leftarrow x + \operatorname{Attn}(\operatorname{RMSNorm}(x)), \qquad x \leftarrow x + \operatorname{MLP}(\operatorname{RMSNorm}(x))$$

    The norms sit on the *input* of each sublayer (Gemma report, section 2, "RMSNorm"), never
    on the stream itself. So the identity path
    from the embedding to the last layer is a plain sum, which is what keeps deep stacks
    trainable (Xiong et al., 2020). Gemma 3 adds a norm on each sublayer's *output* before the
    add; our block has them as optional parts, and notebook 07 looks at why. A block's parts:
    """),
    code(r"""
    block = model.blocks[0]
    for name, child in block.named_children():
        if not name.startswith("hook_"):  # hook points are identity modules (minigemma/model/hooks.py)
            print(f"{name:15} {type(child).__name__}")
    """),
    code(r"""
    def block_forward(block, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = block.attn(block.attn_norm(x), positions)  # read a normalised copy of the stream
        if block.post_attn_norm is not None:           # Gemma 3 only (notebook 07)
            h = block.post_attn_norm(h)
        x = x + h                                      # write back: the residual add
        h = block.mlp(block.mlp_norm(x))
        if block.post_mlp_norm is not None:
            h = block.post_mlp_norm(h)
        return x + h                                   # (batch, seq, hidden)
    """),
    md(r"""
    Check against the package's `DecoderBlock`, on the real scaled embeddings of the prompt:
    """),
    code(r"""
    positions = torch.arange(ids.shape[1])
    x = model.embed(ids) * cfg.hidden_size ** 0.5  # (1, seq, 640), as in notebook 02
    torch.testing.assert_close(block_forward(model.blocks[0], x, positions), model.blocks[0](x, positions))
    print("block_forward == DecoderBlock")
    """),
    md(r"""
    ## 2. The whole model by hand

    Embed and scale, run the 18 blocks in order, normalise once more (`ln_final`), and score every
    vocabulary entry with the **same** embedding matrix (tied embeddings, report section 2).
    We also keep what each sublayer writes, to look at it below.
    """),
    code(r"""
    def forward_by_hand(model, ids: torch.Tensor):
        positions = torch.arange(ids.shape[1])
        x = model.embed(ids)                                          # (batch, seq, hidden)
        x = x * torch.tensor(model.config.hidden_size ** 0.5, dtype=x.dtype)
        writes = []                                                   # (attention, MLP) output per block
        for block in model.blocks:
            h = block.attn(block.attn_norm(x), positions)
            if block.post_attn_norm is not None:
                h = block.post_attn_norm(h)
            x = x + h
            m = block.mlp(block.mlp_norm(x))
            if block.post_mlp_norm is not None:
                m = block.post_mlp_norm(m)
            x = x + m
            writes.append((h, m))
        x = model.ln_final(x)
        logits = x @ model.embed.weight.T                             # (batch, seq, vocab)
        return logits, writes
    """),
    code(r"""
    logits, writes = forward_by_hand(model, ids)
    # On a CPU the model's float32 output projection runs through oneDNN, and `@` through MKL: the
    # same sums in another order, so the 262k logits agree to float rounding, not to the last bit.
    torch.testing.assert_close(logits, model(ids), rtol=1e-5, atol=1e-4)
    top = logits[0, -1].topk(3)
    print("forward_by_hand == model(ids); next token:", [tok.decode([i]) for i in top.indices.tolist()])
    assert tok.decode([top.indices[0].item()]) == " Paris"
    """),
    md(r"""
    Who writes how much? For the last position, the size of each sublayer's write relative to
    the stream it is added to. In Gemma 3 each write has passed through its output norm, so its
    size is set by that norm's learned gain (notebook 07): the model has learned how loudly each
    sublayer may speak. The first layers write more than the stream holds (it starts as the
    scaled embedding, RMS about 1) and so overwrite it; after that each sublayer adjusts the
    stream by roughly a tenth to a half of its size.
    """),
    code(r"""
    stream = model.embed(ids) * cfg.hidden_size ** 0.5
    ratios = {"attention": [], "MLP": []}
    for h, m in writes:  # replay the additions to know the stream each write lands on
        ratios["attention"].append((h[0, -1].norm() / stream[0, -1].norm()).item())
        stream = stream + h
        ratios["MLP"].append((m[0, -1].norm() / stream[0, -1].norm()).item())
        stream = stream + m

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for label, values in ratios.items():
        ax.semilogy(range(cfg.num_layers), values, "o-", label=label)
    ax.axhline(1, color="gray", lw=0.5)
    ax.set(xlabel="layer", ylabel="|write| / |stream|", xticks=range(0, cfg.num_layers, 2),
           title="Size of each sublayer's write (last position)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 3. Counting parameters: Gemma 2B and 7B, exactly

    The report calls them 2B and 7B; build them and count. On the `meta` device PyTorch records
    every tensor's shape and dtype but stores no data, so the 8.5-billion-parameter 7B builds in
    a blink on a laptop:
    """),
    code(r"""
    counts, models = {}, {}
    for name in ["gemma-2b", "gemma-7b"]:
        with torch.device("meta"):
            models[name] = minigemma.Gemma(minigemma.get_config(name))
        counts[name] = models[name].num_parameters()
        print(f"{name}: {counts[name]:,} parameters")
    assert counts == {"gemma-2b": 2_506_172_416, "gemma-7b": 8_537_680_896}
    """),
    md(r"""
    The report's Table 2 splits the count into embedding and non-embedding parameters. Its
    embedding numbers use the padded vocabulary of the original checkpoints (256,128 rows: the
    Flax weights pad the 256,000 real entries); the non-embedding numbers we reproduce exactly:
    """),
    code(r"""
    for name, m in models.items():
        embedding = m.embed.weight.numel()
        print(f"{name}: embedding {embedding:,} (padded, as in the report: {256_128 * m.config.hidden_size:,}), "
              f"non-embedding {counts[name] - embedding:,}")
    assert counts["gemma-2b"] - models["gemma-2b"].embed.weight.numel() == 1_981_884_416
    assert counts["gemma-7b"] - models["gemma-7b"].embed.weight.numel() == 7_751_248_896
    """),
    md(r"""
    Now by component. Every parameter's name says where it lives; the norms are a rounding error,
    the MLPs dominate both Gemma 1 models (notebook 05), and the embedding dominates the 270M:
    """),
    code(r"""
    def component(name: str) -> str:
        if name == "embed.weight":
            return "embedding"
        if "norm" in name or name.startswith("ln_final"):  # attn_norm, mlp_norm, post_*_norm, q/k_norm, ln_final
            return "norms"
        if ".attn." in name:
            return "attention"
        if ".mlp." in name:
            return "MLP"
        raise ValueError(f"unexpected parameter {name}")


    with torch.device("meta"):
        models["gemma3-270m"] = minigemma.Gemma(minigemma.get_config("gemma3-270m"))
    parts = ["embedding", "attention", "MLP", "norms"]
    breakdown = {}
    for name, m in models.items():
        breakdown[name] = dict.fromkeys(parts, 0)
        for pname, p in m.named_parameters():
            breakdown[name][component(pname)] += p.numel()
        assert sum(breakdown[name].values()) == m.num_parameters()
        print(f"{name:12}" + "".join(f"{part:>11} {breakdown[name][part]:>13,}" for part in parts))
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    names = list(breakdown)
    left = [0.0] * len(names)
    for part in parts:
        share = [breakdown[n][part] / sum(breakdown[n].values()) for n in names]
        ax.barh(names, share, left=left, label=part)
        left = [l + s for l, s in zip(left, share)]
    ax.set(xlabel="share of parameters", xlim=(0, 1), title="Where the parameters are")
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, -0.55))
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    Check one number by hand from Table 1 of the report: each 2B layer has a query projection
    of 2048 × (8 heads × 256), one key and one value head of 2048 × 256 (multi-query attention),
    an output projection of (8 × 256) × 2048, and three MLP matrices of 2048 × 16384.
    """),
    code(r"""
    attention_2b = 2048 * 8 * 256 + 2 * 2048 * 1 * 256 + 8 * 256 * 2048
    mlp_2b = 3 * 2048 * 16_384
    assert breakdown["gemma-2b"]["attention"] == 18 * attention_2b
    assert breakdown["gemma-2b"]["MLP"] == 18 * mlp_2b
    print(f"per 2B layer: attention {attention_2b:,}, MLP {mlp_2b:,}")
    """),
    md(r"""
    ## 4. The same model in transformers

    transformers' `GemmaForCausalLM` implements the same architecture with its own names
    (`model.layers.3.self_attn.q_proj.weight` for our `blocks.3.attn.q_proj.weight`);
    `minigemma.loading.names.hf_names` is the dictionary between them. Build a tiny Gemma 1 in
    both libraries from the same numbers, fill transformers' copy with random weights (the norms
    too: their initial zeros would hide a mistake in the `1 + w` convention), move them into
    ours by name, and compare logits.
    """),
    code(r"""
    tiny = minigemma.get_config("tiny-gemma")
    hf_config = transformers.GemmaConfig(
        vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads, head_dim=tiny.head_dim,
        max_position_embeddings=tiny.max_position_embeddings, rms_norm_eps=tiny.rms_norm_eps,
        hidden_act="gelu_pytorch_tanh", rope_parameters={"rope_type": "default", "rope_theta": tiny.rope_theta},
    )
    hf = transformers.GemmaForCausalLM(hf_config).eval()
    for p in hf.parameters():
        p.normal_(0, 0.2)  # seeded above: the same weights every run

    ours = minigemma.Gemma(tiny).eval()
    theirs = hf.state_dict()
    ours.load_state_dict({mine: theirs[hf_name] for mine, hf_name in hf_names(tiny).items()})
    print(f"{ours.num_parameters():,} parameters in both; e.g. blocks.1.attn.q_proj.weight <->",
          hf_names(tiny)["blocks.1.attn.q_proj.weight"])
    """),
    code(r"""
    tiny_ids = torch.randint(0, tiny.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(tiny_ids), hf(tiny_ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(ours(tiny_ids).argmax(-1), hf(tiny_ids).logits.argmax(-1))
    print("minigemma == transformers GemmaForCausalLM (logits to 1e-5, same argmax everywhere)")
    """),
    md(r"""
    The repository's tests do the same for every tiny configuration and for the real 270M
    (against transformers' own reading of the GGUF file), in `tests/test_parity_tiny.py` and
    `tests/test_real_270m.py`.

    ## Exercises

    Solutions: `notebooks/solutions/06_the_model.py` (checked by `tests/test_exercises_06.py`).

    1. **Parameters from the config alone.** Write `count_parameters(config)` returning
       `{"embedding": ..., "attention": ..., "MLP": ..., "norms": ...}` from the config's fields,
       with no model built. It must agree with the meta-device breakdown above for every preset in
       `minigemma.PRESETS`, Gemma 3's extra norms included.
    2. **Knock out a layer.** Write `layer_knockout(model, ids)`: for each block, run the model
       with that block skipped (the stream passes through unchanged) and return how much the
       log-probability of the full model's top next token drops. Which layers of the 270M matter
       most for " Paris"?
    3. **The other direction.** Write `to_hf_state_dict(model)` that renames a minigemma model's
       weights to transformers' names, and check that a `GemmaForCausalLM` loaded from it gives
       our logits.
    """),
]


# --------------------------------------------------------------------------------------------
# 07: Gemma 1 to Gemma 3
# --------------------------------------------------------------------------------------------
NB07 = [
    md(r"""
    # 07 · From Gemma 1 to Gemma 3

    The report we have followed describes Gemma 1 (February 2024). The model we run is a Gemma 3
    (March 2025; the 270M came out in August 2025). Between them, Gemma 2 (June 2024) and Gemma 3
    changed the architecture in a few targeted places. Each change is a field of `GemmaConfig`,
    and each one is visible in the real 270M.

    **What you will learn**
    - sliding-window **local** layers interleaved with **global** ones, 5 : 1, and what each
      layer can see (masks and attention spans as figures);
    - a separate RoPE base for local (10k) and global (1M) layers;
    - grouped-query attention and the local layers together: the KV cache at 32k context;
    - **QK-norm**, and what happens to the logits without it;
    - the norms **after** attention and MLP ("sandwich" norms);
    - the larger vocabulary (262k);
    - and, as a last check, all of it against transformers' `Gemma3ForCausalLM`.

    **Builds on** `03_rope`, `04_attention` (masks, KV cache) and `06_the_model` (the block).

    **Read along:** Gemma Team (2024), *Gemma 2: Improving Open Language Models at a Practical
    Size*, section 2; Gemma Team (2025), *Gemma 3 Technical Report*, section 2; Beltagy et al.
    (2020), *Longformer* (sliding windows); Ainslie et al. (2023), *GQA*; Dehghani et al. (2023),
    *Scaling Vision Transformers to 22 Billion Parameters* (QK-norm).
    """),
    code(r"""
    %matplotlib inline
    import contextlib
    import math

    import matplotlib.pyplot as plt
    import torch
    import transformers

    import minigemma
    from minigemma.model.attention import KVCache, attention_mask
    from minigemma.loading.names import hf_names
    from minigemma.model.rope import rope_frequencies

    torch.manual_seed(0)
    torch.set_grad_enabled(False)  # inference only: no autograd bookkeeping
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    cfg = model.config
    g1 = minigemma.get_config("gemma-2b")
    """),
    md(r"""
    The two configurations side by side (Gemma 1 2B from the report's Table 1, the 270M from its
    GGUF file); the rows below the line are fields Gemma 1 does not use:
    """),
    code(r"""
    rows = ["vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
            "head_dim", "max_position_embeddings", "rope_theta", "sliding_window", "sliding_window_pattern",
            "rope_local_theta", "query_pre_attn_scalar", "qk_norm", "post_norms"]
    print(f"{'':26}{'Gemma 1 2B':>12}{'Gemma 3 270M':>14}")
    for field in rows:
        if field == "sliding_window":
            print("-" * 52)
        print(f"{field:26}{str(getattr(g1, field)):>12}{str(getattr(cfg, field)):>14}")
    """),
    md(r"""
    ## 1. Local and global layers

    In Gemma 1 every layer attends to the whole context. Gemma 2 made every other layer
    **local**: a query sees only the last `sliding_window` keys (4096 there), as in Longformer.
    Gemma 3 went to 5 local layers per global one and a shorter window (1024 in the report; 512
    in the 270M), because the KV cache of global layers dominated memory at long context
    (Gemma 3 report, section 2). `config.is_local_layer` encodes the pattern:
    """),
    code(r"""
    pattern = "".join("L" if cfg.is_local_layer(i) else "G" for i in range(cfg.num_layers))
    global_layers = [i for i in range(cfg.num_layers) if not cfg.is_local_layer(i)]
    print(pattern, "| global layers:", global_layers)
    assert pattern == "LLLLLG" * 3 and global_layers == [5, 11, 17]
    assert all(b.attn.window == (cfg.sliding_window if cfg.is_local_layer(i) else None)
               for i, b in enumerate(model.blocks))
    """),
    md(r"""
    The mask of each kind of layer, built with `minigemma.model.attention.attention_mask` (notebook 04)
    over 1,536 positions. A global layer's is the full causal triangle; a local layer's is a band
    512 keys wide:
    """),
    code(r"""
    pos = torch.arange(1536)
    masks = {"global layer (5, 11, 17)": attention_mask(pos, pos, None),
             f"local layer (window {cfg.sliding_window})": attention_mask(pos, pos, cfg.sliding_window)}  # (q, k) bool

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.3), dpi=80)
    for ax, (title, mask) in zip(axes, masks.items()):
        ax.imshow(mask, cmap="Blues", interpolation="nearest")
        ax.set(title=title, xlabel="key position", ylabel="query position")
    fig.tight_layout()
    plt.show()

    seen = masks[f"local layer (window {cfg.sliding_window})"].sum(-1)  # keys each query sees
    assert torch.equal(seen, torch.clamp(pos + 1, max=cfg.sliding_window))
    """),
    md(r"""
    Check it in the real layers: give layer 0 (local) and layer 5 (global) the same 600
    embedded tokens, then change only token 0. Position 599 is more than 512 positions after it:
    the local layer's output there does not move by a single bit, the global layer's does.
    """),
    code(r"""
    long_ids = torch.randint(0, cfg.vocab_size, (1, 600), generator=torch.Generator().manual_seed(0))
    changed = long_ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % cfg.vocab_size
    positions = torch.arange(600)
    scale = cfg.hidden_size ** 0.5
    for layer in (0, 5):
        block = model.blocks[layer]
        before = block(model.embed(long_ids) * scale, positions)[0, 599]
        after = block(model.embed(changed) * scale, positions)[0, 599]
        print(f"layer {layer} ({'local' if cfg.is_local_layer(layer) else 'global'}): "
              f"position 599 {'unchanged' if torch.equal(before, after) else 'changed'}")
        assert torch.equal(before, after) == cfg.is_local_layer(layer)
    """),
    md(r"""
    At the full 32k context, the last token of a long document is seen by 32,768 keys in the 3
    global layers and by 512 in the other 15. Information from further back can still reach it,
    but only by being carried forward through the global layers (exercise 2 works out how far
    stacked local layers alone can reach).
    """),
    code(r"""
    context = cfg.max_position_embeddings
    span = [min(cfg.sliding_window, context) if cfg.is_local_layer(i) else context for i in range(cfg.num_layers)]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.bar(range(cfg.num_layers), span, color=["tab:orange" if s < context else "tab:blue" for s in span])
    ax.set_yscale("log")
    ax.set_ylim(bottom=100)
    ax.set(xlabel="layer", ylabel="keys visible", xticks=range(cfg.num_layers),
           title=f"Attention span of the last of {context:,} tokens (blue: global)")
    fig.tight_layout()
    plt.show()
    print("keys visible per layer:", span[:6], "... (repeats)")
    """),
    md(r"""
    ## 2. Two RoPE bases

    Gemma 1 rotates every layer's queries and keys with base $\theta = 10{,}000$ (notebook 03).
    Gemma 3 keeps 10k in the local layers, which never see distances above 512, and raises the
    global layers' base to 1,000,000 for long context (report, section 2). A larger base slows
    every channel pair down. Count the pairs that turn less than once over the whole 32k
    context, the ones that can tell far-apart positions apart without wrapping around:
    """),
    code(r"""
    print("RoPE bases in use:", sorted({b.attn.rope_theta for b in model.blocks}),
          "| layer 0:", model.blocks[0].attn.rope_theta, "| layer 5:", model.blocks[5].attn.rope_theta)
    assert all(b.attn.rope_theta == (cfg.rope_local_theta if cfg.is_local_layer(i) else cfg.rope_theta)
               for i, b in enumerate(model.blocks))

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for theta in (cfg.rope_local_theta, cfg.rope_theta):
        wavelength = 2 * math.pi / rope_frequencies(cfg.head_dim, theta)  # positions per full turn, (head_dim/2,)
        slow = int((wavelength > context).sum())
        ax.semilogy(wavelength, label=f"base {theta:,.0f}: {slow} of {cfg.head_dim // 2} pairs turn < once in 32k")
    ax.axhline(context, color="gray", ls="--", lw=0.8)
    ax.axhline(cfg.sliding_window, color="gray", ls=":", lw=0.8)
    ax.set(xlabel="channel pair", ylabel="wavelength (positions)", title="RoPE wavelengths (dashed: 32k, dotted: 512)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    ## 3. Grouped-query attention and the KV cache

    Gemma 1 2B shares one key/value head among its 8 query heads (multi-query), 7B gives every
    query head its own (multi-head). Gemma 2 and 3 use grouped-query attention (Ainslie et al.,
    2023) in between; the 270M, with 4 query heads and 1 key/value head, sits at the multi-query
    end. It shows in the projection shapes:
    """),
    code(r"""
    attn = model.blocks[0].attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        print(f"{name}: {tuple(getattr(attn, name).weight.shape)}")
    print(f"{cfg.num_heads} query heads share {cfg.num_kv_heads} key/value head(s) of {cfg.head_dim}")
    assert attn.k_proj.weight.shape == (cfg.num_kv_heads * cfg.head_dim, cfg.hidden_size)
    """),
    md(r"""
    Why it matters: during generation every layer keeps the keys and values of every past token.
    Per token and layer that is 2 × kv_heads × head_dim numbers, so sharing heads divides the
    cache by the group size. Local layers add a second saving: they never look further back than
    the window, so they only need the last 512 positions (a ring buffer). At the full 32k context,
    in float32 (our CPU default):
    """),
    code(r"""
    bytes_per_token_layer = 2 * cfg.num_kv_heads * cfg.head_dim * 4  # k and v, float32
    full = context * bytes_per_token_layer                           # one global layer
    window = cfg.sliding_window * bytes_per_token_layer             # one local layer with a ring buffer
    n_local = sum(cfg.is_local_layer(i) for i in range(cfg.num_layers))
    kv_cost = {
        "multi-head (4 kv heads),\nall global": full * cfg.num_heads * cfg.num_layers,
        "GQA,\nall global": full * cfg.num_layers,
        "GQA, 5 local : 1\n(ring buffers)": full * (cfg.num_layers - n_local) + window * n_local,
    }
    for label, size in kv_cost.items():
        print(f"{label.replace(chr(10), ' '):36} {size / 2**20:8,.1f} MiB")

    # What minigemma's KVCache allocates (on the meta device: shapes only, no memory).
    ours = KVCache(cfg, batch=1, max_len=context, device="meta").memory_bytes()
    assert ours == kv_cost["GQA, 5 local : 1\n(ring buffers)"]
    saving = kv_cost["GQA,\nall global"] / ours
    print(f"minigemma's KVCache: {ours / 2**20:,.1f} MiB, {saving:.1f}x less than full-length buffers in every layer")
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.bar(list(kv_cost), [v / 2**20 for v in kv_cost.values()], color=["gray", "tab:blue", "tab:orange"])
    ax.set(ylabel="MiB", title="KV cache of the 270M at 32,768 tokens, float32")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    minigemma's `KVCache` is the right bar: a local layer never looks back further than its
    window, so it keeps only `sliding_window` slots and writes position $p$ into slot
    $p \bmod w$, over the key that has just left every later query's window (a ring buffer,
    `minigemma/model/attention.py`). The factor printed above is what that saves at 32k tokens.
    Exercise 1 computes these numbers for any config.

    ## 4. QK-norm

    The attention logit is $q \cdot k / \sqrt{d}$; if $q$ and $k$ grow during training, the
    softmax saturates and training can diverge (Dehghani et al., 2023). Gemma 2 capped the
    logits with $50 \tanh(s / 50)$ ("soft-capping"). Gemma 3 instead normalises every head's
    query and key with an RMSNorm before RoPE (report, section 2: QK-norm replaces soft-capping),
    so their size is set by a learned gain, not by the input:
    """),
    code(r"""
    print("q_norm:", model.blocks[0].attn.q_norm.weight.shape, "| k_norm:", model.blocks[0].attn.k_norm.weight.shape)
    q_gain = torch.stack([1 + b.attn.q_norm.weight for b in model.blocks]).mean(-1)  # (layers,)
    k_gain = torch.stack([1 + b.attn.k_norm.weight for b in model.blocks]).mean(-1)
    print("mean gain per layer, q:", [round(v, 1) for v in q_gain.tolist()])
    print("                     k:", [round(v, 1) for v in k_gain.tolist()])
    """),
    md(r"""
    The model was trained with those norms, so it relies on them. Remove them from every layer
    for the length of a `with` block (the attention module skips a norm that is `None`) and
    compare the next-token prediction:
    """),
    code(r"""
    @contextlib.contextmanager
    def without_qk_norm(model):
        saved = [(b.attn.q_norm, b.attn.k_norm) for b in model.blocks]
        try:
            for b in model.blocks:
                b.attn.q_norm = b.attn.k_norm = None
            yield
        finally:  # put the trained norms back even if the forward pass fails
            for b, (q_norm, k_norm) in zip(model.blocks, saved):
                b.attn.q_norm, b.attn.k_norm = q_norm, k_norm


    ids = torch.tensor([tok.encode("The Eiffel Tower is in the city of", add_bos=True)])
    with_norm = model(ids, last_only=True)[0, -1]  # (vocab,): next-token logits
    with without_qk_norm(model):
        no_norm = model(ids, last_only=True)[0, -1]
    assert torch.equal(model(ids, last_only=True)[0, -1], with_norm)  # restored
    for label, logits in (("with QK-norm", with_norm), ("without", no_norm)):
        print(f"{label:13}", [tok.decode([i]) for i in logits.topk(5).indices.tolist()])
    print(f"largest logit change: {(no_norm - with_norm).abs().max():.0f}")
    assert tok.decode([with_norm.argmax().item()]) == " Paris" != tok.decode([no_norm.argmax().item()])
    """),
    md(r"""
    ## 5. Norms after the sublayers ("sandwich")

    Gemma 2 and 3 normalise each sublayer's **output** too, before it is added to the stream
    (Gemma 2 report, section 2: RMSNorm on the input and the output of each sublayer):
    $x \leftarrow x + \operatorname{RMSNorm}(\operatorname{Attn}(\operatorname{RMSNorm}(x)))$. Whatever
    the attention or MLP produces, its write has a size set by the learned gain alone. Check: scale
    a sublayer's output by 10 and its write does not change.
    """),
    code(r"""
    h = torch.randn(1, 5, cfg.hidden_size)  # stands for an attention output
    post = model.blocks[3].post_attn_norm
    torch.testing.assert_close(post(10 * h), post(h))
    print("post_attn_norm(10 h) == post_attn_norm(h)")
    """),
    md(r"""
    So the learned gains of the post-norms are how loudly each sublayer writes. They grow
    steadily with depth, by more than two orders of magnitude, as the residual stream itself
    grows (notebook 02): each layer writes at a size that still counts against what is already
    there (notebook 06 measured the ratio).
    """),
    code(r"""
    post_attn = torch.stack([1 + b.post_attn_norm.weight for b in model.blocks]).abs().mean(-1)  # (layers,)
    post_mlp = torch.stack([1 + b.post_mlp_norm.weight for b in model.blocks]).abs().mean(-1)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.semilogy(post_attn, "o-", label="post_attn_norm")
    ax.semilogy(post_mlp, "s-", label="post_mlp_norm")
    ax.set(xlabel="layer", ylabel="mean |1 + w|", xticks=range(0, cfg.num_layers, 2), title="Gains of the output norms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    assert post_mlp[-1] > 100 * post_mlp[0]
    """),
    md(r"""
    ## 6. A larger vocabulary

    Gemma 1's SentencePiece vocabulary has 256,000 entries; Gemma 3 uses Gemini 2.0's, with
    262,144 = 2¹⁸, which the Gemma 3 report (section 2) describes as more balanced for
    non-English languages: the sentences below cost about as many tokens in German and Japanese
    as in English. Tied
    embeddings make it cost hidden × vocab parameters once. In the 270M that one matrix is most
    of the model (notebooks 02 and 06):
    """),
    code(r"""
    print(f"vocabulary {tok.vocab_size:,} = 2**{int(math.log2(tok.vocab_size))}; embedding "
          f"{model.embed.weight.numel():,} of {model.num_parameters():,} parameters")
    assert tok.vocab_size == cfg.vocab_size == 2 ** 18
    for text in ("The weather is nice today.", "Das Wetter ist heute schön.", "今日はいい天気です。"):
        print(f"{len(tok.encode(text)):2} tokens: {text}")
    """),
    md(r"""
    ## 7. All together, against transformers

    Sliding windows with their pattern, two RoPE bases, grouped-query attention, QK-norm, sandwich
    norms, and the $1/\sqrt{\text{query\_pre\_attn\_scalar}}$ attention scale: build a tiny Gemma 3
    (window 8, every third layer global) in transformers' `Gemma3ForCausalLM`, random weights
    everywhere, copy them into ours by name (`hf_names`), and compare on 40 tokens, well past
    the window:
    """),
    code(r"""
    tiny = minigemma.get_config("tiny-gemma3")
    hf_config = transformers.Gemma3TextConfig(
        vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads, head_dim=tiny.head_dim,
        max_position_embeddings=tiny.max_position_embeddings, rms_norm_eps=tiny.rms_norm_eps,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=tiny.query_pre_attn_scalar,
        sliding_window=tiny.sliding_window,
        layer_types=["sliding_attention" if tiny.is_local_layer(i) else "full_attention" for i in range(tiny.num_layers)],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": tiny.rope_local_theta},
                         "full_attention": {"rope_type": "default", "rope_theta": tiny.rope_theta}},
    )
    hf = transformers.Gemma3ForCausalLM(hf_config).eval()
    for p in hf.parameters():
        p.normal_(0, 0.2)  # seeded above: the same weights every run
    ours = minigemma.Gemma(tiny).eval()
    theirs = hf.state_dict()
    ours.load_state_dict({mine: theirs[hf_name] for mine, hf_name in hf_names(tiny).items()})

    tiny_ids = torch.randint(0, tiny.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(tiny_ids), hf(tiny_ids).logits, atol=1e-5, rtol=0)
    print("layer types:", hf_config.layer_types)
    print("minigemma == transformers Gemma3ForCausalLM (logits to 1e-5)")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/07_gemma1_to_gemma3.py` (checked by `tests/test_exercises_07.py`).

    1. **KV cache calculator.** Write `kv_cache_bytes(config, context, bytes_per_value=2,
       ring_buffer=True)`: the bytes of keys and values for one sequence of `context` tokens,
       where local layers keep only `min(context, sliding_window)` positions when `ring_buffer`
       is on. With `ring_buffer=True` and 4 bytes it must equal
       `KVCache(config, 1, context, device="meta").memory_bytes()`. Compare Gemma 1 2B at 8k
       with the 270M at 32k.
    2. **How far back can a stack of local layers see?** Write `receptive_field(config,
       num_layers)`: the largest distance $d$ such that the output of the first `num_layers`
       blocks at position $p$ can depend on the token at $p - d$. Each local layer adds
       `sliding_window - 1`; a global layer makes it the whole context
       (`max_position_embeddings - 1`). Verify it on `tiny-gemma3` with gradients: which input
       positions get a non-zero gradient from the last position's output?
    3. **What if every layer were global?** Write a context manager `all_global(model)` that
       turns every local layer into a global one (`attn.window = None`) and restores the windows
       on exit. Show that for prompts no longer than the window the logits do not change at all,
       and that for longer ones they do.
    """),
]

NOTEBOOKS = {"05": ("05_geglu.ipynb", NB05), "06": ("06_the_model.ipynb", NB06),
             "07": ("07_gemma1_to_gemma3.ipynb", NB07)}


def build(key: str) -> Path:
    filename, cells = NOTEBOOKS[key]
    return write_notebook(cells, filename, id_prefix=key)  # stable ids keep rebuilt notebooks diff-friendly


def clean(key: str) -> Path:
    """Drop the execution timestamps nbconvert records, so re-running changes no bytes that matter."""
    path = HERE / NOTEBOOKS[key][0]
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["clean"]:  # after nbconvert --execute: build_05_07.py clean [05 06 07]
        for key in args[1:] or NOTEBOOKS:
            print("cleaned", clean(key))
    else:
        for key in args or NOTEBOOKS:
            print("wrote", build(key))

"""Write notebook 16 (a kernel of our own: block int8 decoding, as llama.cpp does it) from the cells below.

    .venv/bin/python notebooks/_build/build_16.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/16_block_kernel.ipynb

The C++ kernel (minigemma/quantize/csrc/block_matmul.cpp) is never copied into this notebook: the cells
print excerpts of the file as it is when they run (`show_cpp`), found by the names of its functions.
Those cells carry `# NBVAL_IGNORE_OUTPUT`, so that an edit of the kernel does not make the saved outputs
stale; the checks after them (the kernel against blocks.block_matmul_reference) are compared.

Outputs nbval cannot compare carry `# NBVAL_IGNORE_OUTPUT` as their first line, alone (nbval matches the
whole comment), and the reason on the line after it: timings, the kernel's build message and which code
paths this CPU runs, and the excerpts of the .cpp. Every other printed number is rounded far coarser
than float rounding, and `steady` checks it is clear of a rounding boundary, so it prints the same on any
CPU and on the second CPU code path of `make test` (tests/cpu_path.py).

Without a C++ compiler the notebook still runs: the kernel's cells say it is unavailable (their printed
lines then differ from the saved ones) and the rest uses blocks.py's PyTorch reference.
"""

from __future__ import annotations

from pathlib import Path

from nbcells import code, md, write_notebook


CELLS = [
    md(r"""
    # 16 · A kernel of our own: block int8 decoding, as llama.cpp does it

    **What you will learn**
    - the block format of llama.cpp's Q8_0: 32 weights share one float16 scale, 8.5 bits per weight,
      quantized by hand and checked against `minigemma.quantize.blocks`;
    - why the *activations* can be rounded to 8 bits too, if it is done in blocks of 32: measured on
      every matmul of the real 270M, whose activations have a few huge channels, and on its predictions;
    - what one SIMD instruction sequence does with 32 bytes of weights and 32 bytes of activations
      (AVX2's `maddubs` and `madd`, AVX-512 VNNI's `dpbusd`), emulated in PyTorch on integers, and why
      the grid stops at -127;
    - minigemma's own C++ kernel, read function by function from its source, and checked number by
      number against the PyTorch reference;
    - how fast it reads the 262144 x 640 output projection against the memory bandwidth, and how fast
      the whole model decodes with it.

    **Builds on** `13_quantization_and_speed`: the bandwidth limit of decoding (section 2), int8
    weights with one scale per row, and section 6, where llama.cpp's blocks of 32 and Gemma's
    outlier activations first appeared. Here we go inside them.

    **How long it takes.** About a minute on a laptop CPU; a cell near the end prints how long this
    run took. The first run also builds the C++ kernel, once, into minigemma's cache (about 20 s with a
    C++ compiler; without one, the kernel's cells say so and the rest still runs).

    **Read along:** `minigemma/quantize/blocks.py` (the format and a readable reference of the
    arithmetic) and `minigemma/quantize/csrc/block_matmul.cpp` (the kernel); in llama.cpp,
    `quantize_row_q8_0` and `ggml_vec_dot_q8_0_q8_0` with its helper `mul_sum_i8_pairs_float` (ggml's
    CPU backend); Intel's Intrinsics Guide for `_mm256_maddubs_epi16`, `_mm256_madd_epi16` and
    `_mm256_dpbusd_epi32`; Dettmers et al., *LLM.int8(): 8-bit Matrix Multiplication for Transformers
    at Scale* (2022), section 4, on outlier features in activations.
    """),
    code(r"""
    %matplotlib inline
    import io
    import math
    import re
    import sys
    import time
    from contextlib import contextmanager
    from pathlib import Path
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    import PIL.Image
    import torch
    from IPython.display import Image, Markdown, display
    from matplotlib.patches import Rectangle

    import minigemma
    from minigemma.explore.inspection import run_with_cache
    from minigemma.quantize import dequantize_int8, native, quantize_int8, score_text
    from minigemma.quantize.blocks import (BLOCK, block_matmul_reference, dequantize_blocks, quantize_activation_blocks,
                                           quantize_blocks, unpack_nibbles)
    from minigemma.quantize.kernels import dynamic_int8_matmul, fbgemm_pack, kernel_works

    ROOT = Path(minigemma.__file__).resolve().parents[1]
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks' own measuring functions, reused below
    from kernels import median_ms  # noqa: E402  (benchmarks/kernels.py)
    from speed import (build_llama_cpp, llama_cpp_installed, read_bandwidth, time_llama_cpp,  # noqa: E402
                       time_minigemma, weight_bytes_per_token)

    notebook_start = time.perf_counter()
    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    print(model.config.name, f"{model.num_parameters():,} parameters")


    def steady(x: float, decimals: int) -> str:
        # x with `decimals` decimals, after checking that it is further than 0.02% of x from a rounding
        # boundary: float sums differ in their last bits between CPUs (by ~1e-6 of x here), and must
        # not flip a printed digit, since nbval compares the outputs.
        unit = 10.0**-decimals
        assert abs((abs(x) / unit) % 1 - 0.5) * unit > 2e-4 * abs(x), f"{x!r} is too close to a rounding boundary"
        return f"{x:.{decimals}f}"

    def show(fig) -> None:
        # The figure as a PNG at twice the screen's resolution (sharp on high-resolution screens and
        # projectors), in 32 colours (a third of the bytes: the notebook file stays small).
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=2 * fig.dpi, bbox_inches="tight")
        plt.close(fig)
        image = PIL.Image.open(png).convert("RGB").quantize(colors=32, method=PIL.Image.Quantize.MEDIANCUT)
        small = io.BytesIO()
        image.save(small, format="png", optimize=True)
        display(Image(small.getvalue(), width=image.width // 2))
    """),
    md(r"""
    The kernel is compiled the first time something asks for it (`quantize/native.py`), and each of
    its code paths is checked against the PyTorch reference before it is trusted. Which paths exist
    depends on the CPU: plain C loops everywhere, AVX2 on most x86 CPUs of the last ten years, AVX-512
    VNNI on recent server and some laptop CPUs.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (the first run builds the kernel and says so; which code paths exist depends on the CPU)
    isa = native.kernel_isa()  # the path minigemma uses here, or None: no C++ compiler, or a failed self-check
    KERNEL = isa is not None
    print("code paths this CPU runs:", ", ".join(native.supported_isas()) or "none: the kernel is unavailable here")
    print("the one minigemma picks:", isa)
    """),
    md(r"""
    ## 1. A block of 32 weights, by hand

    Notebook 13 stored int8 weights with one scale per row: 640 weights share the step of their
    largest one. llama.cpp's **Q8_0** cuts every row into **blocks of 32** consecutive weights, each
    with its own scale:

    $$d = \frac{\max_j |w_j|}{127}, \qquad q_j = \mathrm{round}(w_j / d) \in [-127, 127], \qquad w_j \approx q_j\, d .$$

    The scale is stored as a float16 (2 bytes), so a block takes 32 + 2 bytes: **8.5 bits per
    weight**. One detail matters: the integers are rounded against the float16 scale *as stored*,
    not the float32 `d` it came from, so that `q * scale` is exactly what a reader of the file
    reconstructs. Here is the first block of a row of layer 0's `gate_proj`:
    """),
    code(r"""
    w = model.blocks[0].mlp.gate_proj.weight.detach()  # (2048, 640)
    block = w[0, :BLOCK]  # 32 weights
    scale = (block.abs().max() / 127).to(torch.float16)  # what is stored: 2 bytes
    q = torch.round(block / scale.float()).clamp(-127, 127).to(torch.int8)  # rounded against the stored scale
    print("scale:", scale.item())
    print("q:", q.tolist())

    q_pkg, scale_pkg = quantize_blocks(block[None], bits=8)  # the package: (1, 32) int8, (1, 1) float16
    assert torch.equal(q_pkg[0], q) and torch.equal(scale_pkg[0, 0], scale)
    error = (q.float() * scale.float() - block).abs().max()
    print(f"largest error: {steady(error / scale.float(), 2)} of a step (at most 1/2)")
    assert error <= scale.float() / 2 * (1 + 1e-6)
    """),
    md(r"""
    The largest weight landed on ±127 and every error is under half a step. The same on the whole
    matrix, against notebook 13's one scale per row: the blocks follow the weights more closely for
    about half a bit more per weight, because a row's largest weight now only sets the step of its
    own block.
    """),
    code(r"""
    qw, sw = quantize_blocks(w, bits=8)  # (2048, 640) int8, (2048, 20) float16
    bits_per_weight = 8 * (qw.numel() * qw.element_size() + sw.numel() * sw.element_size()) / w.numel()
    q8, s8 = quantize_int8(w)  # notebook 13: one float32 scale per row


    def relative_error(w_hat: torch.Tensor) -> float:
        return ((w_hat - w).norm() / w.norm()).item()


    print(f"blocks of 32: {bits_per_weight} bits per weight, weight error {steady(100 * relative_error(dequantize_blocks(qw, sw, 8)), 1)}%")
    print(f"one per row:  {8 + 32 / w.shape[1]} bits per weight, weight error {steady(100 * relative_error(dequantize_int8(q8, s8)), 1)}%")
    spread_in_row = sw.float().amax(1) / sw.float().amin(1)  # per row: largest block scale / smallest
    print(f"largest / smallest block scale within a row: {steady(spread_in_row.median().item(), 1)}x (median over the rows), "
          f"up to {steady(spread_in_row.max().item(), 0)}x")
    assert bits_per_weight == 8.5
    assert relative_error(dequantize_blocks(qw, sw, 8)) < relative_error(dequantize_int8(q8, s8))
    """),
    md(r"""
    ## 2. Rounding the activations too, in blocks

    Weights in 8 bits save memory. llama.cpp also rounds the **activation** vector `x` to 8 bits, in
    the same blocks of 32 (`quantize_row_q8_0`, once per matmul), and then one block's dot product is a
    sum of 32 products of small integers, exact in int32, with the floats entering once per block:

    $$y_n = \sum_{\text{blocks } b} d^w_{n,b}\, d^x_b \sum_{j=0}^{31} q^w_{n,32b+j}\, q^x_{32b+j} .$$

    That inner integer sum is what a CPU does 32 at a time (section 3). But rounding activations is
    riskier than rounding weights: they are different for every token, and Gemma's have a few
    channels far larger than the rest (notebook 13 plotted one such vector). How much does it cost?
    Catch the input of every matmul of a forward pass on a sentence, with a forward pre-hook on each
    `nn.Linear` (which sees the layer's input before it runs). There are four distinct inputs per
    layer: `q_proj`'s (which `k_proj` and `v_proj` read too), `o_proj`'s, `gate_proj`'s (read by
    `up_proj` too) and `down_proj`'s.
    """),
    code(r"""
    KINDS = ("attn.q_proj", "attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
    LAYERS = range(model.config.num_layers)
    sentence_ids = tok.encode("The capital of France is Paris, and the capital of Italy is Rome.", add_bos=True)

    inputs = {}  # (layer, kind) -> (tokens, in) the matmul's input


    def keep(key):
        def hook(module, args):
            inputs[key] = args[0][0, 1:].detach()  # the text's tokens; BOS is a vector like no other (pitfall 5)
        return hook


    handles = [model.get_submodule(f"blocks.{layer}.{kind}").register_forward_pre_hook(keep((layer, kind)))
               for layer in LAYERS for kind in KINDS]
    with torch.no_grad():
        model(torch.tensor([sentence_ids]))
    for handle in handles:
        handle.remove()
    print(len(inputs), "matmul inputs of", len(sentence_ids) - 1, "tokens each, e.g. layer 6's down_proj:",
          tuple(inputs[6, "mlp.down_proj"].shape))
    """),
    md(r"""
    **The outliers.** For each token, compare the largest |x| with the median |x| of its vector. In
    the normalized residual stream (the input of `q_proj` and `gate_proj`) the largest channel is
    moreover the *same few channels* in layer after layer:
    """),
    code(r"""
    def spread(x: torch.Tensor) -> torch.Tensor:
        return x.abs().amax(-1) / x.abs().median(-1).values  # per token: largest |x| / median |x|


    for kind in KINDS:
        spreads = torch.cat([spread(inputs[layer, kind]) for layer in LAYERS])
        print(f"{kind:14s} largest |x| / median |x| per token: median {steady(spreads.median().item(), 0)}, "
              f"up to {steady(spreads.max().item(), 0)}")

    largest, margins = {}, []
    for layer in LAYERS:
        for kind in ("attn.q_proj", "mlp.gate_proj"):
            top = inputs[layer, kind].abs().mean(0).topk(2)  # the two channels of largest mean |x| over the tokens
            largest[int(top.indices[0])] = largest.get(int(top.indices[0]), 0) + 1
            margins.append((top.values[0] / top.values[1]).item())
    assert min(margins) > 1.02  # each winner won clearly: the counts below hold on any CPU
    print(f"the largest channel of the residual stream, in the {len(margins)} inputs that read it:",
          ", ".join(f"channel {c} in {n}" for c, n in sorted(largest.items(), key=lambda item: -item[1])))
    """),
    md(r"""
    With one scale for a whole vector, the step is the largest |x| / 127, so a median value, tens or
    hundreds of times smaller, gets a handful of levels or none. With a scale per block of 32, an
    outlier coarsens only its own 31 neighbours. Two roundings, both symmetric int8: one scale per
    vector (per token), and blocks.py's `quantize_activation_blocks`, exactly what the kernel does;
    for each, the error of the matmul's output against the float32 one, with float32 weights, so
    that only the activations' rounding counts:
    """),
    code(r"""
    def round_per_vector(x: torch.Tensor) -> torch.Tensor:
        d = x.abs().amax(-1, keepdim=True) / 127  # one scale per token
        return torch.round(x / d).clamp(-127, 127) * d


    def round_per_block(x: torch.Tensor) -> torch.Tensor:
        qx, dx = quantize_activation_blocks(x.reshape(-1, x.shape[-1]))  # the kernel's rounding, in PyTorch
        return (qx.float().reshape(*dx.shape, BLOCK) * dx[..., None]).reshape(x.shape)


    errors, zeros = {}, {}  # (layer, kind, "vector" | "block") -> relative error of x W^T; fraction of x rounded to 0
    with torch.no_grad():
        for (layer, kind), x in inputs.items():
            w_layer = model.get_submodule(f"blocks.{layer}.{kind}").weight
            exact = x @ w_layer.T
            for how, rounding in (("vector", round_per_vector), ("block", round_per_block)):
                x_hat = rounding(x)
                errors[layer, kind, how] = ((x_hat @ w_layer.T - exact).norm() / exact.norm()).item()
                zeros[layer, kind, how] = ((x_hat == 0) & (x != 0)).float().mean().item()

    print(f"over the {len(LAYERS)} layers: the median error of x W^T, the mean fraction of x's values rounded to 0")
    print(f"{'input of':14s} {'error, per vector':>18s} {'per block':>10s} {'rounded to 0, per vector':>25s} {'per block':>10s}")
    for kind in KINDS:
        med = {how: torch.tensor([errors[l, kind, how] for l in LAYERS]).median().item() for how in ("vector", "block")}
        z = {how: torch.tensor([zeros[l, kind, how] for l in LAYERS]).mean().item() for how in ("vector", "block")}
        print(f"{kind:14s} {steady(100 * med['vector'], 1):>17s}% {steady(100 * med['block'], 1):>9s}% "
              f"{steady(100 * z['vector'], 0):>24s}% {steady(100 * z['block'], 0):>9s}%")
    ratios = torch.tensor([errors[l, k, "vector"] / errors[l, k, "block"] for l in LAYERS for k in KINDS])
    print(f"per vector / per block, over all {len(ratios)} matmuls: {steady(ratios.min().item(), 1)}x to {steady(ratios.max().item(), 1)}x")
    assert (ratios > 1.5).all()
    """),
    code(r"""
    colors = dict(zip(KINDS, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    with plt.rc_context({"figure.dpi": 80, "font.size": 10}):
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        for kind in KINDS:
            ax.plot(LAYERS, [100 * errors[l, kind, "vector"] for l in LAYERS], color=colors[kind], linestyle="--")
            ax.plot(LAYERS, [100 * errors[l, kind, "block"] for l in LAYERS], color=colors[kind], label=f"input of {kind}")
        ax.plot([], [], "k--", label="one scale per vector")
        ax.plot([], [], "k-", label="one scale per block of 32")
        ax.set(xlabel="layer", ylabel="error of x W$^T$ (%)", title="int8 activations, every matmul of the 270M",
               ylim=(0, None), xticks=range(0, 18, 2))
        ax.legend(fontsize=8, ncol=3, loc="upper left")
        ax.set_ylim(0, 1.35 * ax.get_ylim()[1])  # room for the legend
        fig.tight_layout()
        show(fig)
    """),
    md(r"""
    The down projection's input (GELU(gate) x up) has the widest spread, and rounding it per vector
    sends many of its values to zero (the table above). Per block, the error is several times smaller
    in every layer.

    **A scale can reach further still.** PyTorch's int8 x int8 kernel for x86 (fbgemm, which
    minigemma's `int8-dynamic` uses for the output projection) rounds its input with one scale for
    the *whole input tensor*. While decoding that input is one token: one scale per vector. Given a
    prompt, it is every token at once. The same layer, the same int8 weights, all tokens in one call
    or one call per token:
    """),
    code(r"""
    x = inputs[6, "mlp.down_proj"]
    w_layer = model.blocks[6].mlp.down_proj.weight.detach()
    if kernel_works("int8-dynamic", x.device):
        q8, s8 = quantize_int8(w_layer)
        packed = fbgemm_pack(q8, s8)
        exact = x @ dequantize_int8(q8, s8).T  # the same int8 weights, float activations
        together = dynamic_int8_matmul(x, packed)
        one_by_one = torch.cat([dynamic_int8_matmul(row[None], packed) for row in x])
        err_together = ((together - exact).norm() / exact.norm()).item()
        err_one = ((one_by_one - exact).norm() / exact.norm()).item()
        print(f"fbgemm, {len(x)} tokens in one call: error {steady(100 * err_together, 1)}%; one token per call: "
              f"{steady(100 * err_one, 1)}%")
        assert err_together > 1.2 * err_one
    else:
        print("fbgemm's int8 x int8 kernel is not available in this PyTorch: nothing to compare")
    """),
    md(r"""
    **What it costs the model.** Errors of a few percent per matmul could add up over 72 matmuls and
    18 layers, or wash out. Only the model can say. Run a text through it with the input of *every*
    linear layer rounded by a pre-hook: one scale for the whole input (all the text's tokens at once,
    what fbgemm does with a prompt), one per vector, one per block of 32. The weights stay float32,
    so only the activations' rounding is measured. Two measures, against the float32 model:

    - the **KL divergence** of each position's next-token distribution from float32's, in nats,
      averaged over the positions: 0 when every prediction is unchanged;
    - the **perplexity** of the text (notebook 13): what `score_text` computes, from the same
      log-probabilities.

    Then the real thing: the model loaded with `quantize="int8-blocks"`, whose layers store Q8_0
    weights and call the C++ kernel, fed the text 16 tokens at a time (as a decoder meets it: a few
    rows per matmul).
    """),
    code(r"""
    text = (ROOT / "assets" / "perplexity_text.txt").read_text()
    text_ids = torch.tensor([tok.encode(text, add_bos=True)[:128]])  # 128 tokens: enough to rank the roundings, quick


    def next_token_logprobs(m, ids: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        # (positions, vocab) log-probabilities, the text fed in chunks through the KV cache as score_text does
        cache = m.new_cache(1, ids.shape[1])
        with torch.no_grad():
            return torch.cat([m(ids[:, i:i + chunk], cache=cache)[0].log_softmax(-1) for i in range(0, ids.shape[1], chunk)])


    reference = next_token_logprobs(model, text_ids)


    def quality(logprobs: torch.Tensor) -> tuple[float, float]:
        # (mean KL divergence from float32's predictions, perplexity of the text)
        kl = (reference.exp() * (reference - logprobs)).sum(-1).mean().item()
        return kl, math.exp(-logprobs[:-1].gather(1, text_ids[0, 1:, None]).mean().item())


    @contextmanager
    def rounded_inputs(m, rounding):
        handles = [layer.register_forward_pre_hook(lambda module, args: (rounding(args[0]),))
                   for layer in m.modules() if isinstance(layer, torch.nn.Linear)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


    def round_per_tensor(x: torch.Tensor) -> torch.Tensor:
        d = x.abs().amax() / 127  # one scale for all the tokens at once
        return torch.round(x / d).clamp(-127, 127) * d


    results = {"float32": quality(reference)}
    assert math.isclose(results["float32"][1], score_text(model, text_ids[0].tolist()).perplexity, rel_tol=1e-4)
    for how, rounding in [("tensor", round_per_tensor), ("vector", round_per_vector), ("block of 32", round_per_block)]:
        with rounded_inputs(model, rounding):
            results[f"activations per {how}"] = quality(next_token_logprobs(model, text_ids))

    blocks_model, _ = minigemma.load("gemma3-270m", progress=False, quantize="int8-blocks")
    KERNEL_LABEL = "int8-blocks: Q8_0, the kernel" if KERNEL else "int8-blocks, no kernel: float x"
    results[KERNEL_LABEL] = quality(next_token_logprobs(blocks_model, text_ids, chunk=16))
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (rounded activations amplify the last bits of float sums, which differ between CPUs: see below)
    print(f"{text_ids.shape[1]} tokens of assets/perplexity_text.txt")
    print(f"{'':32s} {'KL from float32':>15s} {'perplexity':>11s}")
    for label, (kl, ppl) in results.items():
        print(f"{label:32s} {kl:15.4f} {ppl:11.2f}  ({100 * (ppl / results['float32'][1] - 1):+.1f}%)")
    """),
    md(r"""
    Why are these numbers in a cell whose output nbval does not compare, when the rest of the notebook
    prints numbers that hold on any CPU? Because rounding is not continuous. A float32 matmul gives
    results that differ in the last bit or two from one CPU to another (different SIMD widths sum in
    different orders). Mostly harmless, until a value lies that close to the middle between two
    integer levels: then it rounds the other way, the layer's output moves by a whole step, the next
    layers' inputs move by far more than a bit, more roundings flip, and so on. The same rounding
    with every input nudged by one part in a million:
    """),
    code(r"""
    gen = torch.Generator().manual_seed(0)
    with rounded_inputs(model, lambda x: round_per_vector(x * (1 + 1e-6 * torch.randn(x.shape, generator=gen)))):
        nudged = next_token_logprobs(model, text_ids)
    kl_nudged, ppl_nudged = quality(nudged)
    kl_vector, ppl_vector = results["activations per vector"]
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (the nudged run's numbers move with the CPU as much as the others)
    print(f"activations per vector:          KL {kl_vector:.4f}, perplexity {ppl_vector:.2f}")
    print(f"the same, inputs nudged by 1e-6: KL {kl_nudged:.4f}, perplexity {ppl_nudged:.2f}")
    """),
    md(r"""
    The perplexity of a 128-token text moves by percents, the KL much less: it averages the change of
    every prediction, where perplexity only reads the probability of the one right token. So what is
    compared are the conclusions, each with a wide margin:
    """),
    code(r"""
    kl = {label: k for label, (k, _) in results.items()}
    ppl_change = {label: p / results["float32"][1] - 1 for label, (_, p) in results.items()}
    block_kl, vector_kl, tensor_kl = (kl[f"activations per {how}"] for how in ("block of 32", "vector", "tensor"))
    claims = {
        "per block of 32: KL under 0.005 and perplexity within 2% of float32":
            block_kl < 0.005 and abs(ppl_change["activations per block of 32"]) < 0.02,
        "per vector: KL more than 5 times per block's": vector_kl > 5 * block_kl,
        "per tensor: KL more than 3 times per vector's, perplexity up by more than 10%":
            tensor_kl > 3 * vector_kl and ppl_change["activations per tensor"] > 0.1,
        f"{KERNEL_LABEL}: KL under 0.005 and perplexity within 2%":
            kl[KERNEL_LABEL] < 0.005 and abs(ppl_change[KERNEL_LABEL]) < 0.02,
        "a nudge of 1e-6 moved the per-vector KL by over 0.1% or its perplexity by over 0.1%":
            abs(kl_nudged / kl_vector - 1) > 1e-3 or abs(ppl_nudged / ppl_vector - 1) > 1e-3,
    }
    for claim, holds in claims.items():
        print(f"{claim}: {holds}")
    assert all(claims.values())
    """),
    md(r"""
    The further one scale reaches, the more it costs: per block of 32 is nearly free, per vector moves
    the predictions many times more, and one scale shared by all the tokens of a text far more again.
    (Notebook 13 quoted a large perplexity loss for PyTorch's int8-activation kernel in every layer:
    that was scored on long chunks of text at once, so it measured this last case.) The kernel's
    model, whose weights are rounded too, stays next to the per-block line. Block rounding is what
    makes 8-bit *arithmetic*, not just 8-bit storage, safe for Gemma.

    ## 3. One instruction sequence: 32 products at a time

    After rounding, a block's dot product is `sum(qw[j] * qx[j] for j in range(32))` on signed bytes.
    Until the newest CPUs (AVX-VNNI-INT8's `dpbssd`), x86 had no instruction that multiplies signed
    bytes by signed bytes. The closest, AVX2's `_mm256_maddubs_epi16`, multiplies 32 **unsigned**
    bytes by 32 **signed** bytes and adds adjacent products in pairs into 16 int16 values,
    **saturating** (a sum above 32767 stays 32767). Then `_mm256_madd_epi16` with a vector of ones
    adds adjacent int16 pairs into 8 int32 lanes. To make the weights unsigned, the *sign trick*
    moves each weight's sign onto the activation: $|w| \cdot (x \cdot \mathrm{sign}(w)) = w x$, with
    `_mm256_sign_epi8` for both. AVX-512 VNNI's `_mm256_dpbusd_epi32` multiplies the same unsigned
    by signed bytes in one instruction, adding each group of 4 products straight into an int32 lane:
    no int16 step that could saturate. Only then do floats come in: the block's integer sum times its
    two scales.
    """),
    code(r"""
    lane_colors = ["tab:blue", "tab:orange"] * 4  # alternating, so that the groups stand out


    def cells(ax, y, n, width, alpha, label):
        # n cells of `width` bytes in a row at height y, coloured by the int32 lane they end up in
        for i in range(n):
            lane = i * width // 4
            ax.add_patch(Rectangle((i * width, y), width, 0.7, facecolor=lane_colors[lane], alpha=alpha,
                                   edgecolor="white", linewidth=1))
        ax.text(32.6, y + 0.35, label, va="center", fontsize=9)


    def links(ax, y_from, y_to, group):
        # a funnel from each group of `group` bytes down to the cell they are summed into
        for start in range(0, 32, group):
            centre, top, bottom = start + group / 2, group / 2 - 0.1, group / 4
            ax.fill([centre - top, centre + top, centre + bottom, centre - bottom], [y_from, y_from, y_to + 0.7, y_to + 0.7],
                    color="0.88", linewidth=0)


    with plt.rc_context({"figure.dpi": 80, "font.size": 10}):
        fig, (avx2, vnni) = plt.subplots(1, 2, figsize=(9.5, 3.0), gridspec_kw={"wspace": 0.7})
        cells(avx2, 5.4, 32, 1, 0.35, "|w|: 32 bytes")
        cells(avx2, 4.5, 32, 1, 0.35, "x·sign(w): 32 bytes")
        links(avx2, 4.5, 2.8, 2)
        cells(avx2, 2.8, 16, 2, 0.6, "maddubs: 16 × int16\n(pairs, saturating)")
        links(avx2, 2.8, 1.0, 4)
        cells(avx2, 1.0, 8, 4, 0.95, "madd with 1: 8 × int32")
        avx2.set_title("AVX2: two instructions", fontsize=10)
        cells(vnni, 5.4, 32, 1, 0.35, "|w|: 32 bytes")
        cells(vnni, 4.5, 32, 1, 0.35, "x·sign(w): 32 bytes")
        links(vnni, 4.5, 1.0, 4)
        cells(vnni, 1.0, 8, 4, 0.95, "dpbusd: 8 × int32\n(groups of 4)")
        vnni.set_title("AVX-512 VNNI: one instruction", fontsize=10)
        for ax in (avx2, vnni):
            ax.set_xlim(0, 32)
            ax.set_ylim(0.7, 6.3)
            ax.set_xticks([0, 8, 16, 24, 32])
            ax.set_xlabel("byte of the 256-bit register")
            ax.set_yticks([])
            for side in ("left", "right", "top"):
                ax.spines[side].set_visible(False)
        fig.subplots_adjust(left=0.02, right=0.84, bottom=0.17, top=0.9)
        show(fig)
    """),
    md(r"""
    Emulate the two AVX2 instructions on integer tensors, with their exact rules (bytes that wrap,
    int16 that saturates), and run them on real data: the rounded input of layer 6's `down_proj` for
    one token, against one row of its Q8_0 weight.
    """),
    code(r"""
    def wrap8(v: torch.Tensor) -> torch.Tensor:
        return ((v.to(torch.int32) + 128) % 256 - 128).to(torch.int8)  # a register byte keeps 8 bits


    def sign_epi8(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # _mm256_sign_epi8: a where s > 0, -a where s < 0 (in 8 bits), 0 where s == 0
        a32 = a.to(torch.int32)
        return wrap8(torch.where(s > 0, a32, torch.where(s < 0, -a32, 0)))


    def maddubs_epi16(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # _mm256_maddubs_epi16: u's bytes read as unsigned, s's as signed; adjacent products added, saturated to int16
        products = u.view(torch.uint8).to(torch.int32) * s.to(torch.int32)
        return (products[..., 0::2] + products[..., 1::2]).clamp(-32768, 32767)


    def madd_epi16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # _mm256_madd_epi16: int16 products, adjacent pairs added into int32
        products = a.to(torch.int32) * b.to(torch.int32)
        return products[..., 0::2] + products[..., 1::2]


    def dot_avx2(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # (..., 32) int8 blocks -> (..., 8) int32 lanes, as the kernel's dot_avx2 for 8 bits
        pairs = maddubs_epi16(sign_epi8(w, w), sign_epi8(x, w))
        return madd_epi16(pairs, torch.ones_like(pairs))


    x_row = inputs[6, "mlp.down_proj"][-1:]  # (1, 2048) the last token's input
    qx, dx = quantize_activation_blocks(x_row)  # (1, 2048) int8, (1, 64) float32 scales
    q_down, s_down = quantize_blocks(model.blocks[6].mlp.down_proj.weight.detach(), bits=8)
    row = 0
    lanes = dot_avx2(q_down[row].reshape(-1, BLOCK), qx[0].reshape(-1, BLOCK))  # (64 blocks, 8 lanes)
    exact_isum = (q_down[row].reshape(-1, BLOCK).long() * qx[0].reshape(-1, BLOCK).long()).sum(-1)  # int64: no overflow
    assert torch.equal(lanes.sum(-1).long(), exact_isum)
    print("block 0's 8 lanes:", lanes[0].tolist(), "sum", int(lanes[0].sum()), "= the exact integer dot", int(exact_isum[0]))

    y_emulated = (s_down[row].float() * dx[0] * lanes.sum(-1).float()).sum()
    y_reference = block_matmul_reference(x_row, q_down[row:row + 1], s_down[row:row + 1], bits=8)[0, 0]
    print(f"output {row}: emulated {steady(y_emulated.item(), 3)}, block_matmul_reference {steady(y_reference.item(), 3)}")
    assert torch.isclose(y_emulated, y_reference, rtol=1e-5)
    """),
    md(r"""
    **Why the grid stops at -127.** Try every pair of byte values, placed twice so that `maddubs`
    adds two equal products, against the exact integers. With values in -127..127 every step fits:
    the negated activation is still a signed byte, and a pair sum is at most 2·127·127, under int16's
    32767. With -128 it does not: -(-128) = +128 is not a signed byte (the register wraps it back to
    -128), and the exact pair sum 2·(-128)·(-128) = 32768 is one more than int16 holds, so an
    instruction that saturates would be wrong even without the sign trick.
    """),
    code(r"""
    values = torch.arange(-128, 128)
    a, b = torch.meshgrid(values, values, indexing="ij")  # every (w, x) pair of bytes
    w_blocks = torch.zeros(256 * 256, BLOCK, dtype=torch.int8)
    x_blocks = torch.zeros(256 * 256, BLOCK, dtype=torch.int8)
    w_blocks[:, :2], x_blocks[:, :2] = a.reshape(-1, 1).to(torch.int8), b.reshape(-1, 1).to(torch.int8)
    wrong = dot_avx2(w_blocks, x_blocks).sum(-1) != 2 * a.reshape(-1) * b.reshape(-1)
    in_grid = (a.reshape(-1) > -128) & (b.reshape(-1) > -128)
    print(f"pairs in -127..127 computed wrong: {int(wrong[in_grid].sum())} of {int(in_grid.sum())}")
    print(f"pairs with a -128 computed wrong: {int(wrong[~in_grid].sum())} of {int((~in_grid).sum())}")
    print(f"2·127·127 = {2 * 127 * 127} < 32767: {2 * 127 * 127 < 32767};   "
          f"2·128·128 = {2 * 128 * 128} > 32767: {2 * 128 * 128 > 32767}")
    print("-(-128) as a byte:", int(torch.tensor([-128], dtype=torch.int8).neg()))
    assert not wrong[in_grid].any() and wrong[~in_grid].any()
    assert int(quantize_blocks(w, 8)[0].min()) >= -127  # blocks.py never uses -128
    """),
    md(r"""
    ## 4. The kernel, read

    `minigemma/quantize/csrc/block_matmul.cpp` is one commented C++ file with three code paths for the
    same numbers: portable C loops, AVX2 and AVX-512 VNNI. Each x86 function carries a
    `__attribute__((target(...)))`, so the compiler may use those instructions inside it alone, and
    one build serves every CPU; which paths a CPU can run is asked at run time. The cells below
    print functions of the file *as it is now*, found by name (the file changes as the kernel is tuned;
    this notebook never keeps a copy). First the helper that finds them:
    """),
    code(r"""
    CPP = native.SOURCE  # minigemma/quantize/csrc/block_matmul.cpp


    def cpp_definition(name: str) -> tuple[int, int]:
        # (first, last) line numbers, 1-based, of the definition of `name` in the .cpp: the function or
        # constant, with the comment and template lines just above it. A definition starts at column 0.
        lines = CPP.read_text().splitlines()
        start = next((i for i, line in enumerate(lines) if re.match(rf"[A-Za-z_][^;(]*\b{re.escape(name)}\b", line)), None)
        assert start is not None, f"{name} is not defined in {CPP.name} any more: update this notebook"
        code_only = lambda line: re.sub(r'//.*|"(?:\\.|[^"\\])*"', "", line)
        depth, end, opened = 0, start, False
        for end in range(start, len(lines)):  # to the ';' of a constant, or the brace closing the function
            text = code_only(lines[end])
            if not opened and ";" in text and "{" not in text.split(";")[0]:
                break
            depth += text.count("{") - text.count("}")
            opened = opened or "{" in text
            if opened and depth == 0:
                break
        first = start
        while first > 0 and re.match(r"\s*(//|template\b)", lines[first - 1]):  # its comment, its template line
            first -= 1
        return first + 1, end + 1


    def show_cpp(*names: str) -> None:
        text = CPP.read_text().splitlines()
        for name in names:
            first, last = cpp_definition(name)
            display(Markdown(f"`{CPP.name}`, lines {first}-{last}:\n```cpp\n" + "\n".join(text[first - 1:last]) + "\n```"))
    """),
    md(r"""
    **Rounding the input rows.** Once per call, before any weight is read, each block of 32 input
    values gets its scale and its integers. This is `quantize_activation_blocks` of blocks.py in C:
    the scale is `amax / 127`, and the values are multiplied by its reciprocal (one division per
    block instead of 32) and rounded half to even. blocks.py copies that formula exactly, not the
    "obvious" `x / d`: the two can differ in the last bit, and where that bit decides a rounding, an
    integer differs by one. `quantize_avx2` does the same 8 floats at a time.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (printed from the .cpp as it is now: it changes as the kernel is tuned)
    show_cpp("BLOCK", "quantize_generic")
    """),
    md(r"""
    **The dot products.** Section 3's instructions, as the kernel writes them. AVX2, 8-bit weights:
    the sign trick, then `maddubs` and `madd`. 4-bit weights (Q4_0-like, stored as q + 8 in 0..15,
    already unsigned) need no sign trick: the kernel multiplies q + 8 as it is and subtracts
    8 · sum(x) per block afterwards (exercise 2). VNNI uses that idea for 8 bits too: `dpbusd` has no
    int16 step to saturate, so flipping each weight's top bit (an XOR, which adds 128 to a signed byte)
    makes w + 128 unsigned, and the tile subtracts 128 · sum(x): one instruction instead of two
    `sign`s.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (printed from the .cpp as it is now: it changes as the kernel is tuned)
    show_cpp("dot_avx2", "dot_vnni")
    """),
    md(r"""
    **A tile.** The work is cut into tiles: a few consecutive output rows (weight rows) times one or
    two input rows, over all K/32 blocks. Inside a tile each weight block is loaded once for all its
    input rows and each input block once for all its weight rows. The portable tile is the formula of
    section 2 in plain loops: an exact `int32` sum per block, then one float multiply-add with the two
    scales. The SIMD tile (`tile_simd`, compiled once as `tile_avx2` and once as `tile_vnni`) does the
    same with `load_weights` and the dot products above, keeping 8 float partial sums per output and
    adding them up at the end. Two details make it fast: the scales of 4 blocks are multiplied at once
    (one float16 conversion for four), and the zero-point surplus of the offset paths is removed once
    per 4 blocks, in float.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (printed from the .cpp as it is now: it changes as the kernel is tuned)
    show_cpp("tile_generic", "tile_simd")
    """),
    md(r"""
    **The operator.** `block_matmul` checks its inputs, rounds the input rows once, picks the tile
    functions of the requested code path, and splits the output rows over PyTorch's threads: rows
    are independent, so no two threads ever write the same output. It is registered as a PyTorch
    operator (`torch.ops.minigemma_blocks.block_matmul`), which `native.block_matmul` calls and
    `torch.compile` sees as one opaque node.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (printed from the .cpp as it is now: it changes as the kernel is tuned)
    show_cpp("block_matmul")
    """),
    md(r"""
    **Checked against the reference.** The integer parts are exact, so every code path must give
    blocks.py's numbers up to the order of the final float sum over blocks: a wrong index or scale
    would be off by ~100%, the order by ~1e-7. The rounding of the inputs must agree bit for bit.
    Real data: section 2's matmul inputs of every fourth layer through the matching layers of the
    `int8-blocks` model (q, k and v are one fused matrix there, as are gate and up), the output
    projection with the last token's final normalized vector, and one 4-bit matrix.
    """),
    code(r"""
    def within(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> bool:
        return got.shape == expected.shape and bool((got - expected).abs().max() <= tolerance * expected.abs().max())


    FUSED = {"attn.q_proj": "attn.qkv", "attn.o_proj": "attn.o_proj", "mlp.gate_proj": "mlp.gate_up", "mlp.down_proj": "mlp.down_proj"}
    cases = [(inputs[layer, kind], blocks_model.get_submodule(f"blocks.{layer}.{FUSED[kind]}"), 8)
             for layer in LAYERS[::4] for kind in KINDS]
    with torch.no_grad():
        _, cache = run_with_cache(model, torch.tensor([sentence_ids]), "ln_final.hook_normalized")
    cases.append((cache["ln_final.hook_normalized"][0, -1:], blocks_model.embed.linear, 8))  # x the 262144 x 640 embedding
    q4, s4 = quantize_blocks(model.blocks[3].mlp.up_proj.weight.detach(), bits=4)
    cases.append((inputs[3, "mlp.gate_proj"], SimpleNamespace(weight=q4, scale=s4), 4))

    if KERNEL:
        matmuls_agree = rounding_agrees = True
        expected = [block_matmul_reference(x, layer.weight, layer.scale, bits) for x, layer, bits in cases]
        for path in native.supported_isas():
            for (x, layer, bits), expected_y in zip(cases, expected):
                matmuls_agree &= within(native.block_matmul(x, layer.weight, layer.scale, bits, path), expected_y)
                rounding_agrees &= all(torch.equal(a, b) for a, b in zip(native.quantize_activations(x, path),
                                                                          quantize_activation_blocks(x)))
        print(f"every code path this CPU runs, on {len(cases)} real matmuls: outputs within 1e-5 of the reference's "
              f"largest: {matmuls_agree}; rounded inputs identical: {rounding_agrees}")
        assert matmuls_agree and rounding_agrees
    else:
        print("minigemma's block kernel is unavailable here (see the warning at the top): nothing to check; "
              "blocks.block_matmul_reference computes the same numbers in PyTorch")
    """),
    md(r"""
    ## 5. How fast it reads the output projection

    At batch 1 a matmul reads every weight once and does two flops per weight, so the memory read
    bandwidth bounds it (notebook 13, section 2): the best a kernel can do is read its bytes at the
    bandwidth. The 262144 x 640 output projection is the largest matrix read per token (the cell
    below prints its share of the weights), so its speed matters most. Time one input row through
    it: minigemma's kernel on each code path (Q8_0, 8.5 bits per weight), fbgemm's int8 x int8 as
    `int8-dynamic` uses it (int8 with a float32 scale per row), and the float32 model's own output
    projection (oneDNN). Each is timed with the benchmarks' own `median_ms`, and turned into GB/s:
    bytes of weights and scales read, over the time. First the bytes, which do not depend on the
    machine:
    """),
    code(r"""
    dynamic_model, _ = minigemma.load("gemma3-270m", progress=False, quantize="int8-dynamic")
    embed_blocks, embed_int8 = blocks_model.embed.linear, dynamic_model.embed.linear
    nbytes = {
        "float32 (oneDNN)": model.embed.weight.numel() * 4,
        "int8, one scale per vector (fbgemm)": embed_int8.weight.numel() + embed_int8.scale.numel() * embed_int8.scale.element_size(),
        "Q8_0 blocks (our kernel)": embed_blocks.weight.numel() + embed_blocks.scale.numel() * embed_blocks.scale.element_size(),
    }
    print(f"the output projection: {model.embed.weight.numel() / model.num_parameters():.0%} of the 270M's parameters")
    for label, n in nbytes.items():
        print(f"{label:36s} {n / 1e6:6.1f} MB read per token")
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (timings: they depend on the machine, and on what else runs on it)
    x_last = torch.randn(1, 640)  # the time does not depend on the values
    bandwidth = read_bandwidth(torch.device("cpu"))  # as the benchmarks measure it
    timed = {}  # label -> (ms, GB/s)
    with torch.inference_mode():
        calls = {"float32 (oneDNN)": (lambda: model.unembed(x_last, model.embed), nbytes["float32 (oneDNN)"]),
                 "int8 x int8, fbgemm": (lambda: dynamic_model.unembed(x_last, dynamic_model.embed),
                                         nbytes["int8, one scale per vector (fbgemm)"])}
        for path in native.supported_isas() if KERNEL else ():
            calls[f"Q8_0 kernel, {path}"] = (lambda path=path: native.block_matmul(x_last, embed_blocks.weight, embed_blocks.scale, 8, path),
                                             nbytes["Q8_0 blocks (our kernel)"])
        for label, (call, n) in calls.items():
            ms = median_ms(call, repeats=5)
            timed[label] = (ms, n / ms / 1e6)
    print(f"read bandwidth (sum of a 1 GiB tensor, median of 7): {bandwidth:.1f} GB/s, {torch.get_num_threads()} threads")
    for label, (ms, gbs) in timed.items():
        print(f"{label:24s} {ms:6.1f} ms  {gbs:5.1f} GB/s  ({gbs / bandwidth:.0%} of the bandwidth)")
    if not KERNEL:
        print("(minigemma's block kernel is unavailable here: no bars for it)")

    with plt.rc_context({"figure.dpi": 80, "font.size": 10}):
        fig, ax = plt.subplots(figsize=(7, 2.8))
        labels = list(timed)
        ax.barh(labels, [gbs for _, gbs in timed.values()], color=["0.6", "tab:orange"] + ["tab:blue"] * (len(labels) - 2))
        ax.axvline(bandwidth, color="k", linestyle="--", linewidth=1, label="read bandwidth")
        for i, (ms, gbs) in enumerate(timed.values()):
            ax.text(gbs, i, f" {ms:.1f} ms", va="center", fontsize=9)
        ax.set_xlabel("GB/s of weights read (262144 x 640 output projection, one row)")
        ax.set_xlim(0, 1.25 * max(bandwidth, *(gbs for _, gbs in timed.values())))
        ax.invert_yaxis()
        ax.legend(fontsize=9, loc="lower right")
        fig.tight_layout()
        show(fig)
    """),
    md(r"""
    How to read the bars: a kernel whose bar reaches the dashed line is limited by memory, and no
    code can make it faster on this machine; one that stops well short is limited by its own work
    per byte (loads, unpacking, the float multiply-add per block, the final sums), and that is what
    tuning the tile functions attacks. The float32 matmul reads 4 bytes per weight and the integer
    kernels about 1, so even below the line they may take less time per token.
    `benchmarks/block_kernel.py` times every matrix shape of the 270M this way, and
    `benchmarks/RESULTS.md` keeps the measurements.

    ## 6. The whole model, decoding

    Finally, greedy decoding of 32 tokens at batch 1, with the same timing loop as
    `benchmarks/speed.py` (`time_minigemma`: one warm-up round, then one timed), for float32,
    `int8-dynamic` (int8 weights, the output projection through fbgemm) and `int8-blocks` (every
    matmul through our kernel), and llama.cpp on the embedded GGUF itself where llama-cpp-python is
    installed. "% of bound" is the speed over the bandwidth limit: bandwidth / bytes read per token.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (timings: they depend on the machine, and on what else runs on it)
    prompt_ids = tok.encode("The capital of France is", add_bos=True)
    args = SimpleNamespace(device="cpu", repeats=1, decode=32, threads=0, prefill=len(prompt_ids))
    speeds = {}  # label -> (tokens/s, bytes read per token)
    for label, m in [("float32", model), ("int8-dynamic", dynamic_model), ("int8-blocks", blocks_model)]:
        speeds[label] = (time_minigemma(m, prompt_ids, prompt_ids, args)["decode"], weight_bytes_per_token(m))
    if llama_cpp_installed():
        import llama_cpp

        llm = build_llama_cpp(args)
        tensor_bytes = llama_cpp.llama_model_size(llm.model)  # = speed.gguf_tensor_bytes(), without parsing the file again
        speeds["llama.cpp (the GGUF)"] = (time_llama_cpp(llm, prompt_ids, prompt_ids, args)["decode"], tensor_bytes)
    for label, (tps, per_token) in speeds.items():
        bound = bandwidth * 1e9 / per_token
        print(f"{label:22s} {tps:5.1f} tokens/s  {per_token / 1e6:6.0f} MB/token  {tps / bound:4.0%} of bound ({bound:.0f} tokens/s)")
    if not llama_cpp_installed():
        print("llama-cpp-python is not installed, so llama.cpp is not in this table: benchmarks/RESULTS.md has "
              "its speed on the same GGUF (pip install llama-cpp-python, then run this cell again)")
    if not KERNEL:
        print("(without the kernel, int8-blocks multiplies dequantized weights in float: not the kernel's speed)")
    """),
    md(r"""
    A matmul's speed is not the whole token: the 72 layer matmuls are small (a few hundred KB each),
    where the cost of calling a kernel weighs as much as its reading, and attention, norms and
    Python run between them. This table runs the model eagerly; `minigemma.compile(model)` records one
    decoding step and removes most of that Python (a minute of compiling first).
    `benchmarks/speed.py --variants llamacpp,int8,int8-compiled,int8-dynamic` measures both, with more
    tokens and repeats, each variant in a fresh process, and `benchmarks/RESULTS.md` keeps the results.

    ## Summary

    - **Q8_0**: blocks of 32 weights with a float16 scale each, 8.5 bits per weight; the integers
      are rounded against the scale as stored.
    - Rounding the *activations* to int8 turns every block's dot product into an exact integer sum
      that a CPU does 32 products at a time. Gemma's activations have a few huge, recurring channels,
      so the scale must not reach far: per block of 32 is nearly free, per vector moves the
      predictions many times more, per tensor far more (section 2 measures all three on the real 270M).
    - AVX2 multiplies unsigned by signed bytes (`maddubs`), in int16 pairs that saturate, so the
      kernel moves the weights' signs onto the activations. -(-128) is not a byte and 2·128·128 does
      not fit an int16, so the grid stops at -127.
    - minigemma's kernel is one C++ file with a portable, an AVX2 and a VNNI path, checked against
      blocks.py's PyTorch reference on every CPU before it is used.
    - Rounding amplifies the last bits of float sums: with rounded activations, a short text's
      perplexity moves by percents from one CPU to another. Compare whole distributions (the KL
      divergence), on more than one run, before believing a small difference.
    - **The pitfall:** a scale shared too widely. One scale for all the tokens of a prompt, as
      PyTorch's int8 x int8 kernel takes, lets the largest value anywhere set the step for every other
      value; the damage only shows in the whole model's quality, not in a unit test of one matmul.

    The one number to remember:
    """),
    code(r"""
    print(f"Q8_0: {bits_per_weight} bits per weight; with the activations rounded per block of 32 too, the 270M's "
          f"predictions barely move (KL under 0.005 from float32: {block_kl < 0.005 and kl[KERNEL_LABEL] < 0.005})")
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (the time depends on the machine, and on whether the kernel had to be built)
    print(f"this notebook ran in {time.perf_counter() - notebook_start:.0f} s")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/16_block_kernel.py` (run by `tests/test_exercises_16.py`).

    1. **VNNI by hand.** Write `dpbusd(acc, u, s)`, the emulation of `_mm256_dpbusd_epi32`: `u` and `s`
       are (..., 32) int8 tensors whose bytes `u` reads as unsigned and `s` as signed, `acc` is
       (..., 8) int32, and lane i gets `acc[i]` plus the four products of bytes 4i..4i+3. Then
       `dot_vnni(w, x)` for int8 blocks with the sign trick (as `dot_avx2` does it; the kernel's own
       `dot_vnni` uses the + 128 offset of exercise 2 instead), and check it
       against `dot_avx2` above and the exact integer dot product on every pair of section 3. Which
       step of `dot_avx2` could overflow that `dpbusd` does not have?
    2. **A 4-bit block with a zero point.** `quantize_blocks(w, 4)` stores each value as q + 8 in
       0..15, two per byte (`pack_nibbles`: byte j holds element j in its low nibble, element j + 16 in
       its high one). Write `q4_dot(packed, qx)` that takes the 16 bytes of one block and 32 int8
       activations and returns the exact integer dot product sum(q · x) the way the AVX2 path gets
       it: multiply the *unsigned* q + 8 by x, then subtract 8 · sum(x). Check it against
       `unpack_nibbles` on real weights. Why does this avoid the sign trick?
    3. **How big should a block be?** Write `block_rounding_error(x, w, block)`: the relative error of
       x Wᵀ when x (tokens, in) is rounded to int8 with one scale per `block` consecutive values
       (`block` = in is one scale per vector). On the inputs of section 2, compare blocks of 8, 16,
       32, 64, 128 and a whole vector, with the bits each activation value costs (8 + 32 / block, for
       a float32 scale). Is there a knee? What does halving the block cost the kernel (look at what
       `tile_generic` does once per block), and why does llama.cpp's choice of 32 suit AVX2?
    """),
    code(r"""
    def dpbusd(acc, u, s):
        ...  # your code


    def dot_vnni(w, x):
        ...  # your code


    def q4_dot(packed, qx):
        ...  # your code


    def block_rounding_error(x, w, block):
        ...  # your code

    # When your functions return something, check them, e.g.:
    # assert torch.equal(dot_vnni(w_blocks, x_blocks)[in_grid].sum(-1), dot_avx2(w_blocks, x_blocks)[in_grid].sum(-1))
    """),
    md(r"""
    **Next:** this is the end of the series. From here: `benchmarks/` measures everything these
    notebooks timed, with more care (`block_kernel.py` per matrix shape, `speed.py` the whole model,
    `quality.py` every format's perplexity), and `benchmarks/RESULTS.md` records what each change of
    the code did to them; the kernel's tile functions are the place to try your own ideas, with
    `tests/test_block_kernel.py` and `benchmarks/block_kernel.py` to tell you whether they are right
    and faster. The exercises of every notebook, 00 to 16, have their solutions in
    `notebooks/solutions/`, and `docs/pitfalls.md` lists the details that make a reimplementation of
    Gemma compute what was trained.
    """),
]


def build() -> Path:
    return write_notebook(CELLS, "16_block_kernel.ipynb", id_prefix="16")  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    print(build())

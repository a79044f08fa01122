"""Write notebook 13 (quantization and speed) from the cells below, then execute it with nbconvert.

    .venv/bin/python notebooks/_build/build_13.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/13_quantization_and_speed.ipynb

Timing cells carry `# NBVAL_IGNORE_OUTPUT`; quality numbers (perplexity, agreement, greedy text)
are compared by nbval, so they must hold on any CPU: rounded far coarser than float rounding, and
greedy text only where every step won by a clear margin (checked in the cell). `make test` runs
this notebook a second time under another CPU code path to prove it (README, "Tests").
"""

from __future__ import annotations

from pathlib import Path

from nbcells import code, md, write_notebook


CELLS = [
    md(r"""
    # 13 · Quantization and speed: a smaller, faster Gemma on a laptop

    **What you will learn**
    - how much memory Gemma 2B and 7B need at 16, 8 and 4 bits, computed exactly without allocating any;
    - why generating one token at a time is limited by *memory bandwidth*, not arithmetic, and how to
      turn a bandwidth measurement into a speed limit in tokens per second;
    - int4 quantization in groups, written by hand and checked against `minigemma.quantize`;
    - what int8 and int4 cost in quality on the real 270M: perplexity on a text and agreement of the
      next-token predictions with float32;
    - what makes the one model fast: work done once per forward pass, a KV cache written at a position
      tensor, quantized modules swapped in place, `minigemma.compile`; and how close it gets to the
      bandwidth limit;
    - why llama.cpp is faster still on a CPU (8-bit activations in blocks of 32), why rounding
      Gemma's activations with one scale for many values (a vector, or a whole prompt) hurts the
      layers, and where it is harmless.

    **Builds on** `04_attention` (the KV cache), `06_the_model` (the model these functions rewrite)
    and `08_real_weights` (memory arithmetic, int8 with one scale per row).

    **Read along:** the Gemma 3 report, section 2.3 (quantization-aware training: per-channel int4,
    per-block int4, switched fp8); Williams, Waterman & Patterson, "Roofline" (CACM 2009) for the
    bandwidth argument; `benchmarks/RESULTS.md` for the full measurements, transformers included.
    """),
    code(r"""
    import copy
    import time
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import minigemma
    from minigemma.explore.inspection import run_with_cache
    from minigemma.loading.weights import empty_model
    from minigemma.quantize import (agreement, dequantize_int4, float_copy, quantize, quantize_int4, quantize_int8,
                                    score_text, unpack_int4, weight_bytes)

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    print(model.config.name, f"{model.num_parameters():,} parameters")
    """),
    md(r"""
    ## 1. Memory at 16, 8 and 4 bits

    Notebook 08 counted Gemma's parameters on the meta device (shapes, no storage) and priced them in
    float32, bfloat16 and int8. `minigemma.quantize.quantize` replaces every linear layer, and the tied
    embedding, by a quantized one; it works on the meta device too, so the *same code* that will
    shrink the real 270M below tells us, byte for byte, what 2B and 7B weigh:

    - **int8**: one byte per weight plus one float32 scale per output row;
    - **int4**: half a byte per weight plus, for every group of 64 weights of a row, a bf16 scale and
      a bf16 zero point: 4 + 32/64 = 4.5 bits per weight.
    """),
    code(r"""
    GB = 1e9
    sizes = {}
    for name in ["gemma3-270m", "gemma-2b", "gemma-7b"]:
        config = minigemma.get_config(name)
        sizes[name] = {
            "bf16": empty_model(config).num_parameters() * 2,
            "int8": weight_bytes(quantize(empty_model(config), bits=8)),
            "int4": weight_bytes(quantize(empty_model(config), bits=4, group_size=64)),
        }
        n = empty_model(config).num_parameters()
        print(f"{name:12s} " + "  ".join(f"{fmt} {b / GB:6.2f} GB ({8 * b / n:.2f} bits/weight)" for fmt, b in sizes[name].items()))
    assert abs(8 * sizes["gemma-2b"]["int4"] / 2_506_172_416 - 4.5) < 0.01  # only norms stay in float
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    names = ["gemma-2b", "gemma-7b"]
    for i, fmt in enumerate(["bf16", "int8", "int4"]):
        bars = ax.bar(np.arange(len(names)) + (i - 1) * 0.27, [sizes[n][fmt] / GB for n in names], width=0.27, label=fmt)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    for limit, label in [(8, "8 GB laptop"), (16, "16 GB GPU")]:
        ax.axhline(limit, color="k", linestyle="--", linewidth=0.7)
        ax.text(1.45, limit + 0.4, label, fontsize=7, ha="right")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("weights (GB)")
    ax.set_title("Gemma weights at 16, 8 and 4 bits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    At 4 bits, 7B fits a 16 GB GPU with room for a long KV cache and 2B fits in 1.4 GB: a phone.

    ## 2. Decoding is limited by memory bandwidth

    To produce one token at batch 1, every weight matrix is read from memory once and each weight
    is used for exactly one multiply-add with the current token's activations: 2 flops per weight.
    In float32 that is 2 flops per 4 bytes read. A laptop CPU core does tens of GFLOP/s but the
    memory system delivers a few tens of GB/s *shared by all cores*, so the processor mostly waits
    for bytes (the "roofline" argument): the time per token is at least
    **bytes of weights read / memory bandwidth**, whatever the code does with them.

    Measure this machine's read bandwidth the simplest way: sum a big tensor, which reads every byte
    once and does one addition per 4 bytes. (Timings vary from run to run and machine to machine;
    the checks below do not depend on them.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    def read_bandwidth(nbytes: int = 2**29, repeats: int = 5) -> float:
        x = torch.ones(nbytes // 4)
        x.sum()  # first touch: the pages get allocated
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            x.sum()
            best = min(best, time.perf_counter() - t)
        return nbytes / best / GB


    bandwidth = read_bandwidth()
    print(f"read bandwidth: {bandwidth:.1f} GB/s with {torch.get_num_threads()} threads")
    """),
    md(r"""
    Bytes read per token: every linear layer, and the tied embedding *as the output projection*
    (the input lookup reads a single row). For the 270M that matrix is 262,144 x 640, 63% of all
    parameters, which is why quantizing the embedding matters as much as the layers.
    """),
    code(r"""
    per_token = {"fp32": weight_bytes(model), "bf16": weight_bytes(model) // 2,
                 "int8": sizes["gemma3-270m"]["int8"], "int4": sizes["gemma3-270m"]["int4"]}
    for fmt, b in per_token.items():
        print(f"{fmt}: {b / 1e6:7.1f} MB read per token")
    embedding_share = model.embed.weight.numel() / model.num_parameters()
    print(f"the embedding / output projection: {embedding_share:.0%} of the parameters")
    assert per_token["fp32"] == 4 * model.num_parameters()
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    bound = {fmt: bandwidth * GB / b for fmt, b in per_token.items()}
    print("speed limit on this machine: " + ", ".join(f"{fmt} {tps:.0f} tok/s" for fmt, tps in bound.items()))
    """),
    md(r"""
    ## 3. int4 in groups, by hand

    Notebook 08 quantized a row to int8 with one scale: the row's largest |w| maps to 127. With only
    16 levels one scale per row of 640 is too coarse, so int4 cuts each row into **groups** of
    `group_size` consecutive weights, each with its own grid. The grid is *asymmetric*: the group's
    minimum maps to level 0 and its maximum to level 15, so lopsided groups use all 16 levels.
    We write it as PyTorch's int4 kernels expect it,

    $$w \approx (q - 8)\,s + z, \qquad s = \frac{\max - \min}{15}, \quad z = \min + 8s,$$

    with $q \in \{0..15\}$ and $z$ the value of the middle level. $s$ and $z$ are stored in bf16
    and $q$ is rounded against those stored values. Two 4-bit values share a byte.
    """),
    code(r"""
    w = model.blocks[0].mlp.gate_proj.weight.detach()  # (2048, 640)
    group_size = 64

    groups = w.reshape(w.shape[0], -1, group_size)  # (2048, 10, 64): 10 groups per row
    low, high = groups.amin(-1), groups.amax(-1)
    s = ((high - low) / 15).to(torch.bfloat16)
    z = (low + 8 * s.float()).to(torch.bfloat16)
    q = (torch.round((groups - z.float()[..., None]) / s.float()[..., None]) + 8).clamp(0, 15)
    w_hat = ((q - 8) * s.float()[..., None] + z.float()[..., None]).reshape(w.shape)

    packed, scale, zero = quantize_int4(w, group_size)  # the package's version
    assert torch.equal(scale, s) and torch.equal(zero, z)
    assert torch.equal(unpack_int4(packed).reshape(q.shape), q.to(torch.uint8))
    torch.testing.assert_close(dequantize_int4(packed, scale, zero), w_hat, rtol=0, atol=0)
    print(f"{w.numel() * 4:,} bytes fp32 -> {packed.numel() + 2 * scale.numel() + 2 * zero.numel():,} bytes int4")
    """),
    md(r"""
    How big is the error, and how does it depend on the group size? Smaller groups follow the weights
    more closely but pay 32 bits of scale and zero per group. Per-row int8 (notebook 08) for comparison:
    """),
    code(r"""
    def relative_error(w_hat: torch.Tensor) -> float:
        return ((w_hat - w).norm() / w.norm()).item()


    q8, s8 = quantize_int8(w)
    rows = [("int8, per row", 8 + 32 / w.shape[1], relative_error(q8.float() * s8[:, None]))]
    for g in (32, 64, 128):  # the kernels also take 256, which does not divide 640
        rows.append((f"int4, groups of {g}", 4 + 32 / g, relative_error(dequantize_int4(*quantize_int4(w, g)))))
    for label, bits, err in rows:
        print(f"{label:20s} {bits:5.2f} bits/weight   weight error {err:.2%}")
    errors = [err for _, _, err in rows[1:]]
    assert errors == sorted(errors)  # bigger groups, coarser grids
    assert rows[0][2] < errors[0] / 4
    """),
    md(r"""
    ## 4. The whole model, and what it costs in quality

    `quantize(model, bits, group_size)` swaps every `nn.Linear` for an `Int8Linear` or `Int4Linear`,
    and the embedding for a `QuantizedEmbedding`: one quantized copy of the matrix serves both of its
    roles, the lookup (which dequantizes only the rows it needs) and the output projection (a
    quantized matmul). Norms stay float32. Everything else in the model is unchanged, so the hooks,
    the KV cache and `minigemma.generate` all work on the quantized model as before.

    Quality is measured two ways on an original text in `assets/perplexity_text.txt`:
    **perplexity** (exp of the mean negative log-likelihood of each next token: lower is better) and
    **agreement**, the fraction of positions where the quantized model's most likely next token is
    float32's.
    """),
    code(r"""
    text = (Path(minigemma.__file__).resolve().parents[1] / "assets" / "perplexity_text.txt").read_text()
    ids = tok.encode(text, add_bos=True)[:256]  # the first 256 tokens: enough to rank the schemes, quick
    print(len(ids), "tokens:", repr(tok.decode(ids[1:16])), "...")

    reference = score_text(model, ids)
    variants = {"int8": dict(bits=8), "int4, groups of 64": dict(bits=4, group_size=64),
                "int4, groups of 32": dict(bits=4, group_size=32)}
    quantized, scores = {}, {"fp32": reference}
    for label, scheme in variants.items():
        quantized[label] = quantize(copy.deepcopy(model), **scheme)
        scores[label] = score_text(quantized[label], ids)
    print(f"{'':20s} {'MB':>6s} {'perplexity':>10s} {'agreement':>9s}")
    for label, score in scores.items():
        m = quantized.get(label, model)
        print(f"{label:20s} {weight_bytes(m) / 1e6:6.0f} {score.perplexity:10.2f} {agreement(score, reference):9.1%}")
    assert scores["int8"].perplexity < 1.02 * reference.perplexity
    assert scores["int4, groups of 32"].perplexity < scores["int4, groups of 64"].perplexity
    """),
    md(r"""
    int8 is nearly free: perplexity moves by well under 2% and the top-1 prediction changes only
    where two tokens were already nearly tied. int4 by plain rounding costs much more on this small
    model, for three reasons worth knowing:

    - a 270M model has little redundancy: each weight matters more than in a 7B;
    - these weights were themselves dequantized from the GGUF's 5- and 6-bit grids, and rounding them
      onto a different 4-bit grid compounds two errors;
    - round-to-nearest is the simplest post-training method. The Gemma 3 report's int4 checkpoints are
      fine-tuned *with the quantization in the loop* (quantization-aware training) precisely to
      recover this loss; exercise 3 below tries a cheap improvement of the grid instead.

    Which matrices suffer most? `quantize` takes `layer_bits` and `embedding_bits` separately, and
    `Int4Linear.from_float` replaces a single layer, so one kind of matrix at a time can be tried;
    the queries and keys are a natural suspect, since QK-norm and the softmax amplify their errors.

    The greedy continuation of a prompt shows the same picture. Greedy text is decided, at every
    step, by the gap between the two best logits, and where that gap is tiny, rounding picks the
    winner: rounding that differs between CPUs (an AVX2 and an AVX-512 machine sum a matmul in a
    different order) and much more between float32 and bf16 arithmetic (the int8 and int4 kernels
    of section 5 take bf16 activations, 8 significant bits, where the CPU allows it). So these
    continuations run the quantized *weights* in float32 arithmetic (`float_copy`: the same rounded
    numbers in plain `nn.Linear` layers), and the cell checks that every token won by a margin far
    above what rounding can move a logit:
    """),
    code(r"""
    def greedy(m, ids: list[int], n: int) -> tuple[list[int], float]:
        # n greedy tokens after ids, and the smallest gap between the two best logits on the way.
        cache = m.new_cache(1, len(ids) + n)
        logits = m(torch.tensor([ids]), cache=cache, last_only=True)[0, -1]
        new, gap = [], float("inf")
        while True:
            best = logits.topk(2).values
            gap = min(gap, (best[0] - best[1]).item())
            new.append(int(logits.argmax()))
            if len(new) == n:
                return new, gap
            logits = m(torch.tensor([new[-1:]]), cache=cache, last_only=True)[0, -1]


    prompt = "My grandmother's kitchen"
    prompt_ids = tok.encode(prompt, add_bos=True)
    for label, m in [("fp32", model), ("int8", quantized["int8"]), ("int4 g32", quantized["int4, groups of 32"])]:
        with torch.no_grad():
            new, gap = greedy(float_copy(m), prompt_ids, 12)
        print(f"{label:8s}", repr(tok.decode(new)))
        assert gap > 0.01  # 100x what float32 rounding moves these logits (~1e-4 across CPUs, tests/test_real_270m.py)
    """),
    md(r"""
    ## 5. Speed, as changes to this model

    There is one model class, `minigemma.Gemma`, the one notebook 06 built; everything that makes it
    fast is a change to that model, and every change keeps its hook points, so the explorers of
    notebooks 11 and 12 work on a quantized model exactly as on the float one:

    | change | where | why it helps |
    |---|---|---|
    | RoPE cos/sin once per forward pass per RoPE base, masks once per kind of layer | `Gemma.forward_at` | they depend only on the positions, not on the layer |
    | a KV cache of fixed buffers written at a position *tensor* | `attention.KVCache` | every decoding step has the same shapes: one compilation serves them all |
    | local layers keep only their window (a ring buffer) | `attention.KVCache` | a long context costs what it must (notebook 07) |
    | fewer bytes per weight: `nn.Linear` swapped for `Int8Linear` / `Int4Linear` | `minigemma.quantize` | fewer bytes per token (section 2) |
    | the output projection is a module of its own, swapped for one that reads the quantized embedding | `model.unembed` | the 262k x 640 matrix is never dequantized whole |
    | q, k, v (and gate, up) in one quantized layer each, when `load` quantizes | `quantize.fuse` | PyTorch's int8/int4 kernels cost ~75 us a call on these small matrices, whatever their size |
    | `minigemma.compile(model)`: `torch.compile` of one decoding step | `minigemma/decoding/compile.py` | fuses the small elementwise kernels between the matmuls |

    `minigemma.load(name, quantize="int8")` does the swap at load time; `quantize(model, bits=...)`
    does it on a model you have. Look at what changed in the int8 model of section 4:
    """),
    code(r"""
    int8 = quantized["int8"]
    check_ids = torch.tensor([tok.encode("The capital of France is", add_bos=True)])
    for name in ["blocks.0.attn.q_proj", "blocks.0.mlp.down_proj", "embed", "unembed"]:
        print(f"{name:22s} {type(model.get_submodule(name)).__name__:20s} -> {type(int8.get_submodule(name)).__name__}")
    _, acts_f = run_with_cache(model, check_ids, "hook_pattern")
    _, acts_q = run_with_cache(int8, check_ids, "hook_pattern")
    assert sorted(acts_f) == sorted(acts_q)  # the same hook points, the same shapes
    print(f"hook points seen on both: {len(acts_q)}, e.g. blocks.0.attn.hook_pattern {tuple(acts_q['blocks.0.attn.hook_pattern'].shape)}")
    """),
    md(r"""
    Now speed: greedy decoding of 16 tokens after the prompt at each precision, against the bandwidth
    limit of section 2. `int8-dynamic` is int8 with one more swap, explained in section 6. (Run
    `python benchmarks/speed.py` for the complete table, compiled variants, prefill, peak memory and
    transformers and llama.cpp beside it.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    def decode_speed(m, n: int = 16) -> float:
        with torch.inference_mode():
            cache = m.new_cache(1, len(prompt_ids) + n + 1)
            next_id = m(torch.tensor([prompt_ids]), cache=cache, last_only=True)[:, -1].argmax(-1)
            start = time.perf_counter()
            for _ in range(n):
                next_id = m(next_id[:, None], cache=cache, last_only=True)[:, -1].argmax(-1)
            return n / (time.perf_counter() - start)


    paths = {"fp32": (model, "fp32"), "int8": (int8, "int8"),
             "int8-dynamic": (quantize(copy.deepcopy(model), bits=8, unembedding="int8-dynamic"), "int8"),
             "int4": (quantized["int4, groups of 64"], "int4")}
    speeds = {}
    for label, (m, fmt) in paths.items():
        decode_speed(m, 2)  # warm-up
        speeds[label] = decode_speed(m)
        print(f"{label:14s} {speeds[label]:6.1f} tok/s   ({speeds[label] / bound[fmt]:.0%} of the {fmt} limit)")

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.barh(list(speeds), list(speeds.values()), color="tab:blue", label="measured")
    ax.scatter([bound[fmt] for _, fmt in paths.values()], list(speeds), color="k", marker="|", s=200, label="bandwidth limit")
    ax.set_xlabel("tokens / second (batch 1, greedy)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    What to read in these numbers (`benchmarks/RESULTS.md` has them measured with care, and
    transformers beside them):

    - **fp32** gets closest to its limit. One detail matters on some CPUs: for one row times the
      262k x 640 matrix, `F.linear` calls MKL's matrix-vector product, which on an AVX2 machine was
      measured using a single core; `load` swaps the output projection for one through oneDNN's
      matmul, which uses all of them (`OneDNNUnembedding`).
    - **int8 and int4** read 4x and 7x fewer bytes, but PyTorch's CPU kernels spend longer
      *unpacking* the small integers into floats than memory takes to deliver them: they are limited
      by arithmetic again, well below their bandwidth limit. They are still faster than fp32, and int8
      costs almost nothing in quality.
    - What remains is Python and many small kernels: each layer runs ~40 elementwise PyTorch
      operations between its matmuls at a few microseconds each. `minigemma.compile(model)` lets
      `torch.compile` fuse them into a few generated kernels (a minute or two of compilation, printed
      when it starts and ends). Because the cache is written at a position tensor, the step it
      compiles is the same for every position, so it compiles once. Hooks switch it off again: a
      hook must run, and a recorded step would skip it.
    - On a GPU the balance moves again: thousands of cores unpack integers for free, bandwidth is the
      limit, and the per-launch overhead is what CUDA graphs remove: there `compile` also records the
      decoding step as one graph, replayed with one launch per token.
    """),
    md(r"""
    ## 6. How llama.cpp goes faster: 8-bit activations, in small blocks

    llama.cpp runs the same GGUF on this CPU about 1.5x faster than our fastest int8 path
    (`benchmarks/RESULTS.md`), while reading about as many bytes. Its trick is cheaper arithmetic:
    it rounds the *activation* vector to 8-bit integers too, so a dot product becomes int8 x int8
    summed in int32, and AVX2 does 32 of those multiply-adds per instruction instead of unpacking every
    weight into a float first.

    Rounding activations is riskier than rounding weights. Gemma's normalized activations have a few
    channels far larger than the rest, and with one scale for the whole vector those few set the grid
    for all 640 values. llama.cpp gives every block of 32 values its own scale. Here is the input of
    layer 6's MLP for the last token of a sentence:
    """),
    code(r"""
    layer = 6
    with torch.no_grad():
        _, acts = run_with_cache(model, check_ids, names_filter=f"blocks.{layer}.hook_resid_mid")
        x = model.blocks[layer].mlp_norm(acts[f"blocks.{layer}.hook_resid_mid"])[0, -1]  # (640,)
    w = model.blocks[layer].mlp.gate_proj.weight  # (2048, 640)
    top = x.abs().topk(4)
    print("largest |x|:", [f"{v:.1f} (channel {i})" for v, i in zip(top.values.tolist(), top.indices.tolist())])
    print(f"median |x|: {x.abs().median():.3f}")

    fig, ax = plt.subplots(figsize=(6, 2), dpi=80)
    ax.bar(range(640), x.abs().numpy(), width=1.0, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("channel")
    ax.set_ylabel("|x|")
    ax.set_title(f"input of layer {layer}'s MLP, last token", fontsize=9)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    Round that vector to int8 with one scale (what PyTorch's x86 int8-activation kernel,
    `torch.ops.quantized.linear_dynamic`, does) and with one scale per block of 32 (llama.cpp's Q8
    activations), and compare the matmul's output with the exact one. Do the same for the vector the
    output projection reads, the last layer's output after the final norm:
    """),
    code(r"""
    def int8_activations(v: torch.Tensor, block: int) -> torch.Tensor:
        # Symmetric int8, one scale per `block` consecutive values, returned dequantized.
        b = v.reshape(-1, block)
        scale = b.abs().amax(-1, keepdim=True) / 127
        return ((b / scale).round() * scale).reshape(-1)


    last = f"blocks.{model.config.num_layers - 1}.hook_resid_post"
    with torch.no_grad():
        _, acts = run_with_cache(model, check_ids, names_filter=last)
        x_final = model.ln_final(acts[last])[0, -1]  # (640,) what the output projection multiplies
    inputs = {f"layer {layer} MLP input": (x, w), "output projection input": (x_final, model.embed.weight)}
    errors = {}
    for label, (v, matrix) in inputs.items():
        with torch.no_grad():
            exact = matrix @ v
            for block in (640, 32):
                errors[label, block] = ((matrix @ int8_activations(v, block) - exact).norm() / exact.norm()).item()
        print(f"{label:24s} max|x|/median|x| = {v.abs().max() / v.abs().median():6.1f}   relative error: "
              f"one scale {errors[label, 640]:.2%}, per 32 values {errors[label, 32]:.2%}")
    assert all(errors[label, 640] > 2 * errors[label, 32] for label in inputs)
    """),
    md(r"""
    Per matmul, one scale per vector costs about three times the error of one scale per block of
    32, at both places. What differs is what happens to the error next. Inside the layers, each of
    the 72 matmuls adds its error to the residual stream, and every later layer works on the damaged
    state. PyTorch's int8-activation kernel (fbgemm) takes one scale for its *whole input*: on all
    the layers, with the text above going through 512 tokens at a time, that is one scale per chunk
    of 512 tokens, and it measured perplexity +56% (`benchmarks/quality.py`); one scale per vector
    costs far less, and per block of 32 least (notebook 16 measures the three apart). llama.cpp's
    per-block scheme stays within 1% of float32. PyTorch has no per-block int8 dot product for x86
    CPUs, so `quantize(model, 8)` keeps the activations in bf16 and pays in arithmetic: the gap that
    minigemma's own SIMD kernel closes (`quantize="int8"` on a CPU; notebook 16 reads it).

    The output projection is the last step: its error touches the logits once and goes nowhere else,
    and its matrix is 63% of the model's bytes. So `load(..., quantize="int8-dynamic")` (or
    `quantize(model, 8, unembedding="int8-dynamic")`) swaps *only* the output projection for one
    through PyTorch's int8 x int8 kernel (`DynamicInt8Unembedding` in `minigemma.quantize`): faster
    decoding (section 5's table) for +1.1% perplexity instead of int8's +0.6% (`benchmarks/RESULTS.md`).

    ## Summary

    - Batch-1 decoding reads every weight once per token: bytes per token / bandwidth is a hard limit.
    - int8 per row costs almost nothing in quality; int4 by rounding costs noticeably on a 270M model
      (groups of 32 less than 64), which is why Gemma's own int4 checkpoints are trained for it.
    - Speed does not need a second model: work done once per forward pass instead of per layer, a cache
      written at a position tensor so one compiled step serves every position, and modules swapped
      for ones that read fewer bytes per weight. The hooks stay.
    - Rounding activations too makes CPU arithmetic cheaper, but errors inside the layers compound:
      Gemma's outlier channels need small blocks there; the last matmul can take one scale per vector.

    ## Exercises

    Solutions: `notebooks/solutions/13_quantization_and_speed.py` (run by `tests/test_exercises_13.py`).

    1. **Symmetric int4.** Write `quantize_int4_symmetric(w, group_size)` returning the dequantized
       weight of a symmetric grid: levels -8..7, scale = max|group| / 7, no zero point (so 4 + 16/g bits).
       Compare its error with `quantize_int4` on `w` above and on a lopsided matrix such as `w.abs()`:
       when does the zero point pay for its 16 bits?
    2. **A speed limit for any model.** Write `decode_limit(config, fmt, bandwidth_gb_s)` returning the
       bandwidth limit in tokens/s for a config and `fmt` in {"bf16", "int8", "int4"} (groups of 64),
       without building the model. How fast could gemma-7b decode in int4 on a laptop with 60 GB/s?
    3. **A better grid.** Plain min-max rounding lets one extreme weight stretch the whole group's grid.
       Write `quantize_int4_clipped(w, group_size, shrinks=(1.0, 0.9, 0.8, 0.7))` that, for each group,
       tries shrinking the [min, max] range by each factor (around its midpoint, clamping what falls
       outside) and keeps the one with the smallest squared error. Its error can only be lower than
       `quantize_int4`'s (shrink 1.0 is among the candidates); by how much on `w`?
    """),
    code(r"""
    def quantize_int4_symmetric(w, group_size):
        ...  # your code


    def decode_limit(config, fmt, bandwidth_gb_s):
        ...  # your code


    def quantize_int4_clipped(w, group_size, shrinks=(1.0, 0.9, 0.8, 0.7)):
        ...  # your code

    # When your functions return something, check them, e.g.:
    # assert relative_error(quantize_int4_clipped(w, 64)) <= relative_error(dequantize_int4(*quantize_int4(w, 64)))
    """),
]


def build() -> Path:
    return write_notebook(CELLS, "13_quantization_and_speed.ipynb", id_prefix="13")  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    print(build())

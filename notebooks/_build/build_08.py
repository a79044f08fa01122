"""Write notebook 08 (real weights) from the cells below, then execute it with nbconvert.

    .venv/bin/python notebooks/_build/build_08.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/08_real_weights.ipynb

Cells tagged `requires-gpu` load the real 2B/7B; a conftest hook skips them without a GPU,
and they fall back to the embedded model when run anyway.
"""

from __future__ import annotations

from pathlib import Path

from nbcells import code, md, write_notebook


CELLS = [
    md(r"""
    # 08 · Real weights: checkpoint formats, memory, and loading 2B/7B

    **What you will learn**
    - what is inside a checkpoint file: you parse a GGUF header by hand (metadata, tensor table,
      quantization types, byte offsets) and read a safetensors header, both in a few lines;
    - that the same tensor has four names (minigemma, Hugging Face, llama.cpp, gemma_pytorch) and
      sometimes a different layout (gemma_pytorch fuses q, k and v into one matrix);
    - the memory arithmetic of Gemma 2B and 7B in float32, bfloat16 and int8, KV cache included;
    - how `minigemma.load` streams weights: a model built on the meta device, tensors copied one at
      a time from memory-mapped files, each checked by name and shape;
    - int8 weights with one scale per row, as in Google's "quant" checkpoints.

    **Builds on** `00_quickstart` (`minigemma.load`), `06_the_model` (the parameter tree these files
    fill) and `07_gemma1_to_gemma3` (why Gemma 1 and Gemma 3 checkpoints hold different norms).

    **Read along:** the Gemma report (Gemma Team, 2024), section 2 and Table 1 (model sizes);
    the GGUF specification in the ggml repository (`docs/gguf.md`); the safetensors format
    description (huggingface/safetensors README).
    """),
    code(r"""
    import json
    import shutil
    import struct
    import tempfile
    from pathlib import Path

    import gguf
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from safetensors.torch import save_file

    import minigemma
    from minigemma.loading import embedded_gguf_path
    from minigemma.loading.cache import converted_gguf_dir
    from minigemma.loading.ckpt import ckpt_names
    from minigemma.loading.names import gguf_names, hf_names
    from minigemma.loading.weights import empty_model
    from minigemma.quantize import Int8Linear, apply_scheme, quantize_int8

    torch.manual_seed(0)
    model, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded real model, fp32 on CPU
    print(model.config.name, f"{model.num_parameters():,} parameters")
    """),
    md(r"""
    ## 1. Three formats for the same numbers

    | format | who writes it | what is in the file | tokenizer | minigemma opens it with |
    |---|---|---|---|---|
    | Hugging Face safetensors | transformers (`google/gemma-2b` on the Hub) | JSON header + raw tensors, sharded above ~5 GB | `tokenizer.model` beside it | `safe_open` (memory-mapped) |
    | gemma_pytorch `.ckpt` | `torch.save` (Kaggle's PyTorch Gemma) | a zip: a pickle of names + raw tensor bytes; int8 "quant" variant | `tokenizer.model` beside it | `torch.load(weights_only=True, mmap=True)` |
    | GGUF | llama.cpp's converter | header (metadata, vocabulary, tensor table) + blocks of quantized data | inside the file | our reader, converted once to a cache |

    All three store tensors as raw little-endian bytes behind a table of contents. They differ in
    the table (JSON, pickle, binary key/values), in names, and in what else they carry. A pickle
    can run code when unpickled, so `.ckpt` files are only ever opened with `weights_only=True`.
    """),
    md(r"""
    ## 2. Inside a GGUF file, by hand

    The embedded model is a GGUF file. Its layout (GGUF spec, version 3), all little-endian:

    ```
    "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv times:      key (u64 length + utf-8) | value type u32 | value
    n_tensors times: name | n_dims u32 | dims u64 ... (fastest-varying first) | type u32 | offset u64
    padding to `general.alignment` (32), then the tensor data, each at its offset
    ```
    Values are numbers, strings, or arrays of them (the vocabulary is three arrays of 262,144
    entries). Twenty-five lines read it all:
    """),
    code(r"""
    # GGUF value types -> struct formats (8: string and 9: array are handled apart)
    SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


    def read_gguf_header(path: Path, max_bytes: int = 64 << 20) -> tuple[dict, list[dict], int]:
        buf = path.open("rb").read(max_bytes)  # the header (vocabulary included) is a few MB
        pos = 0

        def take(fmt):
            nonlocal pos
            (value,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return value

        def string():
            nonlocal pos
            n = take("<Q")
            pos += n
            return buf[pos - n:pos].decode("utf-8")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item_kind, n = take("<I"), take("<Q")
                return [value(item_kind) for _ in range(n)]
            return take(SCALARS[kind])

        assert buf[:4] == b"GGUF", "not a GGUF file"
        pos = 4
        version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
        meta = {"GGUF.version": version}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            tensors.append(dict(name=name, shape=tuple(reversed(dims)), type=take("<I"), offset=take("<Q")))
        align = meta.get("general.alignment", 32)
        data_start = -(-pos // align) * align  # round up to the alignment
        return meta, tensors, data_start
    """),
    code(r"""
    gguf_path = embedded_gguf_path()
    meta, tensors, data_start = read_gguf_header(gguf_path)
    print(f"{len(meta)} metadata keys, {len(tensors)} tensors, tensor data starts at byte {data_start:,}\n")
    for key, value in meta.items():
        shown = f"[{len(value):,} items: {value[:3]} ...]" if isinstance(value, list) else repr(value)
        print(f"{key:42s} {shown}")
    """),
    md(r"""
    Everything the architecture needs is there, under the architecture's prefix (`gemma3.`); what
    is missing (the 5:1 local/global layer pattern, the local RoPE base) llama.cpp hard-codes per
    architecture. Check the numbers against the preset the package uses. The epsilon is stored as
    a float32, hence `9.99999997e-07` rather than `1e-6`.
    """),
    code(r"""
    cfg = minigemma.get_config("gemma3-270m")
    arch = meta["general.architecture"]
    assert arch == cfg.architecture == "gemma3"
    assert meta[f"{arch}.embedding_length"] == cfg.hidden_size
    assert meta[f"{arch}.block_count"] == cfg.num_layers
    assert meta[f"{arch}.feed_forward_length"] == cfg.intermediate_size
    assert (meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]) == (cfg.num_heads, cfg.num_kv_heads)
    assert meta[f"{arch}.attention.key_length"] == cfg.head_dim  # pitfall 8: not hidden / heads = 160
    assert meta[f"{arch}.attention.sliding_window"] == cfg.sliding_window
    assert len(meta["tokenizer.ggml.tokens"]) == cfg.vocab_size == tok.vocab_size
    assert np.float32(meta[f"{arch}.attention.layer_norm_rms_epsilon"]) == np.float32(cfg.rms_norm_eps)
    """),
    md(r"""
    ### The tensor table: shapes, quantization types, bytes

    GGUF lists dimensions fastest-varying first, so `[640, 262144]` on disk is our (262144, 640).
    Most tensors are *quantized in blocks*: `Q8_0` keeps 32 weights as 32 int8 plus one fp16
    scale (34 bytes, 8.5 bits per weight); `Q4_K`, `Q5_0`, `Q6_K` pack fewer bits. The `gguf`
    package knows each type's block size and bytes per block, which gives every tensor's size:
    """),
    code(r"""
    def n_bytes(t: dict) -> int:
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t["type"])]
        return int(np.prod(t["shape"])) // block * block_bytes


    print(f"{'tensor':28s} {'shape':>14s} {'type':>5s} {'bits/weight':>11s} {'bytes':>12s}")
    for t in tensors[:2] + [t for t in tensors if t["name"].startswith("blk.0.")][:10]:
        bits = 8 * n_bytes(t) / np.prod(t["shape"])
        print(f"{t['name']:28s} {str(t['shape']):>14s} {gguf.GGMLQuantizationType(t['type']).name:>5s} "
              f"{bits:11.2f} {n_bytes(t):12,}")
    """),
    md(r"""
    Check the arithmetic: the last tensor must end exactly where the file ends, and every
    tensor's shape must be the one our model gives its parameter (`gguf_names` maps the names).
    """),
    code(r"""
    last = max(tensors, key=lambda t: t["offset"])
    assert data_start + last["offset"] + n_bytes(last) == gguf_path.stat().st_size
    by_name = {t["name"]: t for t in tensors}
    params = dict(model.named_parameters())
    for ours, theirs in gguf_names(model.config).items():
        assert by_name[theirs]["shape"] == tuple(params[ours].shape), ours
    assert set(by_name) == set(gguf_names(model.config).values())  # nothing extra: the output is tied
    """),
    code(r"""
    totals = {}
    for t in tensors:
        kind = gguf.GGMLQuantizationType(t["type"]).name
        totals[kind] = totals.get(kind, 0) + n_bytes(t)
    everything = sum(totals.values())
    for kind, size in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{kind:5s} {size / 2**20:7.1f} MiB  {size / everything:6.1%}")
    embed = by_name["token_embd.weight"]
    print(f"token_embd.weight alone ({gguf.GGMLQuantizationType(embed['type']).name}): {n_bytes(embed) / everything:.0%} of the weights")
    """),
    md(r"""
    "Q4_K_M" names a recipe, not a type: the embedding, 63% of the parameters and nearly three
    quarters of the bytes, stays at 8 bits (it is also the output projection, where errors show directly in the
    logits), while the smaller matrices get 4 to 6 bits.

    ## 3. One tensor, four names

    Every loader in `minigemma/loading/` translates its format's names into ours, so the model
    never knows where its weights came from. Layer 0 of Gemma 2B, in all four conventions (note
    gemma_pytorch's single `qkv_proj`, from which q, k and v are row ranges):
    """),
    code(r"""
    cfg2b = minigemma.get_config("gemma-2b")
    meta2b = empty_model(cfg2b)  # parameters with shapes but no memory (see section 5)
    tables = [hf_names(cfg2b), gguf_names(cfg2b), ckpt_names(cfg2b)]
    print(f"{'minigemma':29s} {'shape':>14s}  {'Hugging Face':47s} {'GGUF':25s} gemma_pytorch")
    for ours, p in meta2b.named_parameters():
        if ours.startswith("blocks.0.") or not ours.startswith("blocks."):
            hf, gg, pt = (t[ours] for t in tables)
            print(f"{ours:29s} {str(tuple(p.shape)):>14s}  {hf:47s} {gg:25s} {pt}")
    """),
    md(r"""
    Two traps hide in that table. Gemma 1's `post_attention_layernorm` is the norm *before the
    MLP* (it comes after attention), while Gemma 2/3 use the same name for a norm applied to
    attention's output. And q has 8 heads x 256 = 2048 rows but k and v only 256 each: 2B uses
    multi-query attention, one key/value head shared by all query heads.

    ## 4. Inside a safetensors file

    safetensors is simpler still: 8 bytes giving the header's length, a JSON header (name ->
    dtype, shape, byte range), then the bytes. No code runs when reading it, and a tensor can be
    memory-mapped straight from its byte range. The embedded model's cache is such a file
    (written once from the GGUF, dequantized to fp32):
    """),
    code(r"""
    cached = converted_gguf_dir(embedded_gguf_path()) / "model.safetensors"
    with cached.open("rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
    print(f"header: {header_len:,} bytes of JSON for {len(header)} tensors")
    for name in ["embed.weight", "blocks.0.attn.q_proj.weight", "blocks.0.attn_norm.weight"]:
        print(f"{name:30s} {header[name]}")
    """),
    code(r"""
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        assert entry["dtype"] == "F32" and tuple(entry["shape"]) == tuple(params[name].shape)
        assert end - start == 4 * params[name].numel()  # 4 bytes per float32
    assert 8 + header_len + max(e["data_offsets"][1] for e in header.values()) == cached.stat().st_size
    """),
    md(r"""
    ## 5. Memory arithmetic for Gemma 2B and 7B

    A model built under `torch.device("meta")` has every parameter's shape and dtype but no
    storage, so even 7B builds instantly and lets us count exactly (Gemma report, Table 1; the
    embedding is counted once because input and output share it):
    """),
    code(r"""
    sizes = {name: empty_model(minigemma.get_config(name)) for name in ["gemma-2b", "gemma-7b"]}
    for name, m in sizes.items():
        p = next(m.parameters())
        print(f"{name}: {m.num_parameters():,} parameters, on device '{p.device}' (no memory allocated)")
    assert sizes["gemma-2b"].num_parameters() == 2_506_172_416
    assert sizes["gemma-7b"].num_parameters() == 8_537_680_896
    """),
    md(r"""
    Bytes per parameter: 4 in float32, 2 in bfloat16. The int8 column is what
    `load(..., keep_int8=True)` keeps for a "quant" checkpoint: every linear layer as int8 plus one
    bf16 scale per output row, the embedding dequantized to bf16 (it is looked up by row *and*
    used as the output matrix). The KV cache adds, per token of context, a key and a value vector
    per layer and key/value head: multi-query attention makes 2B's 25x smaller than 7B's.
    """),
    code(r"""
    def weight_bytes(m: torch.nn.Module, fmt: str) -> int:
        if fmt != "int8":
            return m.num_parameters() * {"fp32": 4, "bf16": 2}[fmt]
        total = 0
        for name, p in m.named_parameters():
            if name.endswith("proj.weight"):  # a linear layer: int8 matrix + a bf16 scale per row
                total += p.numel() + 2 * p.shape[0]
            else:  # the embedding and the norms
                total += 2 * p.numel()
        return total


    def kv_bytes_per_token(c, dtype_bytes: int = 2) -> int:
        return 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype_bytes  # keys and values


    GiB = 2**30
    memory = {name: {fmt: weight_bytes(m, fmt) / GiB for fmt in ("fp32", "bf16", "int8")} for name, m in sizes.items()}
    for name, m in sizes.items():
        per_token = kv_bytes_per_token(m.config)
        print(f"{name}: " + "  ".join(f"{fmt} {gib:5.2f} GiB" for fmt, gib in memory[name].items())
              + f"   KV cache (bf16) {per_token / 1024:.0f} KiB/token = {per_token * 8192 / GiB:.2f} GiB for 8192 tokens")
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    formats = ["fp32", "bf16", "int8"]
    for i, fmt in enumerate(formats):
        values = [memory[name][fmt] for name in sizes]
        bars = ax.bar(np.arange(len(sizes)) + (i - 1) * 0.27, values, width=0.27, label=fmt)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(16e9 / GiB, color="k", linestyle="--", linewidth=0.8)  # GPU makers count GB = 10^9 bytes
    ax.text(-0.45, 16e9 / GiB + 0.5, "16 GB GPU", fontsize=7)
    ax.set_xticks(range(len(sizes)), list(sizes))
    ax.set_ylabel("weights (GiB)")
    ax.set_title("Memory for the weights alone")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    """),
    md(r"""
    7B in bf16 (15.9 GiB of weights, 17.1 GB) does not fit a 16 GB GPU; in int8 it does. 2B fits in bf16 on
    almost anything, and in fp32 on a laptop with 16 GB of RAM.

    ## 6. Streaming: never two copies

    Naive loading holds the checkpoint *and* a freshly initialised model in memory: twice the
    weights, plus the time to initialise parameters that are overwritten at once. `minigemma.load`
    instead (see `minigemma/loading/weights.py`):

    1. builds the model on the meta device (no memory, as above);
    2. opens the file memory-mapped: safetensors' `safe_open`, or `torch.load(mmap=True)`;
    3. for each parameter, reads that one tensor, checks its name and shape, converts it to the
       target device and dtype, and puts it in place. On CPU, in the file's dtype, nothing is
       copied at all: the parameter *is* the mapped file, read from disk page by page on first use.

    Each check failing is a `ValueError` naming the tensor in both conventions. Try the wrong
    preset on the embedded weights:
    """),
    code(r"""
    from safetensors import safe_open
    from minigemma.loading.weights import fill_model

    wrong = empty_model(minigemma.get_config("gemma3-270m").replace(intermediate_size=4096))
    with safe_open(cached, framework="pt") as f:
        try:
            fill_model(wrong, {n: (lambda n=n: f.get_tensor(n)) for n in f.keys()}, what="the 270M cache", progress=False)
        except ValueError as err:
            print(err)
    """),
    md(r"""
    ## 7. A checkpoint in each format, in miniature

    Downloading 5 to 17 GB is not something a notebook should do, so we write tiny Gemma 1
    models in the exact layouts of the real releases and load them back. The toy keeps the
    embedded model's vocabulary, so the real `tokenizer.model` can sit beside it (a loader checks
    that the tokenizer's ids fit the embedding).
    """),
    code(r"""
    toy_cfg = minigemma.get_config("tiny-gemma").replace(name="toy", vocab_size=tok.vocab_size, hidden_size=32,
                                                         intermediate_size=64, num_heads=2, head_dim=16)
    toy = minigemma.Gemma(toy_cfg).eval()
    with torch.no_grad():
        for p in toy.parameters():
            p.normal_(0, 0.1)  # norms too: zeros would hide a convention error
    # minigemma.load gives a float32 model on a CPU its faster output projection (README, "Fast and
    # small"): the toy gets the same, so that "identical" below means bit for bit.
    apply_scheme(toy, None)
    workdir = Path(tempfile.mkdtemp())
    tokenizer_model = converted_gguf_dir(embedded_gguf_path()) / "tokenizer.model"
    ids = torch.tensor([tok.encode("Checkpoints are tables of contents.", add_bos=True)])
    with torch.no_grad():
        toy_logits = toy(ids)
    print(f"toy: {toy.num_parameters():,} parameters ({toy.embed.weight.numel():,} of them the embedding)")
    """),
    md(r"""
    **Hugging Face layout.** `config.json` in transformers' vocabulary plus safetensors under
    transformers' names. We write `"hidden_act": "gelu"` as the first Gemma configs did; the
    model was trained with the *tanh* approximation, which minigemma always uses (pitfall 1; the
    loader logs a note).
    """),
    code(r"""
    hf_dir = workdir / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({
        "model_type": "gemma", "architectures": ["GemmaForCausalLM"], "hidden_act": "gelu",
        "vocab_size": toy_cfg.vocab_size, "hidden_size": toy_cfg.hidden_size,
        "intermediate_size": toy_cfg.intermediate_size, "num_hidden_layers": toy_cfg.num_layers,
        "num_attention_heads": toy_cfg.num_heads, "num_key_value_heads": toy_cfg.num_kv_heads,
        "head_dim": toy_cfg.head_dim, "max_position_embeddings": toy_cfg.max_position_embeddings,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }, indent=1))
    state = {name: p.detach() for name, p in toy.named_parameters()}
    save_file({theirs: state[ours] for ours, theirs in hf_names(toy_cfg).items()}, hf_dir / "model.safetensors")
    shutil.copy(tokenizer_model, hf_dir / "tokenizer.model")

    loaded, _ = minigemma.load(hf_dir, progress=False)
    with torch.no_grad():
        assert torch.equal(loaded(ids), toy_logits)
    print("Hugging Face layout: identical logits;", sorted(p.name for p in hf_dir.iterdir()))
    """),
    md(r"""
    **gemma_pytorch `.ckpt`.** One `torch.save` of `{"model_state_dict": ...}` with q, k and v
    stacked into `qkv_proj` and the RoPE table `freqs_cis` (2 x context rows of complex numbers)
    saved alongside. The file has no config: the loader infers it from shapes, head_dim and
    context from `freqs_cis`.
    """),
    code(r"""
    pt_state = {}
    for ours, theirs in ckpt_names(toy_cfg).items():
        key = theirs.split("[")[0]  # q, k, v: row ranges of one fused tensor
        pt_state[key] = torch.cat([pt_state[key], state[ours]]) if key in pt_state else state[ours].clone()
    inv_freq = 1.0 / 10000 ** (torch.arange(0, toy_cfg.head_dim, 2).float() / toy_cfg.head_dim)
    angles = torch.outer(torch.arange(2 * toy_cfg.max_position_embeddings).float(), inv_freq)
    pt_state["freqs_cis"] = torch.polar(torch.ones_like(angles), angles)
    ckpt_dir = workdir / "kaggle"
    ckpt_dir.mkdir()
    torch.save({"model_state_dict": pt_state}, ckpt_dir / "toy.ckpt")
    shutil.copy(tokenizer_model, ckpt_dir / "tokenizer.model")

    loaded, _ = minigemma.load(ckpt_dir / "toy.ckpt", progress=False)
    with torch.no_grad():
        assert torch.equal(loaded(ids), toy_logits)
    print("qkv_proj:", tuple(pt_state["model.layers.0.self_attn.qkv_proj.weight"].shape),
          "= q", tuple(state["blocks.0.attn.q_proj.weight"].shape), "+ k + v", tuple(state["blocks.0.attn.k_proj.weight"].shape))
    print("inferred config equals the toy's:", loaded.config == toy_cfg.replace(name="toy"))
    """),
    md(r"""
    **int8 "quant" `.ckpt`.** Each matrix row becomes int8 values `q` and one scale
    `s = max|row| / 127` (gemma_pytorch stores it as `weight_scaler`, in bf16), so `row ~ q * s`;
    the error per weight is at most `s / 2`. Loaded normally, the weights are dequantized to the
    target dtype. With `keep_int8=True` the linear layers stay int8: they become
    `minigemma.quantize.Int8Linear` (the `weight_scaler` is its `scale`), the same layer that
    minigemma's own int8 quantization puts in (notebook 13). For a prompt it multiplies by the int8
    matrix and then by the scales, the same product because every output row has one scale. For
    a few rows, as in decoding, it calls PyTorch's int8 kernel, which on a CPU is fast only with
    bf16 inputs: the layer rounds its input to bf16 for it, so the two ways agree to bf16's
    precision (about 3 significant digits), not float32's.
    """),
    code(r"""
    q_state = {}
    for key, w in pt_state.items():
        if w.dim() == 2 and not w.is_complex():
            q_state[key], scale = quantize_int8(w)
            q_state[key + "_scaler"] = scale.to(torch.bfloat16)
        else:
            q_state[key] = w
    torch.save({"model_state_dict": q_state}, ckpt_dir / "toy-quant.ckpt")
    (ckpt_dir / "toy.ckpt").unlink()  # one checkpoint per folder, as Kaggle ships them

    dequantized, _ = minigemma.load(ckpt_dir / "toy-quant.ckpt", progress=False)
    kept, _ = minigemma.load(ckpt_dir / "toy-quant.ckpt", keep_int8=True, progress=False)
    with torch.no_grad():
        a, b = dequantized(ids), kept(ids)  # a short prompt: the int8 kernel, bf16 inputs
    two_ways = ((a - b).norm() / a.norm()).item()
    assert two_ways < 0.02  # the same numbers, two ways, up to bf16 rounding of the kernel's inputs
    rel = ((a - toy_logits).norm() / toy_logits.norm()).item()
    assert rel < 0.02
    print(f"int8 vs fp32 logits: relative error below 2%; q_proj is now {kept.blocks[0].attn.q_proj}")
    print(f"dequantized vs kept int8: {two_ways:.1%} apart (bf16 inputs of the int8 kernel)")
    for m in (dequantized, kept):
        print(f"  parameter memory: {sum(p.numel() * p.element_size() for p in m.parameters()):,} bytes")
    """),
    md(r"""
    The toy's embedding dominates both numbers (262k rows of 32); on 2B the linear layers are 79%
    of the parameters and int8 saves most of their bytes (section 5).

    ## 8. int8 on a real layer

    How much does per-row int8 cost on real weights and activations? Take the 270M's first MLP
    gate projection and the activations that reach it for a real sentence:
    """),
    code(r"""
    layer = model.blocks[0].mlp.gate_proj
    seen = {}
    hook = model.blocks[0].mlp_norm.register_forward_hook(lambda mod, inp, out: seen.update(x=out))  # the MLP's input
    with torch.no_grad():
        model(torch.tensor([tok.encode("Quantization trades a little accuracy for a lot of memory.", add_bos=True)]))
    hook.remove()

    int8_layer = Int8Linear.from_float(layer.weight.detach())
    q, scale = int8_layer.weight, int8_layer.scale
    with torch.no_grad():
        exact = layer(seen["x"])
        approx = seen["x"] @ int8_layer.dequantized().T  # what the int8 weight alone changes
        kernel = int8_layer(seen["x"])  # PyTorch's int8 kernel: bf16 inputs as well
    rel = ((approx - exact).norm() / exact.norm()).item()
    rel_kernel = ((kernel - exact).norm() / exact.norm()).item()
    worst = ((layer.weight - int8_layer.dequantized()).abs().amax(dim=1) / scale).max().item()
    print(f"{tuple(layer.weight.shape)} weight: {layer.weight.numel() * 4:,} bytes fp32 -> "
          f"{q.numel() + 4 * scale.numel():,} bytes int8 + scales")
    print(f"output relative error: {rel:.1%} from the int8 weight, {rel_kernel:.1%} through the kernel")
    assert rel < 0.02 and worst < 0.5 + 1e-4  # every weight within half a grid step (plus float rounding)
    """),
    md(r"""
    ## 9. Loading the real Gemma 2B and 7B on a GPU

    With a CUDA GPU and access to the gated weights (accept the Gemma terms on the model page,
    then `hf auth login` or set `HF_TOKEN`), the same call loads the real models, in bf16 by
    default on GPU. A hub id is taken from the local Hugging Face cache when it is there, and
    downloaded (config, safetensors, tokenizer only) when it is not. The cells below are tagged
    `requires-gpu`; without one they run the same API on the embedded model instead. A gemma-2b
    in bf16 needs about 5 GiB of GPU memory, gemma-7b about 16 GiB.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    if torch.cuda.is_available():
        try:
            big, big_tok = minigemma.load("google/gemma-2b", device="cuda")  # bf16, streamed shard by shard
            print(big.config.name, next(big.parameters()).dtype,
                  f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB of GPU memory")
            print(minigemma.generate(big, big_tok, "The three primary colors are", max_new_tokens=16))
            del big
            torch.cuda.empty_cache()
        except ValueError as err:  # gated weights without a token, or no network and no cached copy
            print(err)
    else:
        print("No GPU here: the same API on the embedded 270M, on the CPU:")
        print(minigemma.generate(model, tok, "The three primary colors are", max_new_tokens=8))
    """, tags=["requires-gpu"]),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    if torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory > 20 * 2**30:
        try:
            big, big_tok = minigemma.load("google/gemma-7b", device="cuda")
            print(big.config.name, f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB of GPU memory")
            print(minigemma.generate(big, big_tok, "The three primary colors are", max_new_tokens=16))
            del big
            torch.cuda.empty_cache()
        except ValueError as err:
            print(err)
    else:
        print("gemma-7b needs a GPU with more than 20 GB (16 GiB of bf16 weights plus activations)")
    """, tags=["requires-gpu"]),
    code(r"""
    shutil.rmtree(workdir)  # the toy checkpoints
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/08_real_weights.py` (run by `tests/test_exercises_08.py`).

    1. **Parameters by formula.** Write `count_parameters(config)` from the config's fields alone
       (no model), and check it against `empty_model(config).num_parameters()` for gemma-2b,
       gemma-7b and gemma3-270m (mind Gemma 3's extra norms).
    2. **Unfuse qkv.** Write `split_qkv(qkv, config)` returning the q, k and v weights of a
       gemma_pytorch `qkv_proj.weight`, and check it on `pt_state` against the toy's own
       `q_proj`, `k_proj`, `v_proj`.
    3. **Where int8 hurts.** Write `row_errors(weight)` returning, per output row, the relative
       error `|w - dequantized|.norm() / |w|.norm()` of per-row int8. Which rows of the 270M's
       `blocks[0].mlp.gate_proj` suffer most, and what do their largest weights look like compared
       with the rest of the row?
    """),
    code(r"""
    def count_parameters(config):
        ...  # your code


    def split_qkv(qkv, config):
        ...  # your code


    def row_errors(weight):
        ...  # your code

    # When your functions return something, check them, e.g.:
    # assert count_parameters(minigemma.get_config("gemma-2b")) == 2_506_172_416
    """),
]


def build() -> Path:
    return write_notebook(CELLS, "08_real_weights.ipynb")


if __name__ == "__main__":
    print(build())

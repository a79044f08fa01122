"""A fast path for the same model: same weights, same math, fewer and cheaper steps per token.

The readable model (model.py) is written to be read and hooked: one module per idea, a
HookPoint at every interesting tensor, RoPE angles and masks computed where they are used.
Decoding one token at batch 1 makes that style expensive in two ways this module removes:

  1. Bytes. Each new token reads every weight once, with two flops per weight read, so a
     token costs (weight bytes / memory bandwidth) no matter how clever the arithmetic is
     (notebook 13 measures the bandwidth). `precision` stores the weights in bf16, int8 or int4
     (see quantize.py): 2x, ~4x, ~7x fewer bytes than float32. The tied 262k x 640 output
     projection is 63% of the 270M's weights: `embedding` chooses its precision separately.
  2. Overhead. 18 layers x ~60 small PyTorch calls (hook points, per-layer RoPE tables and masks,
     three separate q/k/v matmuls) cost ~5 us each in Python dispatch. Here each layer does
     one fused q|k|v matmul and one fused gate|up matmul, RoPE angles are computed once per step
     for all layers, the attention scale is folded into the query norm, and a decoding step
     needs no mask at all: a sliding window is a slice of the cache.

`prepare_for_decode(model)` returns a `FastGemma`, which has the readable model's interface
(`fast(ids, cache=..., last_only=True)`, `new_cache`, `config`, `embed`), so
`minigemma.generate(fast, tok, ...)` works unchanged. tests/test_fast.py checks it against
model.py: same logits (float32) and same greedy tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, attention_mask
from .config import GemmaConfig
from .loading.int8 import Int8Linear as CheckpointInt8Linear
from .mlp import gelu_tanh
from .quantize import Int8Linear, QuantizedEmbedding, QuantizedLinear, kernel_works, quantize_weight
from .rope import apply_rope, rope_cos_sin

PRECISIONS = ("fp32", "bf16", "int8", "int4")
# For the output projection only: int8 weights *and* 8-bit activations (see DynamicInt8Linear).
EMBEDDING_PRECISIONS = (*PRECISIONS, "int8-dynamic")


def kernel_input_dtype(bits: int, device: torch.device) -> torch.dtype:
    """The dtype activations are cast to before an int8/int4 matmul.

    PyTorch's int8/int4 kernels are vectorized for bf16 inputs on CPUs without AVX-512 (float32
    inputs take a scalar loop, ~10x slower); its CUDA int8 kernel takes only float32. So: bf16
    where the kernel accepts it, else float32 (the fallback then dequantizes, quantize.py).
    """
    kind = f"int{bits}"
    return torch.bfloat16 if kernel_works(kind, device, torch.bfloat16) else torch.float32


_ONEDNN_OK: dict[str, bool] = {}


def onednn_linear_works(device: torch.device) -> bool:
    """Is oneDNN's matmul (`torch.ops.mkldnn._linear_pointwise`, what inductor calls on CPU) here and right?

    For one row times a wide float32 matrix, PyTorch's F.linear goes to MKL's matrix-vector
    product, which runs on one core: the 262k x 640 output projection took 72-84 ms with 1 or 2
    threads, oneDNN's 40-47 ms with 2 (benchmarks/RESULTS.md). A private operator, so checked once.
    """
    if device.type != "cpu":
        return False
    if "cpu" not in _ONEDNN_OK:
        w, x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), torch.ones(2, 32)
        try:
            got = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            _ONEDNN_OK["cpu"] = torch.allclose(got, F.linear(x, w), atol=1e-4, rtol=1e-4)
        except (RuntimeError, AttributeError, NotImplementedError):
            _ONEDNN_OK["cpu"] = False
    return _ONEDNN_OK["cpu"]


class DenseLinear(nn.Module):
    """A float weight (out, in) in any dtype; inputs must come in that dtype."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.input_dtype = weight.dtype
        # Wide float32 matrices on CPU go through oneDNN, which uses every core (see above).
        self.onednn = weight.dtype == torch.float32 and weight.shape[0] >= 4096 and onednn_linear_works(weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")
        # F.linear keeps the (out, in) layout the BLAS streams fastest; x @ W.T with a bf16
        # weight was measured 100x slower on this CPU (DESIGN.md, performance notes).
        return F.linear(x, self.weight)


class DynamicInt8Linear(nn.Module):
    """An Int8Linear run by PyTorch's x86 int8 x int8 kernel (fbgemm, "dynamic quantization").

    The input vector is rounded to 8 bits on the fly with one scale per vector, so each dot
    product is int8 x int8 summed in int32: AVX2 does 32 of those multiply-adds per instruction,
    where the weight-only kernel first unpacks every weight into a float. For the 262k x 640 output
    projection that makes int8 decoding ~1.3x faster (~1.5x compiled) on a 2-core AVX2 CPU
    (benchmarks/RESULTS.md). In the decoder layers the rounding error of every matmul flows on
    through the residual stream (and Gemma's outlier channels make one scale per vector coarse):
    perplexity +56% with it in every layer (notebook 13, section 6). At the output projection it
    touches only the logits: +1.1% perplexity instead of plain int8's +0.6% (benchmarks/RESULTS.md),
    which is why only `embedding=` offers it.
    """

    bits = 8
    input_dtype = torch.float32

    def __init__(self, layer: "Int8Linear"):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.packed = _fbgemm_pack(layer.weight, layer.scale)  # fbgemm's own layout of the same int8 rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)
        # reduce_range=False: all 8 bits for the activations (True keeps 7; it scored worse here).
        return torch.ops.quantized.linear_dynamic(x2d, self.packed, False).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 x int8 (fbgemm)"


def _fbgemm_pack(q: torch.Tensor, scale: torch.Tensor):
    import warnings

    with warnings.catch_warnings():
        # PyTorch has deprecated its quantized tensors (pytorch/pytorch#184982); where they are
        # gone, dynamic_int8_works() is False and the weight-only int8 kernel is used instead.
        warnings.simplefilter("ignore")
        zeros = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


_DYNAMIC_OK: dict[str, bool] = {}


def dynamic_int8_works(device: torch.device) -> bool:
    """Is PyTorch's int8 x int8 linear (fbgemm) here, and within 8-bit rounding of the reference?"""
    if device.type != "cpu":
        return False
    if "cpu" not in _DYNAMIC_OK:
        gen = torch.Generator().manual_seed(0)
        w, x = torch.randn(64, 256, generator=gen), torch.randn(3, 256, generator=gen)
        try:
            layer = Int8Linear.from_float(w)
            expected = F.linear(x, layer.dequantized())
            got = DynamicInt8Linear(layer)(x)
            _DYNAMIC_OK["cpu"] = bool((got - expected).norm() / expected.norm() < 0.05)
        except (RuntimeError, NotImplementedError, AttributeError):
            _DYNAMIC_OK["cpu"] = False
    return _DYNAMIC_OK["cpu"]


FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _as_quantized(layer: nn.Module) -> nn.Module:
    """A layer of an int8 gemma_pytorch checkpoint (loading/int8.py, `keep_int8=True`) holds what
    quantize.Int8Linear holds, int8 rows and one scale per row: rewrap it (tensors shared) so it
    reaches the int8 kernel. Other layers are returned as they are."""
    if not isinstance(layer, CheckpointInt8Linear):
        return layer
    wrapped = Int8Linear(layer.in_features, layer.out_features, device=layer.weight.device)
    wrapped.weight, wrapped.scale = layer.weight.data, layer.weight_scaler.data.float()
    return wrapped


def _fused_linear(layers: list[nn.Module], precision: str | None, group_size: int) -> nn.Module:
    """One linear layer computing all of `layers`' outputs (they read the same input).

    precision None keeps the layers as they are (float or quantized, as in the model).
    """
    layers = [_as_quantized(l) for l in layers]
    if precision is None and all(isinstance(l, QuantizedLinear) for l in layers):
        fused = type(layers[0]).cat(layers)  # a new module: the model's own stay untouched
        fused.input_dtype = kernel_input_dtype(fused.bits, fused.weight.device)
        return fused
    weights = [l.dequantized() if isinstance(l, QuantizedLinear) else l.weight for l in layers]
    w = torch.cat(weights) if len(weights) > 1 else weights[0]
    if precision is None:
        precision = "bf16" if w.dtype == torch.bfloat16 else "fp32"
    if precision in FLOAT_DTYPES:
        # A single layer already in this dtype is shared with the model, not copied.
        return DenseLinear(w.to(FLOAT_DTYPES[precision]).contiguous())
    fused = quantize_weight(w, 8 if precision == "int8" else 4, group_size)
    fused.input_dtype = kernel_input_dtype(fused.bits, fused.weight.device)
    return fused


def describe(layer: nn.Module) -> str:
    if isinstance(layer, DynamicInt8Linear):
        return "int8-dynamic"
    if isinstance(layer, QuantizedLinear):
        return f"int{layer.bits}"
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}[layer.weight.dtype]


class FastBlock(nn.Module):
    """One decoder layer's weights, rearranged for speed: fused matmuls, norm gains as (1 + w)."""

    def __init__(self, block: nn.Module, config: GemmaConfig, precision: str | None, group_size: int):
        super().__init__()
        attn = block.attn
        self.window, self.theta = attn.window, attn.rope_theta
        self.qkv = _fused_linear([attn.q_proj, attn.k_proj, attn.v_proj], precision, group_size)
        self.o = _fused_linear([attn.o_proj], precision, group_size)
        self.gate_up = _fused_linear([block.mlp.gate_proj, block.mlp.up_proj], precision, group_size)
        self.down = _fused_linear([block.mlp.down_proj], precision, group_size)
        for name in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm"):
            norm = getattr(block, name)  # post norms are None in Gemma 1
            self.register_buffer(name, None if norm is None else 1.0 + norm.weight.float())
        # Fold the attention scale into the query: (q * c) . k == (q . k) * c. One query-norm
        # gain per head and one key-norm gain per kv head, stacked, so one multiply does both.
        h, kv, d = config.num_heads, config.num_kv_heads, config.head_dim
        ones = torch.ones(d, device=self.attn_norm.device)
        q_gain = 1.0 + attn.q_norm.weight.float() if attn.q_norm is not None else ones
        k_gain = 1.0 + attn.k_norm.weight.float() if attn.k_norm is not None else ones
        self.register_buffer("qk_gain", torch.cat([(q_gain * attn.scale).expand(h, d), k_gain.expand(kv, d)]))
        self.qk_norm = attn.q_norm is not None


def rms_norm(x: torch.Tensor, gain: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm in float32 (pitfall 2) with a precomputed (1 + w) gain, in one PyTorch call."""
    if x.dtype == torch.float32:  # skip two no-op casts: each PyTorch call costs microseconds here
        return F.rms_norm(x, (x.shape[-1],), gain, eps)
    return F.rms_norm(x.float(), (x.shape[-1],), gain, eps).to(x.dtype)


class FastGemma(nn.Module):
    """The decoder of model.py, rearranged for inference speed; build it with `prepare_for_decode`."""

    def __init__(self, model: nn.Module, precision: str | None = None, embedding: str | None = None,
                 group_size: int = 64):
        super().__init__()
        config = self.config = model.config
        # Activations keep the readable model's float dtype (float32 on CPU, bf16 on a bf16 GPU
        # model); only the weights change precision.
        self.dtype = model.ln_final.weight.dtype
        self.eps = config.rms_norm_eps
        # Pitfall 3: sqrt(hidden) rounded to the activation dtype, as the reference does.
        self.normalizer = torch.tensor(config.hidden_size ** 0.5, dtype=self.dtype).item()
        self.blocks = nn.ModuleList(FastBlock(b, config, precision, group_size) for b in model.blocks)
        self.register_buffer("final_gain", 1.0 + model.ln_final.weight.float())
        # The tied embedding: one copy of the matrix serves the lookup and the output projection.
        source = model.embed.linear if isinstance(model.embed, QuantizedEmbedding) else model.embed
        dynamic = embedding == "int8-dynamic"
        if dynamic:  # int8 rows first (kept if the model's embedding already is int8), then fbgemm's copy
            embedding = None if isinstance(source, Int8Linear) else "int8"
            if isinstance(source, QuantizedLinear) and not isinstance(source, Int8Linear):
                raise ValueError("embedding='int8-dynamic' needs a float or int8 embedding; this model's is int4")
        self.unembed = _fused_linear([source], embedding or precision, group_size)
        if isinstance(self.unembed, DenseLinear):
            self.embed = nn.Embedding.from_pretrained(self.unembed.weight, freeze=True)  # the same tensor
        else:
            self.embed = QuantizedEmbedding(self.unembed, self.dtype)
        if dynamic and dynamic_int8_works(self.unembed.weight.device):
            # The lookup keeps reading the int8 rows; the output projection reads fbgemm's packed copy.
            self.unembed = DynamicInt8Linear(self.unembed)
        layers, head = describe(self.blocks[0].qkv), describe(self.unembed)
        self.precision = layers if layers == head else f"{layers} layers, {head} embedding"
        self._thetas = sorted({b.theta for b in self.blocks})
        self._decoder = self._decode  # replaced by a compiled version in compile()
        self._step = None  # compile(): the static-shape decoding step
        self._cuda_graphs, self._static_cache = False, None

    def linear(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) through `layer`, in the input dtype its kernel wants, back to x's."""
        if x.dtype == layer.input_dtype:
            return layer(x)
        return layer(x.to(layer.input_dtype)).to(x.dtype)

    @property
    def device(self) -> torch.device:
        return self.final_gain.device

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        if self._step is None:
            return KVCache(self.config, batch, max_len, device=self.device, dtype=self.dtype)
        # With the static step (compile() on a GPU) every decoding step attends over the whole cache,
        # so its length is rounded up to a multiple of 256: nearby lengths share one compilation.
        max_len = min(-(-max_len // 256) * 256, max(max_len, self.config.max_position_embeddings))
        cache = self._static_cache  # kept only with CUDA graphs
        if cache is None or cache.k[0].shape[0] != batch or cache.max_len < max_len:
            cache = KVCache(self.config, batch, max_len, device=self.device, dtype=self.dtype)
            if self._cuda_graphs:
                # A CUDA graph replays fixed addresses: the cache is an input it writes in place, so
                # it must stay where it was recorded. One cache is kept and handed out again.
                for t in cache.k + cache.v:
                    torch._dynamo.mark_static_address(t)
                self._static_cache = cache
        cache.length = 0  # stale keys past `length` are masked out, never read
        return cache

    def compile(self, cuda_graphs: bool | None = None) -> "FastGemma":
        """Let torch.compile (inductor) fuse the small elementwise kernels between the matmuls.

        It removes most of the remaining per-step Python overhead, at the price of a minute or
        two of compilation on first use (and one more for the first prompt of a new length class).

        cuda_graphs (default: on a CUDA GPU): also record each decoding step as a CUDA graph
        (mode="reduce-overhead"), so a step costs one graph launch instead of hundreds of kernel
        launches of ~5 us of CPU time each: at batch 1 on a GPU, that overhead is otherwise the
        limit, not memory. A graph replays fixed shapes and addresses, which `_decode` (it slices
        the cache to the current length) does not have: see `_decode_static`. Then `new_cache`
        hands out the same buffers every time, so one generation at a time.
        """
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA GPU, and this one is on {self.device}; "
                             "move it with model.to('cuda') before prepare_for_decode, or pass cuda_graphs=False")
        # One eager step first: it makes the int8/int4 layers build their kernel layouts, Python
        # bookkeeping that would otherwise land inside the compiled graph.
        self._decode(torch.zeros(1, 1, dtype=torch.long, device=self.device), None, 0, True)
        self._decoder = torch.compile(self._decode, dynamic=True)
        if cuda_graphs:
            self._compile_static_step(cuda_graphs=True)
        return self

    def _compile_static_step(self, cuda_graphs: bool) -> None:
        """Decoding steps through `_decode_static`, compiled once for all positions.

        On a CPU this works too (tests/test_fast.py checks it there) but measured no faster than
        `_decode` compiled (24.6 vs 23.2 tok/s, within the machine's noise; benchmarks/RESULTS.md),
        and it costs a second compilation, so compile() uses it only for CUDA graphs.
        """
        self._step = torch.compile(self._decode_static, dynamic=False,
                                   mode="reduce-overhead" if cuda_graphs else None)
        self._cuda_graphs, self._static_cache = cuda_graphs, None

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits (batch, seq, vocab), or (batch, 1, vocab) with last_only: as Gemma.forward."""
        start = cache.length if cache is not None else 0
        if start + input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {start + input_ids.shape[1]} tokens is longer than the model's "
                             f"context of {self.config.max_position_embeddings}; shorten the prompt or max_new_tokens")
        if self._step is not None and cache is not None and input_ids.shape[1] == 1:
            cache.check_room(start + 1)  # else index_copy_ past the end fails with an opaque index error
            position = torch.tensor([start], device=self.device)
            if self._cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
                # The graph's output lives in memory the next replay overwrites: hand out a copy.
                logits = self._step(input_ids, cache.k, cache.v, position).clone()
            else:
                logits = self._step(input_ids, cache.k, cache.v, position)
        else:
            logits = self._decoder(input_ids, cache, start, last_only)
        if cache is not None:
            cache.length = start + input_ids.shape[1]
        return logits

    def _decode(self, input_ids: torch.Tensor, cache: KVCache | None, start: int, last_only: bool) -> torch.Tensor:
        cfg = self.config
        batch, seq = input_ids.shape
        end = start + seq
        positions = torch.arange(start, end, device=input_ids.device)
        rope = self._rope_tables(positions)
        # One token looking back needs no mask: the cache holds only the past.
        masks = self._masks(positions, end) if seq > 1 else {}

        x = self.embed(input_ids).to(self.dtype) * self.normalizer  # (batch, seq, hidden)
        h, kv = cfg.num_heads, cfg.num_kv_heads
        for i, b in enumerate(self.blocks):
            q, k, v = self._queries_keys_values(b, x, rope[b.theta])
            if cache is not None:
                k, v = cache.update(i, start, k, v)  # (batch, kv, end, d)
            if seq == 1:
                if b.window is not None and end > b.window:  # a local layer forgets older keys
                    k, v = k[:, :, end - b.window:], v[:, :, end - b.window:]
                z = _decode_attention(q, k, v)
            else:
                z = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[b.window], scale=1.0,
                                                   enable_gqa=kv != h)
            x = self._output_and_mlp(b, x, z)
        if last_only:
            x = x[:, -1:]
        return self.linear(self.unembed, rms_norm(x, self.final_gain, self.eps))  # (batch, seq, vocab)

    def _decode_static(self, input_ids: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                       position: torch.Tensor) -> torch.Tensor:
        """One decoding step whose shapes do not depend on the position (for compile(); see there).

        input_ids (batch, 1); keys/values: the cache's whole buffers, (batch, kv, max_len, d) per
        layer, written in place at `position` (a (1,) tensor). -> logits (batch, 1, vocab).
        """
        rope = self._rope_tables(position)
        # Which cache slots this query may read: written ones (<= position), and for a local
        # layer only the last `window` of them. Slots past `position` hold stale or zero keys.
        masks = self._masks(position, keys[0].shape[2])  # (1, max_len) per window
        x = self.embed(input_ids).to(self.dtype) * self.normalizer  # (batch, 1, hidden)
        for i, b in enumerate(self.blocks):
            q, k, v = self._queries_keys_values(b, x, rope[b.theta])
            keys[i].index_copy_(2, position, k)  # in place: the same buffer at every step
            values[i].index_copy_(2, position, v)
            z = _decode_attention(q, keys[i], values[i], masks[b.window][0])
            x = self._output_and_mlp(b, x, z)
        return self.linear(self.unembed, rms_norm(x, self.final_gain, self.eps))  # (batch, 1, vocab)

    def _rope_tables(self, positions: torch.Tensor) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
        """cos, sin (seq, 1, head_dim) for each RoPE base, broadcast over heads: once per step
        instead of once per layer, as the angles depend only on position and base."""
        tables = {}
        for theta in self._thetas:
            cos, sin = rope_cos_sin(positions, self.config.head_dim, theta)
            tables[theta] = (cos[:, None, :], sin[:, None, :])
        return tables

    def _masks(self, positions: torch.Tensor, n_keys: int) -> dict[int | None, torch.Tensor]:
        """The (seq, n_keys) causal mask for each window size in the model (None: global layers),
        built once per step for every layer."""
        k_pos = torch.arange(n_keys, device=positions.device)
        return {window: attention_mask(positions, k_pos, window) for window in {b.window for b in self.blocks}}

    def _queries_keys_values(self, b: FastBlock, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]):
        """The attention's inputs for x (batch, seq, hidden): q (batch, heads, seq, d), k and v
        (batch, kv, seq, d), normed, scaled and rotated."""
        batch, seq, _ = x.shape
        h, kv, d = self.config.num_heads, self.config.num_kv_heads, self.config.head_dim
        qkv = self.linear(b.qkv, rms_norm(x, b.attn_norm, self.eps))  # (batch, seq, (h + 2 kv) * d)
        qk = qkv[..., : (h + kv) * d].view(batch, seq, h + kv, d)
        v = qkv[..., (h + kv) * d:].view(batch, seq, kv, d)
        if b.qk_norm:  # in float32, gains and the attention scale included, as RMSNorm does
            qk = (F.rms_norm(qk.float(), (d,), None, self.eps) * b.qk_gain).to(qk.dtype)
        else:
            qk = (qk.float() * b.qk_gain).to(qk.dtype)
        qk = apply_rope(qk, *cos_sin)
        return qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2), v.transpose(1, 2)

    def _output_and_mlp(self, b: FastBlock, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The rest of the layer: attention output z (batch, heads, seq, d) through o, then the MLP,
        each added to the residual stream x (batch, seq, hidden)."""
        batch, seq, _ = x.shape
        o = self.linear(b.o, z.transpose(1, 2).reshape(batch, seq, -1))
        x = x + (rms_norm(o, b.post_attn_norm, self.eps) if b.post_attn_norm is not None else o)
        gate, up = self.linear(b.gate_up, rms_norm(x, b.mlp_norm, self.eps)).chunk(2, dim=-1)
        m = self.linear(b.down, gelu_tanh(gate) * up)
        return x + (rms_norm(m, b.post_mlp_norm, self.eps) if b.post_mlp_norm is not None else m)


def _decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      visible: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new query per head over the cached keys, grouped-query.

    q (batch, heads, 1, d); k, v (batch, kv, n, d) -> (batch, heads, 1, d). Each kv head serves
    its group of query heads: put the group in the "query" dimension and it is a plain matmul,
    with no copy of k or v per head. visible (n,): which keys to attend to (default: all).
    """
    batch, heads, _, d = q.shape
    kv = k.shape[1]
    qg = q.reshape(batch, kv, heads // kv, d)  # (batch, kv, group, d)
    scores = (qg @ k.transpose(-1, -2)).float()  # (batch, kv, group, n); the scale is already in q
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    z = scores.softmax(dim=-1).to(v.dtype) @ v  # (batch, kv, group, d)
    return z.reshape(batch, heads, 1, d)


@torch.no_grad()
def prepare_for_decode(model: nn.Module, precision: str | None = None, *, embedding: str | None = None,
                       group_size: int = 64, compile: bool = False) -> FastGemma:
    """A FastGemma built from `model`, whose own weights are not changed (unfused ones are shared).

    precision: the linear layers' weights, "fp32", "bf16", "int8" or "int4"; None keeps the
    model's own (its float dtype, or what quantize.quantize made of it).
    embedding: the same choice for the tied embedding / output projection (default: as precision),
    or "int8-dynamic": int8 weights multiplied by 8-bit-rounded activations (DynamicInt8Linear;
    CPU only, elsewhere plain int8), the fastest output projection on an AVX2 CPU.
    On a 2-core AVX2 CPU (benchmarks/RESULTS.md), "int8" decodes ~3x faster than the readable fp32
    model at +0.6% perplexity, ~4x with embedding="int8-dynamic" and compile=True (+1.1%); "int4"
    (groups of 64) is about as fast but costs +43% perplexity on the 270M (notebook 13).
    `compile=True` adds 1.1-1.5x, after one to three minutes of compilation.
    group_size: inputs per int4 scale (32, 64, 128 or 256); smaller is more accurate and bigger.
    compile: also run FastGemma.compile() (torch.compile; slow first call, see there).
    """
    for name, value, allowed in (("precision", precision, PRECISIONS), ("embedding", embedding, EMBEDDING_PRECISIONS)):
        if value not in (None, *allowed):
            raise ValueError(f"{name} must be one of {allowed} (or None to keep the model's own), got {value!r}")
    converts = precision or embedding not in (None, "int8-dynamic")
    if any(isinstance(m, QuantizedLinear) for m in model.modules()) and converts:
        raise ValueError("this model is already quantized (minigemma.quantize); call prepare_for_decode "
                         "with precision=None and embedding=None to keep its weights, or start from a float model")
    fast = FastGemma(model, precision, embedding, group_size).eval()
    return fast.compile() if compile else fast

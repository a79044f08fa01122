"""Weight-only quantization: int8 per output channel and int4 in groups, as module swaps.

Decoding one token at batch 1 reads every weight once and does only two flops per weight read,
so its speed is set by how many bytes the weights take, not by arithmetic (notebook 13 measures
this). Storing weights in fewer bits is the most direct speed-up there is. The Gemma 3 report
(section 2.3, "Quantization Aware Training") ships its models as per-channel int4, per-block
int4 and switched fp8, fine-tuned for a few thousand steps with the quantization in the loop.
Here we do the simplest post-training version, round-to-nearest, with no retraining:

  int8, one scale per output row (symmetric, "per-channel"):
      w[r, :] ~= q[r, :] * s[r]                     q in [-127, 127]
  int4, one scale and one zero per group of `group_size` inputs of a row ("per-block"):
      w[r, g] ~= (q[r, g] - 8) * s[r, g] + z[r, g]   q in [0, 15], z = the group's middle

Only the linear layers and the embedding are quantized; norms stay in float (they are tiny and
sensitive), and so do the activations between layers: this is "weight-only" quantization.

`quantize(model, bits)` swaps modules of the one readable model (minigemma.model.Gemma) in
place, so hooks, the KV cache and generate work unchanged: each nn.Linear becomes an Int8Linear
or Int4Linear, the embedding a QuantizedEmbedding, `model.unembed` a QuantizedUnembedding. The
tied embedding is both a lookup table (token id -> row) and the output projection (the 262k x 640
matrix that is 63% of the 270M's parameters, and ~half of its decode time). One quantized copy
serves both: the lookup dequantizes only the rows it needs, the output projection goes through
the same matmul as any quantized linear layer.

Where PyTorch has a kernel that reads the small integers directly (`_weight_int8pack_mm`, and
`_weight_int4pack_mm` / `_weight_int4pack_mm_for_cpu`), we use it, casting the activations to the
dtype it is fastest with (bf16 on a CPU); elsewhere we dequantize one layer's weight and call
F.linear. Each kernel is checked against the dequantized reference before it is trusted. The
output projection has two more: fbgemm's int8 x int8 product (DynamicInt8Unembedding, the fastest
int8 on a CPU) and, for float32 weights, oneDNN's matmul on every core (OneDNNUnembedding).

A third format is llama.cpp's: blocks of 32 weights with a float16 scale each, and the activations
rounded the same way at run time, so each block's dot product is an exact integer sum
(`quantize(model, bits, blocks=True)`, BlockLinear; blocks.py has the arithmetic, and
csrc/block_matmul.cpp a short commented C++ kernel for it, built on first use by native.py,
checked against blocks.py, and skipped with one warning where it cannot be built).
`apply_scheme(model, name)` names the choices the loader offers (SCHEMES).

  arithmetic.py  float <-> small integers          kernels.py  PyTorch's fast kernels, self-checked
  blocks.py      the block format, its reference   native.py   our C++ block kernel: build, check
  modules.py     the layers swapped in              apply.py    quantize, apply_scheme, scheme
  files.py       save_quantized, load_quantized     quality.py  perplexity, agreement, bytes
"""

from .apply import SAME, SCHEMES, apply_scheme, check_scheme, float_copy, fuse, quantize, scheme
from .arithmetic import (INT4_GROUP_SIZES, check_int4_shape, dequantize_int4, dequantize_int8, quantize_int4,
                         quantize_int8, unpack_int4)
from .files import load_quantized, save_quantized
from .kernels import PROBES, aligned, kernel_input_dtype, kernel_works
from .modules import (BlockLinear, DynamicInt8Unembedding, Int4Linear, Int8Linear, OneDNNUnembedding, QuantizedEmbedding,
                      QuantizedLinear, QuantizedUnembedding)
from .quality import TextScore, agreement, score_text, weight_bytes


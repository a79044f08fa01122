"""Int8 weights with one scale per output row, as in gemma_pytorch's "quant" checkpoints.

Each row of a weight matrix (one output feature) is stored as int8 values q and one float
scale s, so that row ~= q * s. Keeping the int8 matrix on the device halves the memory of
bf16 (a quarter of fp32); the layer multiplies by the scales after the matmul, which is the
same product because each output feature has a single scale: x @ (q * s)^T = (x @ q^T) * s.

That layer is minigemma.quantize's Int8Linear, the one the int8 quantization of any model uses,
so a checkpoint loaded with keep_int8=True runs through PyTorch's int8 kernel like any quantized
model. gemma_pytorch calls the scales `weight_scaler` (bf16); the loader (ckpt.py) reads them into
Int8Linear's `scale`, float32 unless asked otherwise (bf16 holds a bf16 checkpoint's scales exactly too).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArgumentError
from ..quantize import Int8Linear, scheme


def use_int8_linears(model: nn.Module, scale_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every nn.Linear of `model` by an Int8Linear of the same shape, in place.

    Meant for a model on the meta device (see weights.empty_model): the new layers are
    created on the same device as the ones they replace, so nothing is allocated yet.
    fill_model then keeps the dtypes they declare: int8 weights, scales in `scale_dtype`.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            if module.bias is not None:
                raise ArgumentError(f"{name} has a bias; Gemma's linear layers have none")
            layer = Int8Linear(module.in_features, module.out_features, device=module.weight.device)
            model.set_submodule(name, layer.to(scale_dtype))  # .to(dtype) casts only the float scales
    model.quantization = scheme(model)  # int8 layers, float embedding: what save_quantized writes
    return model

"""Put tensors from any checkpoint into a model built without memory, checking each one.

The model is first built on PyTorch's "meta" device: every parameter has a shape but no
storage. Tensors are then copied in one at a time, straight to the target device and dtype,
so a checkpoint is never held twice in memory (once as read, once in the model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from tqdm.auto import tqdm

from ..model.config import GemmaConfig, matching_preset
from ..errors import ArgumentError, CheckpointError
from ..model.gemma import Gemma
from ..quantize import QuantizedLinear

log = logging.getLogger("minigemma")

# Gemma 1's vocabulary has 256000 pieces; checkpoints exported from Flax pad the embedding to
# 256128 rows (a multiple of 128, for TPU tiling). The extra rows are never produced by the tokenizer.
GEMMA_VOCAB, FLAX_PADDED_VOCAB = 256_000, 256_128


def check_dtype(dtype: torch.dtype) -> None:
    # Pitfall 7: Gemma's activations exceed float16's range (max 65504): embeddings are scaled
    # up by sqrt(hidden) and the residual stream grows layer after layer, so fp16 gives inf/NaN.
    if dtype == torch.float16:
        raise ArgumentError("float16 overflows in Gemma's activations; use dtype=torch.bfloat16 or torch.float32")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ArgumentError(f"unsupported dtype {dtype}; use torch.float32 or torch.bfloat16")


def match_preset(config: GemmaConfig, source: str = "checkpoint") -> GemmaConfig:
    """The named preset equal to `config` (all fields but the name), else `config` itself; logs which."""
    if preset := matching_preset(config):
        log.info("%s matches preset %s", source, preset.name)
        return preset
    log.info("%s matches no preset; using its own hyper-parameters (%s)", source, config)
    return config


def empty_model(config: GemmaConfig) -> Gemma:
    with torch.device("meta"):
        return Gemma(config)


def fill_model(
    model: Gemma,
    tensors: Mapping[str, Callable[[], torch.Tensor]],
    *,
    source_names: Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    what: str = "checkpoint",
    progress: bool = True,
    check_finite: bool = True,
) -> Gemma:
    """Load `tensors` ({our name: function returning the tensor}) into `model`, validated.

    `source_names` maps our names to the names in the file, so errors speak the file's language.
    `what` names the checkpoint in errors; a reader with a `file` attribute (a shard, see hf.py)
    is named by that file instead, so a bad tensor points at the one file to download again.
    check_finite: refuse a tensor holding NaN or infinity (a corrupt file, or a diverged fine-tune),
    which would otherwise load without a word and turn every logit into NaN. It reads each tensor
    once as it is loaded; turn it off only for files minigemma wrote itself (the GGUF cache).
    """
    check_dtype(dtype)
    expected = dict(model.named_parameters())
    source_names = source_names or {}
    label = lambda n: f"{source_names[n]!r} (minigemma {n!r})" if n in source_names else repr(n)  # noqa: E731
    preset = model.config.name

    missing = [n for n in expected if n not in tensors]
    if missing:
        shown = ", ".join(label(n) for n in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{what} is missing {len(missing)} tensor(s) that {preset} needs: {shown}. "
            "Likely cause: a truncated or partial download (re-download it), or the wrong preset "
            "for this checkpoint."
        )
    unexpected = [n for n in tensors if n not in expected]
    if unexpected:
        raise CheckpointError(
            f"{what} has tensor(s) that {preset} does not use: {', '.join(label(n) for n in unexpected[:5])}. "
            "Likely cause: a checkpoint of another architecture or size than the preset."
        )

    for name in tqdm(list(expected), desc=f"loading {preset}", disable=not progress, leave=False):
        tensor = tensors[name]()
        where = getattr(tensors[name], "file", what)
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"tensor {label(name)} in {where} has shape {tuple(tensor.shape)} but {preset} expects {want}. "
                "Likely cause: the wrong preset for this checkpoint, or a corrupt file."
            )
        # Float weights take the requested dtype; a quantized layer's tensors (keep_int8: int8 rows
        # and their scales) keep the dtypes the layer was built with.
        module_name, _, attr = name.rpartition(".")
        keep = isinstance(model.get_submodule(module_name), QuantizedLinear) or not expected[name].is_floating_point()
        target = expected[name].dtype if keep else dtype
        if target.is_floating_point != tensor.dtype.is_floating_point:
            raise CheckpointError(f"tensor {label(name)} in {where} is {tensor.dtype} but {preset} expects {target} "
                                  "here")
        # On CPU in the file's own dtype `.to` copies nothing: the parameter keeps pointing into
        # the memory-mapped file (a private, copy-on-write mapping), whose pages are read lazily.
        param = torch.nn.Parameter(tensor.to(device=device, dtype=target), requires_grad=False)
        # One pass on the device, no temporary: a sum is NaN or infinite if any term is, 20x faster
        # than isfinite().all(), which writes a bool per element. Only then count (a sum of huge
        # but finite values can overflow too: real weights are nowhere near, garbage bytes can be).
        if (check_finite and param.is_floating_point() and not param.sum().isfinite()
                and (bad := int((~param.isfinite()).sum()))):
            raise CheckpointError(
                f"tensor {label(name)} in {where} holds {bad} NaN or infinite value(s) out of {param.numel()}: the "
                "file is corrupt (download it again) or the weights diverged in training; a model with them outputs "
                "NaN")
        setattr(model.get_submodule(module_name), attr, param)
    return model.eval()

"""LoRA adapters in Hugging Face peft's on-disk format, so minigemma and peft read each other's.

An adapter is a directory of two files, exactly as peft's `save_pretrained` writes them:
  adapter_config.json        peft's LoraConfig as JSON: r, lora_alpha, target_modules, ... and every
                             other field peft 0.21.2 writes, at its default
  adapter_model.safetensors  lora_A (r, in) and lora_B (out, r) of each adapted layer, named as peft
                             names them on transformers' GemmaForCausalLM / Gemma3ForCausalLM
                             (names.hf_adapter_names), metadata {"format": "pt"}
(peft also writes a model card, README.md, which nothing reads.) Pickles (adapter_model.bin) are
never loaded: unpickling runs code from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, ModelNotFoundError
from ..model.config import field_error
from ..model.lora import BLOCK_LINEARS, add_lora, lora_layers, resolve_targets
from ..paths import ADAPTERS
from .cache import cache_root
from .names import hf_adapter_names

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PEFT_VERSION = "0.21.2"  # the peft whose files these mirror (peft/tuners/lora/config.py, utils/save_and_load.py)
# Every field that version writes, at its default; save_adapter fills in r, lora_alpha, and the rest.
_NULL = ("alora_invocation_tokens", "arrow_config", "auto_mapping", "base_model_name_or_path", "corda_config",
         "eva_config", "exclude_modules", "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform",
         "lora_ga_config", "megatron_config", "modules_to_save", "monteclora_config", "revision", "target_parameters",
         "trainable_token_indices", "use_bdlora", "velora_config")
PEFT_DEFAULTS = {**dict.fromkeys(_NULL), "alpha_pattern": {}, "bias": "none", "ensure_weight_tying": False,
                 "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "loftq_config": {},
                 "lora_bias": False, "megatron_core": "megatron.core", "peft_type": "LORA", "peft_version": PEFT_VERSION,
                 "qalora_group_size": 16, "rank_pattern": {}, "task_type": "CAUSAL_LM", "use_dora": False,
                 "use_qalora": False, "use_rslora": False}
# Options that change what the adapter computes, which minigemma does not implement: each must be
# off (null, false, {}, [] or "none").
UNSUPPORTED = {"use_dora": "DoRA's magnitude vectors (Liu et al. 2024)", "bias": "trained biases",
               "lora_bias": "a bias on lora_B", "modules_to_save": "fully trained copies of whole modules",
               "fan_in_fan_out": "(in, out) weights (GPT-2's Conv1D)", "rank_pattern": "per-layer ranks",
               "alpha_pattern": "per-layer alphas", "layers_to_transform": "adapters on some layers only",
               "layer_replication": "repeated layers", "trainable_token_indices": "trained embedding rows",
               "target_parameters": "adapters on raw parameters", "use_qalora": "QA-LoRA's pooled inputs",
               **dict.fromkeys(("alora_invocation_tokens", "arrow_config", "kasa_config", "monteclora_config",
                                "use_bdlora"), "a LoRA variant")}
MERGE_WITH_PEFT = ("Merge it with peft instead, PeftModel.from_pretrained(base, dir).merge_and_unload()"
                   ".save_pretrained(out), and load that checkpoint with minigemma.load(out)")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename onto `path`: a reader never sees half a file (and the umask applies)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_adapter(model: torch.nn.Module, path: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA adapter (add_lora) as peft writes it; returns the directory."""
    layers = lora_layers(model)
    if not layers:
        raise CheckpointError("save_adapter: this model has no LoRA layers; add_lora(model) or load_adapter first")
    first = next(iter(layers.values()))
    targets = sorted({name.rpartition(".")[2] for name in layers})
    config = {**PEFT_DEFAULTS, "base_model_name_or_path": base_model_name_or_path, "r": first.rank,
              "lora_alpha": first.alpha, "lora_dropout": getattr(first.dropout, "p", 0.0),
              "target_modules": targets, "use_rslora": first.rslora}
    tensors = {theirs: model.get_parameter(ours).detach().cpu().contiguous()
               for ours, theirs in hf_adapter_names(model.config, targets).items()}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _atomic(path / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=True)  # peft's own json.dumps arguments
    _atomic(path / CONFIG, lambda tmp: tmp.write_text(text))
    return path


CHAT = "chat"  # load(adapter="chat"): the 270M's chat adapter that `minigemma tune` made


def chat_adapter_dir() -> Path:
    """Where `minigemma tune` (minigemma.train.chat_tuning) keeps the 270M's chat adapter."""
    return cache_root() / ADAPTERS / "gemma3-270m-chat"


def adapter_path(path: str | Path) -> Path:
    """`path` as a directory; "chat" names the cached chat adapter, which must have been made."""
    if str(path) != CHAT:
        return Path(path)
    if not (chat_adapter_dir() / WEIGHTS).is_file():
        raise ModelNotFoundError(f"no chat adapter in {chat_adapter_dir()} yet: make it once with `minigemma tune` "
                                 "(a few minutes on a CPU) or by running notebooks/15_instruction_tuning.ipynb")
    return chat_adapter_dir()


def read_adapter_config(path: str | Path) -> dict:
    """adapter_config.json of the adapter directory `path`, checked to be a LoRA minigemma can run."""
    path = adapter_path(path)
    if not (path / WEIGHTS).is_file():
        if (path / PICKLE).is_file():
            raise CheckpointError(
                f"{str(path / PICKLE)!r} is a pickle, which minigemma never loads (unpickling runs code from the "
                f"file). Convert it once where you trust it: safetensors.torch.save_file(torch.load(bin, "
                f"weights_only=True), {WEIGHTS!r}, metadata={{'format': 'pt'}})")
        raise CheckpointError(f"{str(path)!r} is not a LoRA adapter directory: it has no {WEIGHTS} (peft's "
                              "save_pretrained writes it with adapter_config.json)")
    where = str(path / CONFIG)
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {where!r} ({e}); an adapter needs peft's adapter_config.json") from None
    if config.get("peft_type") != "LORA":
        raise field_error(where, "peft_type", config.get("peft_type"), "'LORA'",
                          "minigemma loads LoRA adapters only; other peft methods need peft itself")
    for field, what in UNSUPPORTED.items():
        if config.get(field) not in (None, False, [], {}, "none"):
            raise field_error(where, field, config[field], repr(PEFT_DEFAULTS[field]),
                              f"minigemma runs plain LoRA, not {what}. {MERGE_WITH_PEFT}")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.startswith(("pissa", "olora", "corda", "loftq", "lora_ga")):
        raise field_error(where, "init_lora_weights", init, "true or 'gaussian'", "this initialisation also changes "
                          f"the base weights, so the adapter does not apply to the released ones. {MERGE_WITH_PEFT}")
    r = config.get("r")
    if not (isinstance(r, int) and not isinstance(r, bool) and r >= 1):
        raise field_error(where, "r", r, "a positive integer (the LoRA rank)")
    if not isinstance(config.get("lora_alpha"), (int, float)) or isinstance(config["lora_alpha"], bool):
        raise field_error(where, "lora_alpha", config.get("lora_alpha"), "a number")
    return config


def load_adapter(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Attach (unmerged) the LoRA adapter in directory `path`, made by save_adapter or by peft; in place.
    "chat" is the 270M's chat adapter that `minigemma tune` made."""
    path = adapter_path(path)
    config = read_adapter_config(path)
    file, r = str(path / WEIGHTS), config["r"]
    with safe_open(path / WEIGHTS, framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if not tensors:
        raise CheckpointError(f"{file} holds no tensors: a LoRA adapter has a lora_A and a lora_B per adapted layer")
    targets = [t for t in BLOCK_LINEARS if any(f".{t}.lora_" in name for name in tensors)]
    listed = config.get("target_modules")
    if isinstance(listed, list) and set(listed) != set(targets):  # a str is a regex: the tensors decide
        raise field_error(str(path / CONFIG), "target_modules", listed, f"the layers {file} adapts, {targets}",
                          "the two files belong to different adapters")
    every = {theirs: ours for ours, theirs in hf_adapter_names(model.config, list(BLOCK_LINEARS)).items()}
    for theirs, tensor in tensors.items():
        if theirs not in every:
            raise CheckpointError(
                f"tensor {theirs!r} in {file} names no layer of this {model.config.name} model (expected names like "
                f"{next(iter(every))!r}, peft's on transformers' Gemma(3)ForCausalLM): an adapter of another "
                "architecture, or of another Gemma size")
    resolve_targets(model, targets)  # may they be adapted here (not fused, no adapter yet)?
    names = {theirs: ours for ours, theirs in hf_adapter_names(model.config, targets).items()}
    for theirs, tensor in tensors.items():
        module = model.get_submodule(names[theirs].rpartition(".")[0])
        want = (r, module.in_features) if theirs.endswith("lora_A.weight") else (module.out_features, r)
        if tuple(tensor.shape) != want or not tensor.is_floating_point():
            raise CheckpointError(
                f"tensor {theirs!r} in {file} is {tuple(tensor.shape)} {tensor.dtype} but this {model.config.name} "
                f"model with r={r} (adapter_config.json) expects {want} float: an adapter for another model size, "
                "or an r that does not match the tensors")
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise CheckpointError(f"{file} lacks {len(missing)} tensor(s) for its target_modules {targets}, e.g. "
                              f"{missing[0]!r}: a truncated file, or an adapter of some layers only")
    add_lora(model, rank=r, alpha=config["lora_alpha"], targets=targets, dropout=config.get("lora_dropout", 0.0),
             rslora=bool(config.get("use_rslora")))
    with torch.no_grad():
        for theirs, tensor in tensors.items():
            model.get_parameter(names[theirs]).copy_(tensor)
    return model

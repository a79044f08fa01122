"""Instruction tuning the embedded Gemma 3 270M: the recipe notebook 15 runs and `minigemma tune` caches.

The 270M is a base model: it continues text and never ends a turn. Gemma's own instruction-tuned
models come from supervised fine-tuning on dialogues in the chat template, then RLHF (Gemma report,
"Instruction Tuning"). Here the first step is reproduced at laptop scale: LoRA adapters (model/lora.py) on
every linear layer, trained on the project's 200 instruction examples (assets/instructions.jsonl)
with the loss on the model's turns only. The numbers below were chosen by trying them on a 2-core
CPU: rank 16 on all linear layers at lr 2e-3 learns to answer and stop in 40 steps of 8 examples;
rank 8 on q and v alone, at lr 1e-3, did not learn to stop in 30 (tried once, not in the notebook;
notebook 15 measures what the recipe does on held-out prompts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..decoding.chat import encode_chat
from ..decoding.generate import generate_ids
from ..errors import ArgumentError
from ..loading import load
from ..loading.adapter import chat_adapter_dir, save_adapter
from ..model.gemma import Gemma
from ..model.lora import add_lora, lora_layers
from ..tokenizer import Tokenizer
from .data import batches, read_jsonl, sft_examples
from .loop import History, train

ASSETS = Path(__file__).resolve().parents[2] / "assets"
INSTRUCTIONS = ASSETS / "instructions.jsonl"
PREFERENCES = ASSETS / "preferences.jsonl"


@dataclass(frozen=True)
class Recipe:
    rank: int = 16
    alpha: float = 32  # scale alpha / rank = 2
    targets: str = "all-linear"
    lr: float = 2e-3  # LoRA's small matrices take a larger rate than full fine-tuning would
    steps: int = 40  # 320 examples: 1.6 passes over the 200
    batch_size: int = 8
    warmup: int = 8
    seed: int = 0


def examples_file(path: Path) -> Path:
    if not path.is_file():
        raise ArgumentError(f"{path} is missing: the instruction data lives in the repository's assets/ folder, "
                            "which an install from a wheel does not have; use a clone (pip install -e .)")
    return path


def tune_chat(model: Gemma, tok: Tokenizer, recipe: Recipe = Recipe(), *, mask_prompt: bool = True,
              progress: bool = True) -> History:
    """Add LoRA adapters to `model` (in place) and train them on the training split of the
    instruction set in the chat template; return the training History."""
    records = read_jsonl(examples_file(INSTRUCTIONS), split="train")
    add_lora(model, rank=recipe.rank, alpha=recipe.alpha, targets=recipe.targets)
    examples = sft_examples(tok, records, mask_prompt=mask_prompt)
    return train(model, batches(examples, recipe.batch_size, pad_id=tok.pad_id, seed=recipe.seed),
                 steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup, seed=recipe.seed, progress=progress)


@contextmanager
def merged(model: Gemma) -> Iterator[Gemma]:
    """The adapters folded into the weights for the block: decoding then costs what the base model's
    does (an adapter adds two small matmuls to each of 126 layers per token), and they come out after."""
    layers = [m for m in lora_layers(model).values() if m.enabled and not m.merged]
    for m in layers:
        m.merge()
    try:
        yield model
    finally:
        for m in layers:
            m.unmerge()


def answers(model: Gemma, tok: Tokenizer, prompts: list[str], max_new_tokens: int = 40) -> list[tuple[str, bool]]:
    """Greedy replies to each prompt in the chat template: (text, whether the model ended its turn
    within max_new_tokens). The share that end is what tuning should change, measured on prompts
    the tuning never saw."""
    stop = {tok.end_of_turn_id, tok.eos_id}
    out = []
    with merged(model):
        for prompt in prompts:
            ids = encode_chat(tok, [{"role": "user", "content": prompt}])
            new = list(generate_ids(model, ids, max_new_tokens, stop=stop))
            ended = bool(new) and new[-1] == tok.end_of_turn_id
            out.append((tok.decode(new[:-1] if ended else new), ended))
    return out


# ---------------------------------------------------------------- the cached chat adapter

def _fingerprint(recipe: Recipe) -> str:
    """What the adapter was made from: the recipe and the instruction file's bytes."""
    data = hashlib.sha256(examples_file(INSTRUCTIONS).read_bytes()).hexdigest()
    return json.dumps({"recipe": asdict(recipe), "instructions_sha256": data}, sort_keys=True)


def cached_chat_adapter(recipe: Recipe = Recipe()) -> Path | None:
    """The cached adapter's directory if it holds one made by this recipe from these examples, else None."""
    where = chat_adapter_dir()
    try:
        made_from = (where / "made_from.json").read_text()
        ok = all((where / name).is_file() for name in ("adapter_config.json", "adapter_model.safetensors"))
    except OSError:
        return None
    return where if ok and made_from == _fingerprint(recipe) else None


def make_chat_adapter(recipe: Recipe = Recipe(), *, progress: bool = True) -> Path:
    """The 270M's chat adapter: from the cache if this recipe made it, else trained now (a few
    minutes on a laptop CPU) and saved there, in peft's format, whole or not at all."""
    if (where := cached_chat_adapter(recipe)) is not None:
        return where
    where = chat_adapter_dir()
    print(f"instruction-tuning gemma3-270m ({recipe.steps} LoRA steps; minutes on a CPU); "
          f"the adapter goes to {where}", file=sys.stderr, flush=True)
    model, tok = load("gemma3-270m", progress=progress)
    history = tune_chat(model, tok, recipe, progress=progress)
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model, tmp, base_model_name_or_path="google/gemma-3-270m")
    (tmp / "history.json").write_text(json.dumps(asdict(history)))
    (tmp / "made_from.json").write_text(_fingerprint(recipe))
    shutil.rmtree(where, ignore_errors=True)  # an older recipe's adapter
    os.replace(tmp, where)
    return where

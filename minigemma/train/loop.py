"""The training loop: AdamW, warmup and cosine decay, gradient clipping and accumulation.

The recipe is the standard one for transformers (the Gemma report publishes no optimizer or
schedule): AdamW (Loshchilov and Hutter 2019), a learning rate that rises linearly for
`warmup` steps (Adam's early moment estimates are noisy, and a full-size first step can wreck a
pretrained model) and then follows a half cosine down to zero, and the gradient's norm clipped to
`grad_clip` so that one odd batch cannot throw the weights far.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import ArgumentError
from ..model.gemma import Gemma
from .loss import lm_loss

SCHEDULES = ("cosine", "constant")


@dataclass
class History:
    """What each step did: its loss (mean over its micro-batches), learning rate and gradient norm (before clipping)."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)

    def plot(self):
        """Loss, learning rate and gradient norm against the step, one panel each (a matplotlib Figure)."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3))
        for ax, (name, values) in zip(axes, [("loss", self.loss), ("learning rate", self.lr),
                                             ("gradient norm", self.grad_norm)]):
            ax.plot(values)
            ax.set(xlabel="step", title=name)
        fig.tight_layout()
        return fig


def lr_at(step: int, *, steps: int, lr: float, warmup: int = 0, schedule: str = "cosine") -> float:
    """The learning rate of update `step` (0-based): linear warmup to `lr`, then constant or a half
    cosine that would reach zero at step `steps` (one past the last update)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def autocast(device: torch.device):
    """bf16 autocast on a CUDA GPU that has bf16, nothing elsewhere.

    Matmuls then run in bf16 while the weights, their gradients and AdamW's moments stay float32
    ("mixed precision"); Gemma's norms and RoPE compute in float32 regardless (pitfalls 2 and 4).
    A CPU trains in plain float32: without bf16 units, bf16 matmuls are slower there (pitfalls.md).
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model: Gemma, batches: Iterable[Any], *, steps: int, lr: float = 1e-4, warmup: int = 0,
          schedule: str = "cosine", weight_decay: float = 0.0, grad_clip: float | None = 1.0,
          accumulate: int = 1, loss_fn: Callable[[Gemma, Any], torch.Tensor] | None = None,
          seed: int = 0, progress: bool = True) -> History:
    """Train the parameters of `model` that require grad for `steps` updates; return the History.

    batches: (ids, labels) tensors (data.batches, data.text_batches), or whatever `loss_fn(model,
    batch)` takes (default: loss.lm_loss); a list is cycled through. Each update averages the
    losses of `accumulate` batches, one backward pass each: a batch `accumulate` times larger in
    the memory of one (the same update when every micro-batch scores as many tokens).
    Only parameters with requires_grad are trained, so a LoRA model trains its adapters alone;
    `minigemma.load` freezes every weight, so call `model.requires_grad_(True)` to train all.
    """
    if schedule not in SCHEDULES:
        raise ArgumentError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if steps < 1 or accumulate < 1 or warmup < 0:
        raise ArgumentError(f"steps and accumulate must be >= 1 and warmup >= 0, got {steps}, {accumulate}, {warmup}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ArgumentError("no parameter requires grad: minigemma.load freezes the weights; unfreeze the ones "
                            "to train (model.requires_grad_(True) for all) or add LoRA adapters")
    torch.manual_seed(seed)
    # No weight decay on the norms' gains (1-D): decay pulls weights towards 0, which for a gain
    # is a change of scale, not a simpler model (the convention of GPT-2 and most since).
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    # fused: one pass over each tensor instead of a dozen elementwise ops; for the 270M's 168M-entry
    # embedding on a CPU that was 0.24 s a step instead of 1.7 s, with the same update to ~1e-8.
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr,
                                  fused=model.device.type in ("cpu", "cuda"))
    loss_fn = loss_fn or (lambda m, batch: lm_loss(m, *batch))
    device, source, history = model.device, _cycle(batches), History()
    was_training = model.training
    model.train()  # Gemma has no dropout; train() is for modules added to it that behave differently
    try:
        bar = tqdm(range(steps), desc="training", disable=not progress)
        for step in bar:
            rate = lr_at(step, steps=steps, lr=lr, warmup=warmup, schedule=schedule)
            for group in optimizer.param_groups:
                group["lr"] = rate
            total = 0.0
            for _ in range(accumulate):
                with autocast(device):
                    loss = loss_fn(model, _to(next(source), device)) / accumulate
                loss.backward()  # gradients add up in p.grad across the micro-batches
                total += loss.item()
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            history.loss.append(total)
            history.lr.append(rate)
            history.grad_norm.append(float(norm))
            bar.set_postfix(loss=f"{total:.4f}")
    finally:
        model.train(was_training)
    return history


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ArgumentError("the batches ran out (an exhausted generator?); pass a list or an endless iterator")


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch

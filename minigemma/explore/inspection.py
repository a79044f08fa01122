"""Looking inside the model while it runs: cache activations, edit them, read the residual stream.

Every interesting tensor passes through a named `HookPoint` (see hooks.py): `hook_embed`,
`blocks.{L}.hook_resid_pre`, `blocks.{L}.attn.hook_pattern`, ... This module attaches PyTorch
forward hooks to those points, and always takes them off again, so the model is back to its
plain fast self after every call (even when a hook raises).

    logits, cache = run_with_cache(model, ids, "hook_pattern")     # every layer's attention
    with hooks(model, ablate_head(3, 1)):                          # layer 3 without head 1
        ablated = model(ids)
    lens = logit_lens(model, cache)                                # what each layer predicts

The names and the (logits, cache) shape follow TransformerLens, which many readers know.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from ..model.hooks import HookPoint

# A hook function gets the activation and the hook's name; it returns a replacement, or None
# to leave the activation as it was (reading only).
HookFn = Callable[[torch.Tensor, str], Optional[torch.Tensor]]
# None = every hook point; "resid" = names containing it; a list = exactly those; or a predicate.
NamesFilter = Union[None, str, Iterable[str], Callable[[str], bool]]


def hook_names(model: nn.Module) -> list[str]:
    """Every hook point of the model, roughly in the order the forward pass reaches them.

    Module order, except that the model's own top-level points (`hook_embed`) come first.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, HookPoint)]
    return sorted(names, key=lambda n: "." in n)  # stable: only moves top-level names to the front


def _hook_points(model: nn.Module) -> dict[str, HookPoint]:
    return {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}


def _unknown_name(name: str, known: Sequence[str]) -> KeyError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return KeyError(f"no hook point named {name!r}{hint} (hook_names(model) lists all {len(known)})")


def select_names(model: nn.Module, names_filter: NamesFilter = None) -> list[str]:
    """The hook names a filter picks: None = all, a string = those containing it,
    a list of exact names, or a predicate `name -> bool`."""
    names = hook_names(model)
    if names_filter is None:
        return names
    if isinstance(names_filter, str):
        picked = [n for n in names if names_filter in n]
        if not picked:
            raise ValueError(f"no hook name contains {names_filter!r}; try e.g. 'resid_post', "
                             "'hook_pattern' or 'blocks.0.' (hook_names(model) lists them all)")
        return picked
    if callable(names_filter):
        return [n for n in names if names_filter(n)]
    wanted = list(names_filter)
    for name in wanted:
        if name not in names:
            raise _unknown_name(name, names)
    return wanted


class ActivationCache(dict):
    """A dict {hook name: activation} whose missing keys get a helpful error instead of a bare KeyError."""

    def __missing__(self, name: str):
        hint = difflib.get_close_matches(name, list(self), n=3, cutoff=0.6)
        msg = f"{name!r} was not cached"
        if hint:
            msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
        raise KeyError(msg + " (widen names_filter in run_with_cache to include it)")


def _as_batch(model: nn.Module, ids) -> torch.Tensor:
    """list[int] | (seq,) | (batch, seq) -> (batch, seq) long tensor on the model's device."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"ids must be a list of token ids or a (batch, seq) tensor, got shape {tuple(ids.shape)}")
    return ids


@contextlib.contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn | Sequence[HookFn]], *more: Mapping[str, HookFn]) -> Iterator[None]:
    """Run the model with forward hooks `{hook name: fn(activation, name) -> new or None}`.

    Several dicts may be given (e.g. `hooks(model, ablate_head(3, 0), ablate_head(3, 1))`); hooks
    on the same point run in the order given. Every hook is removed on exit, also after an
    exception, so a forgotten hook can never silently change later results.
    """
    points = _hook_points(model)
    handles = []
    try:
        for mapping in (fns, *more):
            for name, fn_or_fns in mapping.items():
                if name not in points:
                    raise _unknown_name(name, list(points))
                for fn in ([fn_or_fns] if callable(fn_or_fns) else fn_or_fns):
                    # Bind name and fn now: a closure over the loop variables would see only the last ones.
                    def forward_hook(module, inputs, output, fn=fn, name=name):
                        return fn(output, name)
                    handles.append(points[name].register_forward_hook(forward_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def run_with_cache(model: nn.Module, ids, names_filter: NamesFilter = None,
                   **forward_kwargs) -> tuple[torch.Tensor, ActivationCache]:
    """Run the model once and keep the activations at the chosen hook points.

    Returns (logits, cache) with cache[name] shaped as the activation was, batch first.
    Caching only reads: the logits are the same as `model(ids)` (attention switches to the
    explicit softmax when `hook_pattern` is cached, which agrees with the fused kernel to
    float rounding). `forward_kwargs` go to the model (e.g. `cache=kv`, `last_only=True`).
    """
    cache = ActivationCache()

    def save(x: torch.Tensor, name: str) -> None:
        cache[name] = x.detach()

    names = select_names(model, names_filter)
    with hooks(model, {name: save for name in names}):
        logits = model(_as_batch(model, ids), **forward_kwargs)
    return logits, cache


# ---- common edits ----------------------------------------------------------------------------

def position_axis(name: str) -> int:
    """Which axis of the activation at `name` runs over token positions."""
    if name.endswith(("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern")):
        return 2  # (batch, heads, seq, ...): heads come first inside attention
    return 1      # (batch, seq, ...): residual stream, hook_z, sublayer outputs


def ablate_head(layer: int, head: int | Sequence[int], mode: str = "zero") -> dict[str, HookFn]:
    """Knock out attention head(s) of one layer by editing their output z before o_proj.

    mode "zero" sets z to 0, the same as deleting those heads' columns of o_proj;
    "mean" replaces z by its mean over positions, which keeps the average signal and removes
    only what depends on the position (a gentler ablation, common in interpretability papers).
    """
    heads = [head] if isinstance(head, int) else list(head)
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")

    def ablate(z: torch.Tensor, name: str) -> torch.Tensor:
        if max(heads) >= z.shape[2] or min(heads) < 0:
            raise ValueError(f"{name} has {z.shape[2]} heads (0..{z.shape[2] - 1}); cannot ablate head(s) {heads}")
        z = z.clone()  # (batch, seq, heads, head_dim)
        if mode == "zero":
            z[:, :, heads] = 0
        else:
            z[:, :, heads] = z[:, :, heads].mean(dim=1, keepdim=True)
        return z

    return {f"blocks.{layer}.attn.hook_z": ablate}


def patch_position(name: str, position: int | Sequence[int], source) -> dict[str, HookFn]:
    """Activation patching: overwrite `name` at `position` with a value from another run.

    `source` is an ActivationCache of that run (its entry for `name` is used) or a tensor
    holding the activation for the patched position(s). Typical use: run a clean prompt with
    run_with_cache, then run a corrupted prompt while patching one position from the clean run,
    and see how much of the clean answer comes back.
    """
    positions = [position] if isinstance(position, int) else list(position)
    axis = position_axis(name)
    if isinstance(source, Mapping):
        if name not in source:
            raise KeyError(f"the source cache has no {name!r}; cache it with run_with_cache(..., names_filter=[{name!r}])")
        value = source[name].index_select(axis, torch.tensor(positions, device=source[name].device))
    else:
        value = torch.as_tensor(source)

    def patch(x: torch.Tensor, hook_name: str) -> torch.Tensor:
        if max(positions) >= x.shape[axis]:
            raise ValueError(f"{hook_name} has {x.shape[axis]} positions; cannot patch position(s) {positions}")
        x = x.clone()
        index = [slice(None)] * x.dim()
        index[axis] = positions
        index = tuple(index)
        v = value.to(device=x.device, dtype=x.dtype)
        if v.numel() == x[index].numel():
            v = v.reshape(x[index].shape)  # e.g. cache[name][:, pos] (batch, hidden) -> (batch, 1, hidden)
        x[index] = v  # otherwise broadcast, e.g. one (hidden,) vector into every batch row
        return x

    return {name: patch}


# ---- logit lens ------------------------------------------------------------------------------

def residual_stack(cache: Mapping[str, torch.Tensor], num_layers: int) -> tuple[list[str], torch.Tensor]:
    """The residual stream after the embedding and after each layer: labels and (layers + 1, batch, seq, hidden)."""
    names = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(num_layers)]
    missing = [n for n in names if n not in cache]
    if missing:
        raise KeyError(f"the logit lens needs the residual stream but the cache lacks {missing[0]!r}"
                       f"{' and others' if len(missing) > 1 else ''}; run run_with_cache(model, ids, "
                       "names_filter=lambda n: n == 'hook_embed' or n.endswith('hook_resid_post'))")
    labels = ["embed"] + [f"layer {i}" for i in range(num_layers)]
    return labels, torch.stack([cache[n] for n in names])


def lens_filter(name: str) -> bool:
    """names_filter that caches exactly what logit_lens needs."""
    return name == "hook_embed" or name.endswith("hook_resid_post")


@torch.no_grad()
def logit_lens(model: nn.Module, cache: Mapping[str, torch.Tensor],
               positions: int | Sequence[int] | None = None) -> torch.Tensor:
    """Read every layer's residual stream as if it were the last: (layers + 1, batch, seq, vocab) logits.

    nostalgebraist's "logit lens" (2020): apply the final norm and the (tied) unembedding to the
    residual stream after the embedding and after each block. The last row is exactly the
    model's output; earlier rows show how the prediction forms. `positions` limits the work
    (each row costs a full 262k-wide unembedding per position).
    """
    _, stack = residual_stack(cache, len(model.blocks))  # (layers + 1, batch, seq, hidden)
    if positions is not None:
        index = torch.as_tensor([positions] if isinstance(positions, int) else list(positions), device=stack.device)
        stack = stack.index_select(2, index)
    return model.unembed(model.ln_final(stack), model.embed)  # the model's own output projection, quantized or not


@dataclass
class LensTable:
    """What the logit lens predicts at every layer (rows: embedding, layer 0, ...) and position."""

    labels: list[str]                    # row names: "embed", "layer 0", ...
    top_ids: torch.Tensor                # (layers + 1, seq, k) the k most likely next tokens
    top_probs: torch.Tensor              # (layers + 1, seq, k) their probabilities
    target_probs: torch.Tensor | None    # (layers + 1, seq) probability of target_ids; NaN where none


@torch.no_grad()
def logit_lens_table(model: nn.Module, cache: Mapping[str, torch.Tensor], k: int = 1, target_ids=None,
                     batch_index: int = 0, chunk: int = 256) -> LensTable:
    """Top-k tokens of the lens at every layer and position, and optionally each position's
    probability for a target token (pass `ids[1:]` to follow the token that actually comes next).

    All layers go through the unembedding together, `chunk` rows at a time: one pass over the
    262k x 640 matrix serves many rows (5x faster than layer by layer on a 2-core CPU), and
    the (rows x vocab) logits of one chunk are all that sit in memory.
    """
    labels, stack = residual_stack(cache, len(model.blocks))
    layers, seq = stack.shape[0], stack.shape[2]
    rows = stack[:, batch_index].reshape(layers * seq, -1)  # (layers * seq, hidden)
    if target_ids is not None:
        target = torch.as_tensor(target_ids, device=rows.device)
        if target.numel() > seq:
            raise ValueError(f"{target.numel()} target ids for {seq} positions; pass at most one per position")
        # Row r is position r % seq; positions without a target get index 0 and are set to NaN below.
        padded = torch.zeros(seq, dtype=torch.long, device=rows.device)
        padded[: target.numel()] = target
        row_target = padded.repeat(layers)
    top_ids, top_probs, target_probs = [], [], []
    for start in range(0, rows.shape[0], chunk):
        logits = model.unembed(model.ln_final(rows[start:start + chunk]), model.embed).float()
        logz = logits.logsumexp(-1, keepdim=True)  # softmax's normaliser, without materialising the probabilities
        top = logits.topk(k, dim=-1)
        top_ids.append(top.indices)
        top_probs.append((top.values - logz).exp())
        if target_ids is not None:
            t = row_target[start:start + chunk, None]
            target_probs.append((logits.gather(-1, t) - logz).exp().squeeze(-1))
    table = LensTable(labels, torch.cat(top_ids).reshape(layers, seq, k),
                      torch.cat(top_probs).reshape(layers, seq, k), None)
    if target_ids is not None:
        table.target_probs = torch.cat(target_probs).reshape(layers, seq)
        table.target_probs[:, target.numel():] = float("nan")
    return table

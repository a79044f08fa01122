"""Named places where a reader can look at (or edit) activations.

A `HookPoint` is an identity module. Because it is a module, PyTorch gives it a dotted name
inside the model (`blocks.3.hook_resid_pre`, `blocks.3.attn.hook_pattern`, ...: the names
TransformerLens made familiar), and `register_forward_hook` on it can read or replace the
tensor flowing through. With no hook registered it only returns its input.
"""

from __future__ import annotations

import torch
from torch import nn


class HookPoint(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """True when someone is listening; lets a module skip work nobody will look at."""
        return bool(self._forward_hooks)

"""Solutions to the exercises of notebook 15 (instruction tuning the 270M)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from minigemma.model.config import GemmaConfig
from minigemma.tokenizer import Tokenizer

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# Exercise 1: the scored tokens of one example, by hand.
def scored_counts(tok: Tokenizer, prompt: str, response: str) -> tuple[int, int]:
    """(scored with the prompt mask, scored without it) for one training example, from the template

        <bos><start_of_turn>user\\n{prompt}<end_of_turn>\\n<start_of_turn>model\\n{response}<end_of_turn>\\n

    With the mask only the model's turn is scored: the response's tokens and its <end_of_turn>.
    Without it every token is, except the first: no logits come before position 0, so <bos> is
    never predicted. (Texts without chat markers: a marker typed in a text would be spelled as two
    ordinary pieces by encode_chat, one more token than tok.encode gives.)
    """
    markers = 5  # <bos>, <start_of_turn>, <end_of_turn>, <start_of_turn>, <end_of_turn>
    newline = len(tok.encode("\n"))
    user = len(tok.encode(f"user\n{prompt}"))  # encode_chat encodes the role name and the message together
    model = len(tok.encode("model\n"))
    reply = len(tok.encode(response))
    total = markers + user + newline + model + reply + newline
    return reply + 1, total - 1


# Exercise 2: the DPO loss of one pair.
def dpo_pair_loss(policy_chosen: float, policy_rejected: float, ref_chosen: float, ref_rejected: float,
                  beta: float) -> float:
    """-log sigmoid(beta * margin), margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).

    Written as log(1 + exp(-x)) without overflow for any x = beta * margin. When the policy is the
    reference the margin is 0 and the loss is log 2.
    """
    x = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return math.log1p(math.exp(-x)) if x >= 0 else -x + math.log1p(math.exp(x))


def dpo_margin_gradient(margin: float, beta: float) -> float:
    """d loss / d margin = -beta * sigmoid(-beta * margin): -beta / 2 at margin 0, never 0.

    So at the start, where the policy is the reference, every pair pushes its margin up with the
    same force; as a pair's margin grows its push fades (a pair already ranked right stops counting),
    and a pair ranked wrong keeps pushing at up to beta.
    """
    return -beta / (1 + math.exp(beta * margin))


# Exercise 3: how many numbers LoRA trains, from the config alone.
def layer_shapes(config: GemmaConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of a block. head_dim is the config's own (pitfall 8)."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    h, m = config.hidden_size, config.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}


def lora_parameters(config: GemmaConfig, rank: int, targets: str | Sequence[str]) -> int:
    """rank * (in + out) for every adapted layer: A is (rank, in), B is (out, rank), in every block."""
    if isinstance(targets, str):
        targets = TARGETS if targets == "all-linear" else [targets]
    shapes = layer_shapes(config)
    return config.num_layers * sum(rank * sum(shapes[t]) for t in dict.fromkeys(targets))


def targets_by_cost(config: GemmaConfig, rank: int) -> list[tuple[str, int]]:
    """Every single target with its LoRA parameter count, cheapest first.

    For the 270M, k_proj and v_proj tie for cheapest: with one key-value head (multi-query
    attention) their output is a single head_dim of 256. q_proj and o_proj cost the same as each
    other (the same two sizes, swapped), and the MLP's three layers the most.
    """
    return sorted(((t, lora_parameters(config, rank, [t])) for t in TARGETS), key=lambda tc: tc[1])

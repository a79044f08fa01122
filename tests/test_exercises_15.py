"""The solutions to notebook 15's exercises (notebooks/solutions/15_instruction_tuning.py) work.

No training: the real tokenizer on the instruction set, arithmetic against dpo_loss and autograd,
and parameter counts of models built on the meta device (no memory, no weights).
"""

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma import add_lora, get_config
from minigemma.model.lora import BLOCK_LINEARS, count_trainable
from minigemma.train import IGNORE, dpo_loss, read_jsonl, sft_example
from minigemma.train.chat_tuning import INSTRUCTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.15_instruction_tuning")  # file names start with a digit


def test_scored_counts_match_sft_example_on_every_record(gemma3_270m):
    _, tok = gemma3_270m
    records = read_jsonl(INSTRUCTIONS)
    assert len(records) == 240
    for r in records:
        masked_ids, masked = sft_example(tok, r["prompt"], r["response"])
        _, unmasked = sft_example(tok, r["prompt"], r["response"], mask_prompt=False)
        # lm_loss never scores position 0 (nothing predicts it), whatever its label
        expected = (sum(l != IGNORE for l in masked[1:]), sum(l != IGNORE for l in unmasked[1:]))
        assert sol.scored_counts(tok, r["prompt"], r["response"]) == expected, r
        assert expected[1] == len(masked_ids) - 1


def test_dpo_pair_loss_against_dpo_loss():
    g = torch.Generator().manual_seed(0)
    values = -30 * torch.rand(4, 50, generator=g, dtype=torch.float64)  # sequence log-probabilities
    for beta in (0.1, 0.5, 2.0):
        for pc, pr, rc, rr in values.T.tolist():
            expected = dpo_loss(*(torch.tensor([v], dtype=torch.float64) for v in (pc, pr, rc, rr)), beta=beta).item()
            assert sol.dpo_pair_loss(pc, pr, rc, rr, beta) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert sol.dpo_pair_loss(-5.0, -7.0, -5.0, -7.0, 0.1) == pytest.approx(math.log(2))  # policy = reference
    # Far from zero in both directions: no overflow, and the two asymptotes
    assert sol.dpo_pair_loss(0.0, -1e4, 0.0, 0.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert sol.dpo_pair_loss(-1e4, 0.0, 0.0, 0.0, 1.0) == pytest.approx(1e4)


def test_dpo_margin_gradient_against_autograd():
    for margin in (-20.0, -1.0, 0.0, 0.3, 5.0):
        for beta in (0.1, 1.0):
            m = torch.tensor([margin], dtype=torch.float64, requires_grad=True)
            zero = torch.zeros(1, dtype=torch.float64)
            dpo_loss(m, zero, zero, zero, beta=beta).backward()
            assert sol.dpo_margin_gradient(margin, beta) == pytest.approx(m.grad.item(), rel=1e-12)
    assert sol.dpo_margin_gradient(0.0, 0.1) == pytest.approx(-0.05)


@pytest.mark.parametrize("name", ["gemma3-270m", "gemma-2b", "gemma-7b", "tiny-gemma3"])
def test_lora_parameters_against_count_trainable(name):
    config = get_config(name)
    for rank, targets in [(16, "all-linear"), (8, ["q_proj", "v_proj"]), (4, ["down_proj"]),
                          *((1, [t]) for t in BLOCK_LINEARS)]:
        with torch.device("meta"):  # shapes only: even the 7B costs nothing to build
            model = minigemma.Gemma(config)
            add_lora(model, rank=rank, targets=targets)
        assert sol.lora_parameters(config, rank, targets) == count_trainable(model)[0], (name, rank, targets)


def test_cheapest_targets_of_the_270m():
    config = get_config("gemma3-270m")
    ranked = sol.targets_by_cost(config, 16)
    assert {t for t, _ in ranked[:2]} == {"k_proj", "v_proj"} and ranked[0][1] == ranked[1][1] < ranked[2][1]
    assert ranked[0][1] == 18 * 16 * (640 + 256)
    ratio = sol.lora_parameters(config, 16, "all-linear") / sol.lora_parameters(config, 16, ["q_proj", "v_proj"])
    assert ratio == pytest.approx(13184 / 2560)

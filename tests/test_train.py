"""minigemma.train: the loss, the data, the loop and DPO, on tiny random models (seconds on a CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from minigemma.errors import ArgumentError
from minigemma.quantize.kernels import kernel_works, onednn_linear
from minigemma.quantize.modules import OneDNNUnembedding
from minigemma.train import (IGNORE, batches, dpo_batches, dpo_loss, dpo_loss_fn, lm_loss, lr_at, pad,
                             preference_margin, preference_pairs, read_jsonl, sequence_logprob, sft_example,
                             text_batches, train)
from reference import random_model

ARCHS = ["tiny-gemma3", "tiny-gemma"]  # Gemma 3 and Gemma 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _ids(batch=2, seq=12, seed=0):
    return torch.randint(4, 512, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ARCHS)
def test_loss_is_cross_entropy_on_shifted_targets(name):
    model = random_model(name)
    ids = _ids()
    labels = ids.clone()
    labels[0, :5] = IGNORE
    labels[1, 7] = IGNORE
    with torch.no_grad():
        logits = model(ids)  # (2, 12, vocab)
        expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=IGNORE)
        assert torch.allclose(lm_loss(model, ids, labels), expected, atol=1e-6)
        # sequence_logprob: each row's sum of log p over exactly its scored tokens
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # (2, 11)
        logp = torch.where(labels[:, 1:] == IGNORE, 0.0, logp).sum(1)
        assert torch.allclose(sequence_logprob(model, ids, labels), logp, atol=1e-5)


def test_ignore_mask_excludes_exactly_the_masked_positions():
    model = random_model()
    ids = _ids(1, 10)
    labels = ids.clone()
    labels[0, 3:6] = IGNORE
    with torch.no_grad():
        base = lm_loss(model, ids, labels)
        logp = model(ids)[0, :-1].log_softmax(-1)  # (9, vocab)
        scored = [t for t in range(1, 10) if labels[0, t] != IGNORE]
        assert torch.allclose(base, -torch.stack([logp[t - 1, ids[0, t]] for t in scored]).mean(), atol=1e-6)
        changed = labels.clone()
        changed[0, 0] = 7  # position 0 is never predicted
        assert torch.equal(lm_loss(model, ids, changed), base)
        changed[0, 8] = (ids[0, 8] + 1) % 512  # an unmasked label: a different target
        assert not torch.allclose(lm_loss(model, ids, changed), base)
        with pytest.raises(ArgumentError, match="no scored tokens"):
            lm_loss(model, ids, torch.full_like(ids, IGNORE))


@pytest.mark.parametrize("name", ARCHS)
def test_select_gives_the_full_forwards_logits_at_those_positions(name):
    model = random_model(name)
    ids = _ids(3, 9)
    select = torch.rand(3, 9, generator=torch.Generator().manual_seed(1)) < 0.4
    with torch.no_grad():
        assert torch.allclose(model(ids, select=select), model(ids)[select], atol=1e-6)  # (n_selected, vocab)
    with pytest.raises(ArgumentError, match="select"):
        model(ids, last_only=True, select=select)


def test_sft_example_scores_exactly_the_model_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, labels = sft_example(tok, "What is RoPE?", "A rotation of q and k.")
    assert len(ids) == len(labels) and ids[0] == tok.bos_id
    assert tok.decode(ids) == ("<start_of_turn>user\nWhat is RoPE?<end_of_turn>\n"
                               "<start_of_turn>model\nA rotation of q and k.<end_of_turn>\n")
    scored = [i for i, l in enumerate(labels) if l != IGNORE]
    assert scored == list(range(scored[0], scored[-1] + 1))  # one contiguous run...
    assert [labels[i] for i in scored] == [ids[i] for i in scored]
    assert tok.decode(ids[i] for i in scored) == "A rotation of q and k.<end_of_turn>"  # ...the reply, and its stop
    assert ids[scored[-1]] == tok.end_of_turn_id
    everything = sft_example(tok, "What is RoPE?", "A rotation of q and k.", mask_prompt=False)
    assert everything == (ids, ids)


def test_batches_pad_on_the_right_and_are_seeded(tmp_path):
    examples = [([2, 5, 6], [IGNORE, 5, 6]), ([2, 7], [IGNORE, 7]), ([2, 8, 9, 10], [IGNORE, IGNORE, 9, 10])]
    ids, labels = pad(examples, pad_id=0)
    assert ids.tolist() == [[2, 5, 6, 0], [2, 7, 0, 0], [2, 8, 9, 10]]
    assert labels.tolist() == [[IGNORE, 5, 6, IGNORE], [IGNORE, 7, IGNORE, IGNORE], [IGNORE, IGNORE, 9, 10]]
    one = [b[0].tolist() for b in batches(examples, 2, pad_id=0, seed=3, epochs=2)]
    assert one == [b[0].tolist() for b in batches(examples, 2, pad_id=0, seed=3, epochs=2)]
    assert len(one) == 4 and sorted(map(len, one)) == [1, 1, 2, 2]
    windows, targets = next(text_batches(list(range(100)), 4, 8, seed=0))
    assert windows.shape == (4, 8) and torch.equal(windows, targets)
    assert (windows[:, 1:] - windows[:, :-1] == 1).all()  # contiguous windows of the stream
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "split": "train"}\n\n{"prompt": "b", "split": "heldout"}\n')
    assert [r["prompt"] for r in read_jsonl(tmp_path / "d.jsonl", split="heldout")] == ["b"]


def test_lr_schedule():
    lrs = [lr_at(s, steps=14, lr=1.0, warmup=4) for s in range(14)]
    assert lrs[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]  # linear warmup, then the cosine starts at the top
    assert lrs[9] == pytest.approx(0.5)  # halfway through the decay
    assert lrs[13] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))  # near zero at the end
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert [lr_at(s, steps=14, lr=1.0, warmup=2, schedule="constant") for s in range(4)] == [0.5, 1, 1, 1]
    model = random_model()
    history = train(model, [(_ids(1, 6), _ids(1, 6))], steps=6, lr=0.1, warmup=2, progress=False)
    assert history.lr == [lr_at(s, steps=6, lr=0.1, warmup=2) for s in range(6)]


def test_accumulating_two_half_batches_is_one_full_batch_step():
    ids = _ids(4, 10)
    runs = []
    for data, accumulate in [([(ids, ids)], 1), ([(ids[:2], ids[:2]), (ids[2:], ids[2:])], 2)]:
        model, grads = random_model(), {}
        for name, p in model.named_parameters():  # the gradient the optimizer sees, after every backward
            p.register_post_accumulate_grad_hook(lambda p, name=name: grads.__setitem__(name, p.grad.clone()))
        history = train(model, data, steps=1, lr=1e-5, grad_clip=None, accumulate=accumulate, progress=False)
        runs.append((model, grads, history))
    (full, full_grads, a), (halves, half_grads, b) = runs
    # Adam's step hardly depends on the gradient's scale (a sum instead of a mean would pass), and it
    # divides by |g|, so entries with |g| near its eps amplify rounding: compare the gradients themselves.
    assert a.loss == pytest.approx(b.loss, abs=1e-6) and a.grad_norm == pytest.approx(b.grad_norm, rel=1e-6)
    for name, g in full_grads.items():
        assert torch.allclose(g, half_grads[name], atol=1e-6), name
    for (name, p), q in zip(full.named_parameters(), halves.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_only_parameters_that_require_grad_change_and_eval_is_restored():
    model = random_model()
    model.requires_grad_(False)
    model.ln_final.weight.requires_grad_(True)
    before = copy.deepcopy(model.state_dict())
    train(model, [(_ids(), _ids())], steps=2, lr=1e-2, progress=False)
    assert not model.training
    changed = [n for n, t in model.state_dict().items() if not torch.equal(t, before[n])]
    assert changed == ["ln_final.weight"]
    model.requires_grad_(False)
    with pytest.raises(ArgumentError, match="requires grad"):
        train(model, [(_ids(), _ids())], steps=1, progress=False)


def test_training_memorizes_a_repeated_sequence_deterministically():
    stream = list(range(10, 26)) * 16  # one 16-token phrase, over and over

    def run():
        model = random_model()
        return train(model, text_batches(stream, 4, 24, seed=0), steps=40, lr=3e-3, warmup=5,
                     progress=False), model

    history, model = run()
    assert history.loss[-1] < history.loss[0] / 20, history.loss
    assert run()[0].loss == history.loss  # same seed, same machine: the same run


def test_dpo_loss_by_hand():
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-3.0, -5.0], [-4.0, -2.0], [-3.5, -4.0], [-3.0, -3.0]))
    # margins: (0.5 - (-1)) = 1.5 and (-1 - 1) = -2
    expected = -(math.log(1 / (1 + math.exp(-0.2 * 1.5))) + math.log(1 / (1 + math.exp(0.2 * 2)))) / 2
    assert dpo_loss(pc, pr, rc, rr, beta=0.2).item() == pytest.approx(expected, rel=1e-6)
    assert dpo_loss(pc, pr, pc, pr, beta=0.5).item() == pytest.approx(math.log(2), rel=1e-6)


def test_dpo_raises_the_preference_margin(tiny_tokenizer):
    tok = tiny_tokenizer
    records = [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I do not know what a colour is."},
               {"prompt": "Add 2 and 2.", "chosen": "4", "rejected": "22, probably"}]
    reference = random_model()
    pairs = preference_pairs(tok, records)
    data = dpo_batches(reference, pairs, 2, pad_id=tok.pad_id)
    policy = copy.deepcopy(reference)
    at_start = preference_margin(policy, data)
    assert at_start["margin"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():  # the policy is the reference: the loss is exactly log 2
        assert dpo_loss_fn(0.1)(policy, data[0]).item() == pytest.approx(math.log(2), rel=1e-5)
    history = train(policy, data, steps=8, lr=3e-3, loss_fn=dpo_loss_fn(0.1), progress=False)
    after = preference_margin(policy, data)
    assert after["margin"] > 1.0 and after["accuracy"] == 1.0, (after, history.loss)
    assert history.loss[-1] < history.loss[0]


@pytest.mark.skipif(not kernel_works("onednn", torch.device("cpu")), reason="no oneDNN kernel here")
def test_onednn_unembedding_has_gradients():
    # The oneDNN op has no autograd formula: backward through it leaves x.grad None (with a warning).
    embed = torch.nn.Embedding(4096, 32)  # wide enough for the oneDNN path
    x = torch.randn(3, 32, requires_grad=True)
    unembed = OneDNNUnembedding()
    with torch.no_grad():
        assert torch.equal(unembed(x, embed), onednn_linear(x, embed.weight))
    unembed(x, embed).square().sum().backward()
    x_grad, w_grad = x.grad.clone(), embed.weight.grad.clone()
    x.grad, embed.weight.grad = None, None
    F.linear(x, embed.weight).square().sum().backward()
    assert torch.allclose(x_grad, x.grad) and torch.allclose(w_grad, embed.weight.grad)

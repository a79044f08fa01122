"""Write notebook 15 (instruction tuning the embedded 270M) from the cells below, then execute it.

    .venv/bin/python notebooks/_build/build_15.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/15_instruction_tuning.ipynb

The first run trains the chat adapter (minigemma.train.chat_tuning.make_chat_adapter: 40 LoRA steps,
a few minutes on a laptop CPU) and caches it; later runs, the second of `make test` included, load it
from the cache. Outputs that cannot be compared by nbval carry `# NBVAL_IGNORE_OUTPUT` as their first line, alone
(nbval matches the whole comment: `# NBVAL_IGNORE_OUTPUT  (why)` is not recognised), and the reason
on the line after it:
- the training cell (a progress bar the first time, nothing once cached) and the time taken;
- whatever follows float rounding through training or greedy decoding: losses, margins, generated
  text. Float sums differ between CPU code paths, and training and greedy decoding amplify them.
Every claim the prose makes about those numbers is also printed as a comparison that holds with a wide
margin (`the tuned model ends at least 8 of 12 held-out turns: True`), in cells nbval does compare;
integer facts of the data (token counts) are printed as they are.
"""

from __future__ import annotations

from pathlib import Path

from nbcells import code, md, write_notebook


CELLS = [
    md(r"""
    # 15 · Instruction tuning the 270M until it chats

    **What you will learn**
    - why a *base* model, trained only to continue text, cannot hold a conversation: it never ends
      its turn (measured on the embedded 270M);
    - supervised fine-tuning (SFT), the first step of the Gemma report's instruction tuning:
      prompt-response pairs in the chat template, with the loss on the model's turn only, its
      `<end_of_turn>` included;
    - why the prompt is masked out of the loss, counted token by token;
    - LoRA: training a small fraction of the numbers of the model instead of all of them;
    - how to judge the result on prompts the tuning never saw;
    - DPO, the simplest honest stand-in for the report's second step (RLHF): learning from pairs of
      answers, one preferred.

    **Builds on** `09_chat` (the chat template, and why the base model never emits `<end_of_turn>`)
    and `14_pretraining` (the loss, `minigemma.train.train`, reading a loss curve).

    **How long it takes.** The first run trains 40 LoRA steps of 8 examples: a few minutes on a
    laptop CPU, the bulk of the notebook, with a progress bar. The result (the *adapter*) is saved
    in minigemma's cache, and every later run, of this notebook or of `minigemma chat`, loads it
    in a second. The last cell prints how long this run took.

    **Read along:** the Gemma report (Gemma Team, 2024), section 4 "Instruction Tuning"
    (supervised fine-tuning, RLHF, formatting); Hu et al. (2021), *LoRA: Low-Rank Adaptation of
    Large Language Models*, section 4.1; Rafailov et al. (2023), *Direct Preference Optimization:
    Your Language Model is Secretly a Reward Model*, sections 4 and 5.
    """),
    code(r"""
    %matplotlib inline
    import html
    import json
    import math
    import time

    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    from IPython.display import HTML, display

    import minigemma
    from minigemma.decoding.chat import Chat, encode_text
    from minigemma.loading.adapter import chat_adapter_dir
    from minigemma.model.lora import add_lora, count_trainable, lora_layers
    from minigemma.train import (IGNORE, History, answers, dpo_batches, dpo_loss_fn, merged, pad,
                                 preference_margin, preference_pairs, read_jsonl, sft_example, train)
    from minigemma.train.chat_tuning import INSTRUCTIONS, PREFERENCES, Recipe, cached_chat_adapter, make_chat_adapter

    %config InlineBackend.figure_formats = ["retina"]  # figures drawn sharp on high-resolution screens
    notebook_start = time.perf_counter()
    torch.manual_seed(0)
    base, tok = minigemma.load("gemma3-270m", progress=False)  # the embedded *base* model, fp32 on CPU
    print(base.config.name, f"{base.num_parameters():,} parameters")
    """),
    md(r"""
    ## 1. A base model does not answer, it continues

    Pre-training teaches a model one thing: given some text, predict the next token (notebook 14).
    The 270M embedded in minigemma is such a **base** (pre-trained) checkpoint. Google also
    publishes **instruction-tuned** ("-it") versions of the Gemma models, made from the base ones
    in two steps (Gemma report, section 4):

    1. **supervised fine-tuning (SFT)** on prompt-response pairs, written in the chat template of
       notebook 09: control tokens `<start_of_turn>` and `<end_of_turn>` around every turn;
    2. **RLHF**, reinforcement learning from human feedback: a reward model trained on human
       preferences between answers scores the model's own answers, and the model is tuned to
       raise that score.

    The base model's pre-training text was not in this template. Notebook 09 found the markers'
    embedding rows sitting with those of tokens that never occur in any text, and measured the
    probability the 270M gives `<end_of_turn>` right after an answer at about 1e-7. So it does not
    stop: it writes on, as it would continue any web page.

    How to measure that? `minigemma.train.answers` puts each prompt in the chat template, decodes
    greedily for at most 40 new tokens, and reports the text and whether the model **ended its
    turn** with `<end_of_turn>` before the 40 ran out. We ask 12 prompts from the *held-out* part
    of the instruction set (section 2): questions no training step will ever see.
    """),
    code(r"""
    heldout = read_jsonl(INSTRUCTIONS, split="heldout")
    N, NEW_TOKENS = 12, 40
    prompts = [r["prompt"] for r in heldout[:N]]
    base_replies = answers(base, tok, prompts, max_new_tokens=NEW_TOKENS)  # [(text, ended), ...]
    base_ended = sum(ended for _, ended in base_replies)
    print(f"base model ends at most 2 of {N} held-out turns within {NEW_TOKENS} tokens:", base_ended <= 2)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (greedy text: another CPU code path may pick another token at a near-tie)
    print(f"the base model ended {base_ended} of {N} turns\n")
    for prompt, (text, ended) in list(zip(prompts, base_replies))[:3]:
        print(f"user > {prompt}\nbase > {text!r}  [{'ended' if ended else 'still going'}]\n")
    """),
    md(r"""
    Read the replies: the model repeats the question, puts a stray token where the end of the turn
    should be, and goes round again, or repeats one word. It copies the shape of a conversation,
    as in notebook 09, but never writes the marker that would end it.

    ## 2. The data: 200 prompts with answers, in the chat template

    `assets/instructions.jsonl` is the instruction set of this notebook. It was written for this
    project (its origin and categories are in `assets/README.md`): short prompts from sixteen
    categories (science, geography, arithmetic word problems, translations, rewording a sentence,
    polite refusals of unsafe requests, ...) with answers of one to three sentences. 200 are for
    training; 40 are held out, different questions from the same categories, to test on.
    """),
    code(r"""
    records = read_jsonl(INSTRUCTIONS, split="train")
    print(f"{len(records)} training records, {len(heldout)} held out")
    assert len(records) == 200 and len(heldout) == 40
    assert not {r["prompt"] for r in records} & {r["prompt"] for r in heldout}
    example = records[2]
    print(json.dumps(example, indent=1))
    """),
    md(r"""
    `minigemma.train.sft_example` turns one record into what training needs: the token ids of
    the whole conversation, and a **label** for each position. The label is the token that the
    loss scores there, or `-100` (`IGNORE`, PyTorch's `ignore_index`) for a token that is context
    only. The prompt part is exactly what `Chat` sends at inference (notebook 09), so training sees
    the model's turn start where it will start when the model answers.
    """),
    code(r"""
    ids, labels = sft_example(tok, example["prompt"], example["response"])
    print(repr(tok.decode(ids)))
    print(f"{len(ids)} tokens, {sum(l != IGNORE for l in labels)} of them scored")
    """),
    md(r"""
    Token by token, scored ones in green (hover over a token for its id and label). Only the
    model's turn is scored: its text and the `<end_of_turn>` that closes it. Everything before,
    the template and the user's message, is masked. So is the newline after `<end_of_turn>`:
    generation stops at the marker, so the model never has to write what comes after it.
    """),
    code(r"""
    def token_strip(ids: list[int], labels: list[int]) -> HTML:
        spans = []
        for i, label in zip(ids, labels):
            piece = html.escape(tok.id_to_piece(i).replace("\n", "\\n"))
            style = "background:#8fd694;font-weight:bold" if label != IGNORE else "color:#777"
            spans.append(f'<span title="id {i}, label {label}" style="{style};padding:1px 3px;margin:1px;'
                         f'border:1px solid #ccc">{piece}</span>')
            if tok.id_to_piece(i) == "\n":
                spans.append("<br>")
        return HTML('<div style="font-family:monospace;font-size:15px;line-height:2">' + "".join(spans) + "</div>")


    display(token_strip(ids, labels))
    print(f"{'pos':>3}  {'piece':16s} label")
    for pos, (i, label) in enumerate(zip(ids, labels)):
        print(f"{pos:3d}  {tok.id_to_piece(i)!r:16s} {'-100 (masked)' if label == IGNORE else label}")
    """),
    md(r"""
    Check it: the scored labels, decoded, are the response followed by `<end_of_turn>`, and
    nothing else. (The labels sit at the position of the token itself; the loss shifts them, as
    in notebook 14: the logits at position $t$ are scored against the label at $t + 1$.)
    """),
    code(r"""
    scored = [l for l in labels if l != IGNORE]
    assert tok.decode(scored) == example["response"] + "<end_of_turn>"
    assert scored[-1] == tok.end_of_turn_id and labels[0] == IGNORE
    assert all(l == i for i, l in zip(ids, labels) if l != IGNORE)  # a scored label is the token there
    print("scored tokens = the response + <end_of_turn>:", tok.decode(scored) == example["response"] + "<end_of_turn>")
    """),
    md(r"""
    ## 3. Why mask the prompt?

    Without the mask (`sft_example(..., mask_prompt=False)`) every token after the first is
    scored, as in pre-training. The training signal is then spent on imitating the *users*:
    predicting their questions and the template around them, text the model never has to write,
    because `Chat` writes it. What the model does have to learn, the replies and the one
    `<end_of_turn>` of each, gets a smaller share of every update. How large a share is at stake?
    First count, over the 200 training examples, who wrote each scored token:
    """),
    code(r"""
    def token_roles(record: dict) -> tuple[list[int], list[str]]:
        # sft_example's ids and who wrote each: the template, the user, the model's reply, or its <end_of_turn>
        ids, _ = sft_example(tok, record["prompt"], record["response"], mask_prompt=False)
        roles = (["template"] * 4                                  # <bos> <start_of_turn> user \n
                 + ["user"] * len(tok.encode(record["prompt"]))
                 + ["template"] * 5                                  # <end_of_turn> \n <start_of_turn> model \n
                 + ["reply"] * len(encode_text(tok, record["response"]))
                 + ["<end_of_turn>", "template"])                    # the reply's <end_of_turn>, \n
        assert len(roles) == len(ids)
        return ids, roles


    ROLES = ("template", "user", "reply", "<end_of_turn>")
    counts = dict.fromkeys(ROLES, 0)
    for r in records:
        ids_r, roles_r = token_roles(r)
        masked, unmasked = sft_example(tok, r["prompt"], r["response"]), sft_example(tok, r["prompt"], r["response"],
                                                                                     mask_prompt=False)
        assert [l != IGNORE for l in masked[1]] == [role in ("reply", "<end_of_turn>") for role in roles_r]
        assert unmasked[1] == ids_r  # without the mask every label is the token itself
        for role in roles_r[1:]:  # position 0 (<bos>) is never scored: no logits come before it
            counts[role] += 1
    total = sum(counts.values())
    for role in ROLES:
        print(f"{role:14s} {counts[role]:5,} tokens  {counts[role] / total:6.1%}")
    print(f"with the mask {counts['reply'] + counts['<end_of_turn>']:,} tokens are scored, without it {total:,}")
    """),
    md(r"""
    The cell above prints the shares: without the mask, nearly half of the scored tokens are the
    user's or the template's. Counting tokens understates it, though, because tokens are not all
    equally hard. Here is the base model's loss (in nats, as in notebook 14) on each kind of token,
    on 16 of the held-out examples, none of which it has seen:
    """),
    code(r"""
    @torch.no_grad()
    def losses_by_role(model, records: list[dict]) -> dict[str, torch.Tensor]:
        # The loss on every token after the first, grouped by who wrote it; one example at a time (no padding).
        out = {role: [] for role in ROLES}
        for r in records:
            ids, roles = token_roles(r)
            logits = model(torch.tensor([ids]))[0, :-1]  # the predictions of tokens 1, 2, ...
            nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")  # (len - 1,)
            for role, loss in zip(roles[1:], nll):
                out[role].append(loss)
        return {role: torch.stack(v) for role, v in out.items()}


    scoring = heldout[:16]  # held-out examples: the base model has seen none of them, nor will the tuned one
    base_losses = losses_by_role(base, scoring)
    prompt_side = float(base_losses["template"].sum() + base_losses["user"].sum())
    share_of_loss = prompt_side / sum(float(v.sum()) for v in base_losses.values())
    print("base model, mean loss on the user's text above its loss on the replies:",
          float(base_losses["user"].mean()) > float(base_losses["reply"].mean()))
    print("more than half of the unmasked loss is on the user's and the template's tokens:", share_of_loss > 0.5)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (losses differ in their last digits between CPU code paths)
    for role in ROLES:
        print(f"{role:14s} mean loss {float(base_losses[role].mean()):5.2f} nats "
              f"over {len(base_losses[role]):4d} tokens")
    print(f"share of the unmasked loss on the user's and the template's tokens: {share_of_loss:.0%}")
    """),
    md(r"""
    The user's questions are hard to predict, harder than the answers once the question is known,
    and the template's tokens are harder still for a base model, which has never learnt the
    markers (notebook 09). So the unmasked loss, and with it the gradient, is mostly about the
    prompt side: the cell above prints how much. With the mask, all of the signal goes where it is
    needed: the replies, and the token that matters most, `<end_of_turn>`, the hardest of all (its
    loss is in the same table). That is the token the model must learn to write.

    ## 4. LoRA: train a small update, not the model

    Full fine-tuning would train all 268 million numbers, and AdamW would keep two more numbers for
    each (its moment estimates). LoRA (Hu et al. 2021) freezes the pretrained weights and learns
    the *change* to each chosen weight matrix $W$ (out x in) as a product of two thin matrices,
    $\Delta W = \frac{\alpha}{r} B A$ with $B$ (out x $r$) and $A$ ($r$ x in), so a layer computes

    $$h = W x + \tfrac{\alpha}{r} B A x .$$

    Section 4.1 of the paper gives the reasons: its hypothesis is that the update a fine-tuning
    needs has a low "intrinsic rank"; $B$ starts at zero, so training starts exactly from the
    pretrained model;
    and after training $\frac{\alpha}{r} B A$ can be added into $W$ ("merged"), so the tuned model
    costs nothing extra per token. `minigemma/model/lora.py` is the whole implementation, a
    module swap: `add_lora` replaces each chosen `nn.Linear` by a `LoRALinear` wrapper.

    The recipe of this notebook, `minigemma.train.chat_tuning.Recipe`, adapts all seven linear
    layers of every block (q, k, v, o and the MLP's gate, up and down) with rank 16. On a fresh
    model:
    """),
    code(r"""
    recipe = Recipe()
    print(recipe)
    fresh, _ = minigemma.load("gemma3-270m", progress=False)
    add_lora(fresh, rank=recipe.rank, alpha=recipe.alpha, targets=recipe.targets)
    trainable, total = count_trainable(fresh)
    print(f"trainable: {trainable:,} of {total:,} parameters ({trainable / total:.2%})")
    """),
    md(r"""
    Check the count by hand: each adapted layer adds $r \cdot (\text{in} + \text{out})$ numbers,
    and one prompt gives exactly the base model's logits, since $B = 0$:
    """),
    code(r"""
    layers = lora_layers(fresh)
    assert trainable == sum(recipe.rank * (m.in_features + m.out_features) for m in layers.values())
    print(f"{len(layers)} adapted layers ({fresh.config.num_layers} blocks x 7), for example:")
    for name in list(layers)[:7]:
        m = layers[name]
        count = recipe.rank * (m.in_features + m.out_features)
        print(f"  {name:24s} {m.in_features:5d} -> {m.out_features:5d}: {count:6,} numbers")
    probe = torch.tensor([tok.encode("The capital of France is", add_bos=True)])
    with torch.no_grad():
        assert torch.equal(fresh(probe), base(probe))  # B = 0: bit for bit the base model
    del fresh, layers
    """),
    md(r"""
    ## 5. Training

    `minigemma.train.chat_tuning.tune_chat` is the whole SFT recipe in five lines: the 200 training
    records through `sft_example` (masked), `add_lora`, shuffled batches of 8 padded on the right,
    and `train` from notebook 14: AdamW, 8 warmup steps, a cosine decay, 40 steps. Only the
    adapters require grad, so only they change. The learning rate, 2e-3, is high for fine-tuning:
    LoRA's small matrices take it (the example in `minigemma/train/__init__.py`, which trains
    every weight, uses 1e-5).

    `make_chat_adapter` runs `tune_chat` on a fresh 270M **once**, and saves the adapter in
    Hugging Face peft's format (so peft can read it too) in minigemma's cache, with the loss of
    every step (`history.json`) and a fingerprint of the recipe and the data (`made_from.json`).
    When the cache already holds this recipe's adapter, it returns at once. The first run prints
    a progress bar for the training; later runs print nothing here. To train again, delete the
    directory it prints. `minigemma tune` makes the same adapter from a terminal (and does
    nothing when it is already made).
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (trains only when the cache lacks this recipe's adapter; the time depends on the machine)
    was_cached = cached_chat_adapter(recipe) is not None
    t0 = time.perf_counter()
    path = make_chat_adapter(recipe)
    how = "loaded from the cache" if was_cached else "trained and saved"
    print(f"{how} in {time.perf_counter() - t0:.0f} s: {path}")
    """),
    code(r"""
    assert path == chat_adapter_dir()
    print(sorted(p.name for p in path.iterdir()))
    config = json.loads((path / "adapter_config.json").read_text())
    print({k: config[k] for k in ("peft_type", "r", "lora_alpha", "target_modules", "base_model_name_or_path")})
    """),
    md(r"""
    `minigemma.load(..., adapter="chat")` loads the base model and attaches this adapter
    (unmerged: the `LoRALinear` wrappers are back, holding the trained $A$ and $B$).
    """),
    code(r"""
    model, tok = minigemma.load("gemma3-270m", adapter="chat", progress=False)
    assert count_trainable(model) == (trainable, total)
    history = History(**json.loads((path / "history.json").read_text()))
    PASS = len(records) // recipe.batch_size  # 25 steps: one pass over the 200 training examples
    assert len(history.loss) == recipe.steps and len(records) % recipe.batch_size == 0
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-5:]) / 5
    end_of_pass_1 = sum(history.loss[PASS - 10:PASS]) / 10
    pass_2 = sum(history.loss[PASS:]) / len(history.loss[PASS:])
    print("mean loss of the last 5 steps below half that of the first 5:", last < first / 2)
    print("second pass (seen examples) more than 0.5 nats below the last 10 steps of the first:",
          pass_2 < end_of_pass_1 - 0.5)
    """),
    code(r"""
    base_reply_loss = float(torch.cat([base_losses["reply"], base_losses["<end_of_turn>"]]).mean())
    with plt.rc_context({"figure.dpi": 80, "font.size": 12}):  # large enough for a projector
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        steps = range(1, len(history.loss) + 1)
        ax.plot(steps, history.loss, marker=".", color="tab:green", label="training loss (one batch of 8)")
        ax.axhline(base_reply_loss, color="tab:red", ls="--", label="base model, held-out replies")
        ax.axvline(PASS + 0.5, color="gray", ls=":")
        ax.text(PASS + 1, 0.95 * max(history.loss), "second pass over\nthe 200 examples", va="top", fontsize=11)
        ax.set(xlabel="step", ylabel="loss (nats)", ylim=(0, None),
               title="SFT loss on the scored tokens")
        ax.legend(fontsize=10, loc="lower left")
        fig.tight_layout()
        plt.show()
    """),
    md(r"""
    The loss is the mean over the scored tokens of each batch, so it jumps from batch to batch
    (some answers are easier to predict than others). It starts near the dashed line, the base
    model's loss on the replies of held-out examples, and falls over the first pass. Then, at step
    26, it drops much further: 200 examples in batches of 8 are 25 steps, and from step 26 on the
    model sees answers it has been trained on before. Part of that drop is memorising, which is why
    a training loss says little about what the model will do with new prompts, and why we measure
    on held-out ones. (`history.plot()` draws the learning rate and the gradient norm as well.)

    ## 6. After: the same prompts

    The same 12 held-out prompts, the same greedy decoding and limit of 40 tokens. A model with
    unmerged adapters pays two extra small matrix products in each of 126 layers per token;
    `answers` merges them into the weights for the duration (`minigemma.train.merged`).
    """),
    code(r"""
    tuned_replies = answers(model, tok, prompts, max_new_tokens=NEW_TOKENS)
    tuned_ended = sum(ended for _, ended in tuned_replies)
    print(f"tuned model ends at least 8 of {N} held-out turns:", tuned_ended >= 8)
    print(f"base model ends at most 2 of {N}:", base_ended <= 2)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (greedy text of a trained model: follows the last bits of the weights)
    print(f"ended within {NEW_TOKENS} tokens: base {base_ended} of {N}, tuned {tuned_ended} of {N}\n")
    for prompt, (b, _), (t, ended) in list(zip(prompts, base_replies, tuned_replies))[:4]:
        print(f"user  > {prompt}\nbase  > {b!r}\ntuned > {t!r}  [{'ended' if ended else 'still going'}]\n")
    """),
    md(r"""
    Short answers that stop. Not always right: this is a 270M model taught a format with 200
    examples, not facts; whatever it knows came from pre-training. The same measure, and the loss
    on each kind of token of the 16 held-out examples of section 3, before and after:
    """),
    code(r"""
    with merged(model):
        tuned_losses = losses_by_role(model, scoring)
    with plt.rc_context({"figure.dpi": 80, "font.size": 12}):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.3), gridspec_kw={"width_ratios": [1, 2.2]})
        ax1.bar(["base", "tuned"], [base_ended / N, tuned_ended / N], color=["#999", "tab:green"])
        for x_bar, ended in enumerate([base_ended, tuned_ended]):
            ax1.text(x_bar, ended / N + 0.03, f"{ended} of {N}", ha="center")
        ax1.set_ylim(0, 1.15)
        ax1.set_ylabel("share of turns ended")
        ax1.set_title(f"within {NEW_TOKENS} new tokens")
        x = torch.arange(len(ROLES))
        ax2.bar(x - 0.2, [float(base_losses[r].mean()) for r in ROLES], width=0.4, color="#999", label="base")
        ax2.bar(x + 0.2, [float(tuned_losses[r].mean()) for r in ROLES], width=0.4, color="tab:green", label="tuned")
        ax2.set_xticks(x, ["template", "user's text", "model's reply", "<end_of_turn>"])
        ax2.set_ylabel("mean loss (nats)")
        ax2.set_title(f"loss by kind of token, {len(scoring)} held-out examples")
        ax2.legend()
        fig.tight_layout()
        plt.show()
    """),
    code(r"""
    def mean(losses, role):
        return float(losses[role].mean())


    eot_base, eot_tuned = mean(base_losses, "<end_of_turn>"), mean(tuned_losses, "<end_of_turn>")
    print("loss on the held-out replies fell:", mean(tuned_losses, "reply") < mean(base_losses, "reply"))
    print("P(<end_of_turn>) at the end of a held-out answer, geometric mean: base below 1e-4, tuned above 0.1:",
          torch.tensor(-eot_base).exp().item() < 1e-4 and torch.tensor(-eot_tuned).exp().item() > 0.1)
    print("loss on the user's text moved by less than 0.5 nats:",
          abs(mean(tuned_losses, "user") - mean(base_losses, "user")) < 0.5)
    print("loss on the template rose:", mean(tuned_losses, "template") > mean(base_losses, "template"))
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (losses of a trained model differ in their last digits between CPU code paths)
    for role in ROLES:
        print(f"{role:14s} base {mean(base_losses, role):5.2f}   tuned {mean(tuned_losses, role):5.2f} nats")
    print(f"P(<end_of_turn>) after the answer (geometric mean): base {torch.tensor(-eot_base).exp().item():.1e}, "
          f"tuned {torch.tensor(-eot_tuned).exp().item():.2f}")
    """),
    md(r"""
    `<end_of_turn>` went from one of the least likely tokens to the expected one at the end of an
    answer, on examples the training never saw, and the replies' loss fell. The loss on the
    user's text hardly moved: it was never scored. The template was never scored either, and its
    loss *rose*: the update that taught the model to close its turn also changed what it expects
    around the markers, and nothing in the training held that in place. It costs nothing here,
    because the model never writes the template: `Chat` does, and generation stops at
    `<end_of_turn>`.

    **A conversation.** `Chat` (notebook 09) with the tuned model, merged for speed. The second
    message makes sense only with the first, and `Chat` sends the whole conversation every turn;
    whether the model makes use of it is another matter, since every training example had a single
    turn. `minigemma chat` in a terminal does the same: it loads this adapter from the cache when
    it is there.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (greedy text of a trained model: follows the last bits of the weights)
    with merged(model):
        chat = Chat(model, tok)
        for message in ["What is the capital of Italy?", "And of Spain?"]:  # the second needs the first
            print("user  >", message)
            print("model >", chat.say(message, max_new_tokens=40), "\n")
    """),
    md(r"""
    ## 7. Preferences: DPO instead of RLHF

    SFT shows the model good answers. The report's second step teaches it which of two answers
    is *better*: with RLHF, people compare pairs of answers, a reward model learns their
    preferences, and the tuned model is trained by reinforcement learning to write answers that
    the reward model scores high, sampling its own answers as it goes, with a penalty for moving
    far from the SFT model.

    DPO (Rafailov et al. 2023) optimises the same objective, a reward held in check by a penalty
    for moving away from the SFT model, without the reward model and without sampling. For pairs
    (prompt $x$, chosen answer $y_w$, rejected answer $y_l$) it minimises

    $$-\log \sigma\Big(\beta \big[(\log \pi(y_w|x) - \log \pi_\text{ref}(y_w|x)) - (\log \pi(y_l|x) - \log \pi_\text{ref}(y_l|x))\big]\Big)$$

    where $\pi$ is the model being trained and $\pi_\text{ref}$ the model it starts from, here the
    SFT model. It raises the chosen answer's log-probability *relative to the reference* more than
    the rejected one's. It is a classification loss on fixed, offline pairs: the model never
    writes an answer during training, unlike RLHF (the docstring of `minigemma/train/dpo.py`
    derives it). `assets/preferences.jsonl` has 48 pairs, written for this project, each with a
    `kind` of rejected answer: **wrong** (a confident factual or arithmetic error, worded like the
    chosen answer), **rambling** (long, near the topic, never answering) or **unhelpful** (refuses
    a harmless request). 36 are for training, 12 held out (4 of each kind).
    """),
    code(r"""
    prefs = read_jsonl(PREFERENCES)
    train_prefs = [r for r in prefs if r["split"] == "train"]
    kinds = ("wrong", "rambling", "unhelpful")
    held_prefs = {k: [r for r in prefs if r["split"] == "heldout" and r["kind"] == k] for k in kinds}
    print(len(train_prefs), "training pairs;", {k: len(v) for k, v in held_prefs.items()}, "held out")
    r = held_prefs["wrong"][0]
    print(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}, indent=1))
    """),
    md(r"""
    `dpo_batches` scores each pair with the reference model once (its log-probabilities never
    change), on the model's turn only, as in SFT: the chosen answer and its `<end_of_turn>`, the
    rejected one and its. The model *is* the reference at this point, so the bracket above is
    exactly 0 for every pair before training: `preference_margin` (its mean, without $\beta$) would
    print 0, and the first training step's loss is $-\log \sigma(0) = \log 2$. Then `train`, with
    the DPO loss instead of the language model's, on the same adapter: one pass over the 36 training
    pairs, 6 pairs a step.
    """),
    code(r"""
    BETA, DPO_STEPS, DPO_LR, PAIRS_PER_BATCH = 0.1, 6, 2e-4, 6
    t0 = time.perf_counter()
    # Pairs of similar length share a batch, so that little of it is padding (a quarter less work here);
    # the batches are then shuffled, so that the steps do not go from short answers to long ones.
    pairs = sorted(preference_pairs(tok, train_prefs), key=lambda pair: len(pair[0][0]) + len(pair[1][0]))
    train_batches = dpo_batches(model, pairs, PAIRS_PER_BATCH, pad_id=tok.pad_id)
    order = torch.randperm(len(train_batches), generator=torch.Generator().manual_seed(0)).tolist()
    train_batches = [train_batches[i] for i in order]
    held_batches = {k: dpo_batches(model, preference_pairs(tok, v), PAIRS_PER_BATCH, pad_id=tok.pad_id)
                    for k, v in held_prefs.items()}
    assert len(train_batches) == DPO_STEPS  # one pass
    dpo_history = train(model, train_batches, loss_fn=dpo_loss_fn(BETA), steps=DPO_STEPS, lr=DPO_LR, warmup=2,
                        progress=False)
    after = {k: preference_margin(model, b) for k, b in held_batches.items()}
    dpo_seconds = time.perf_counter() - t0
    print("the first step's loss is log 2 (the policy is its reference):",
          abs(dpo_history.loss[0] - math.log(2)) < 1e-4)
    mean_margin = sum(m["margin"] for m in after.values()) / len(kinds)
    print("after DPO, the mean held-out margin is above 1 nat:", mean_margin > 1)
    print("on the held-out rambling and on the unhelpful pairs, the margin is above 1 nat:",
          after["rambling"]["margin"] > 1 and after["unhelpful"]["margin"] > 1)
    print("the wrong kind's margin is less than a tenth of either other kind's:",
          after["wrong"]["margin"] < 0.1 * min(after["rambling"]["margin"], after["unhelpful"]["margin"]))
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (margins of a trained model follow the last bits of the weights; times vary)
    print(f"DPO: {DPO_STEPS} steps in {dpo_seconds:.0f} s (the reference log-probabilities included)")
    print("loss per step:", " ".join(f"{l:.3f}" for l in dpo_history.loss))
    print(f"\n{'held out':10s} {'margin':>7s} {'accuracy':>9s}")
    for k in kinds:
        print(f"{k:10s} {after[k]['margin']:7.2f} {after[k]['accuracy']:9.0%}")
    print(f"{'all':10s} {mean_margin:7.2f} {sum(m['accuracy'] for m in after.values()) / len(kinds):9.0%}")
    """),
    md(r"""
    The margin is in nats of log-probability, summed over an answer's tokens, so a long rejected
    answer whose every token became a little less likely makes a large margin; the accuracy is the
    share of pairs where the model now prefers the chosen answer more than the reference did. A
    handful of steps is enough to move the model away from *styles* it was shown to avoid:
    rambling and refusing are patterns that recur from pair to pair. Whether the **wrong** kind
    moves on new pairs is a different matter: each wrong answer is wrong about its own fact, and
    36 pairs cannot teach facts; what the model can learn from them is little more than "this
    kind of sentence, with this kind of number, was rejected". On the held-out pairs the "wrong"
    margin stays small next to the other two (the comparison above), and an accuracy over four
    pairs says little either way: style was learnt, facts were not.

    This is as far as the notebook goes. At Gemma's scale the preference data are large and
    collected from people, and RLHF's sampling lets the model learn from its own mistakes, which
    fixed pairs cannot show it.

    ## Summary

    - A base model continues text; an instruction-tuned one answers and ends its turn. The
      difference is a fine-tuning on conversations in the chat template (Gemma report, section 4).
    - SFT scores the model's turns only: its reply and its `<end_of_turn>`. Without the mask,
      nearly half of the scored tokens, and more than half of the loss, are the user's and the
      template's: training would be spent on imitating users.
    - LoRA trains a low-rank update of every linear layer, a small fraction of the numbers,
      starting exactly from the base model, and can be merged away for decoding.
    - 40 steps of 8 examples, a few minutes on a CPU, were enough to make the 270M end most of its
      turns on prompts it never saw. It learnt a format, not new facts.
    - DPO learns from pairs of answers without a reward model: style moves, facts do not.
    - **The pitfall:** forgetting the mask, or forgetting `<end_of_turn>` in the labels. Without
      the marker among the scored tokens nothing would raise its probability from the base
      model's (section 6 prints both): the model would learn to answer, but not to stop.

    The one number to remember:
    """),
    code(r"""
    print(f"LoRA trained {trainable / total:.1%} of the numbers of the 270M ({trainable:,}); "
          f"the tuned model ended at least 8 of {N} held-out turns, the base model at most 2: "
          f"{tuned_ended >= 8 and base_ended <= 2}")
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # (the time depends on the machine, and on whether the adapter was cached)
    print(f"this notebook ran in {time.perf_counter() - notebook_start:.0f} s "
          f"({'adapter from the cache' if was_cached else 'training included'})")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/15_instruction_tuning.py` (run by `tests/test_exercises_15.py`).

    1. **Scored tokens by hand.** Without calling `sft_example`, write
       `scored_counts(tok, prompt, response) -> (masked, unmasked)`: how many tokens the loss scores
       with and without the prompt mask. Build it from the template of notebook 09 (`<bos>`, the
       markers, the role names and newlines, `tok.encode` of the texts) and check it against
       `sft_example` on every record of `assets/instructions.jsonl`. Why is the unmasked count one
       less than the number of tokens?
    2. **The DPO loss of one pair.** With `math` only, write
       `dpo_pair_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)` for one pair
       of sequence log-probabilities, and check it against `minigemma.train.dpo_loss`. What is it
       when the policy is the reference? Write `dpo_margin_gradient(margin, beta)`, the derivative
       of the loss with respect to the margin, and check it with autograd: what is it at 0, and
       why does that let training start from the reference?
    3. **The cheapest LoRA targets.** Write `lora_parameters(config, rank, targets)`, the number of
       numbers LoRA trains for a list of targets (`"q_proj"`, ..., `"down_proj"`), from the
       config's sizes alone, and check it against `count_trainable` after `add_lora`. For the
       270M at rank 16, which single target is cheapest, and how many times more does
       `"all-linear"` cost than `["q_proj", "v_proj"]`, the paper's choice? (Mind pitfall 8:
       `head_dim` is not `hidden_size // num_heads`.)
    """),
    code(r"""
    def scored_counts(tok, prompt, response):
        ...  # your code


    def dpo_pair_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
        ...  # your code


    def dpo_margin_gradient(margin, beta):
        ...  # your code


    def lora_parameters(config, rank, targets):
        ...  # your code

    # When your functions return something, check them, e.g.:
    # assert scored_counts(tok, example["prompt"], example["response"]) == (
    #     sum(l != IGNORE for l in labels), len(ids) - 1)
    """),
    md(r"""
    **Next:** `16_block_kernel`, the last notebook: back to speed, inside minigemma's own C++ kernel
    for llama.cpp's block int8 format. The adapter you trained stays in the cache: `minigemma chat`
    in a terminal now talks to the tuned 270M (`--adapter none` for the base model), and
    `minigemma.load("gemma3-270m", adapter="chat")` loads it in Python. The README lists what else
    minigemma does, and `docs/pitfalls.md` the details that make a reimplementation of Gemma compute
    what was trained.
    """),
]


def build() -> Path:
    return write_notebook(CELLS, "15_instruction_tuning.ipynb", id_prefix="15")  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    print(build())

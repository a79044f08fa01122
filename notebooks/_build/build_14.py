"""Write notebook 14 (pretraining a tiny Gemma from scratch) from the cells below, then execute it.

    .venv/bin/python notebooks/_build/build_14.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/14_pretraining.ipynb

Two kinds of output cannot be compared by nbval. Their cells start with `# NBVAL_IGNORE_OUTPUT`
alone on its line (nbval ignores a marker with anything after it), the reason on the next:
- what depends on the corpus, the documentation topics of the running Python (they are regenerated
  for every Python release: sizes, token counts, learned pieces);
- what depends on float rounding through training: losses, sampled and greedy text, timings. Torch's
  normal draws and float sums differ between CPU code paths, and training amplifies the difference.
Every claim made in the prose about those numbers is also printed as a comparison that holds with a
wide margin (`beats the bigram by more than 0.1 nats: True`), in cells that nbval does compare, and
`make test` runs the notebook a second time on another CPU code path to prove it (README, "Tests").
The whole notebook runs in about a minute on one CPU core; training is most of it.
"""

from __future__ import annotations

from pathlib import Path

from nbcells import code, md, write_notebook


CELLS = [
    md(r"""
    # 14 · Pretraining a tiny Gemma from scratch

    **What you will learn**
    - how a language model is pretrained: a corpus, a vocabulary learned from it, and a model that
      learns to predict the next token, step by step, with the loss falling as it goes;
    - what the loss means: why a fresh model must start at $\ln V$, and why PyTorch's default
      initialisation puts a Gemma far above it (the pitfall of this notebook);
    - how to tell whether training learned anything: a **validation** split and a count-based
      **bigram** baseline that any model worth its parameters must beat;
    - what the tiny model writes before and after training, and how all of this relates to the
      3T and 6T tokens of the Gemma report.

    Everything runs on a CPU, training included (the last cell prints how long it all took): the
    corpus ships with Python, the tokenizer is the one you wrote in notebook 01, the model is the
    very `minigemma.Gemma` class that runs the real 270M, and the training loop is
    `minigemma.train.train`.

    **Builds on** `01_tokenizer` (BPE, and training a vocabulary with `train_bpe`), `06_the_model`
    (the decoder and its parameter count) and `07_gemma1_to_gemma3` (QK-norm, sandwich norms,
    local and global layers). **Next:** `15_instruction_tuning`.

    **Read along:** the Gemma report (Gemma Team, 2024), section "Pretraining" (training data and
    tokenizer) and Table 2 (parameter counts); Jurafsky & Martin, *Speech and Language
    Processing*, chapter 3 (n-gram models, smoothing, perplexity); Loshchilov & Hutter (2019),
    *Decoupled Weight Decay Regularization* (AdamW); Hoffmann et al. (2022), *Training
    Compute-Optimal Large Language Models* (how many tokens per parameter).
    """),
    code(r"""
    import copy
    import math
    import re
    import sys
    import time
    import zlib

    import matplotlib.pyplot as plt
    import pydoc_data.topics
    import torch

    import minigemma
    from minigemma.loading.weights import empty_model
    from minigemma.tokenizer.bpe import NORMAL, BPETokenizer
    from minigemma.tokenizer.bpe_train import train_bpe
    from minigemma.train import lm_loss, text_batches, train

    %config InlineBackend.figure_formats = ["retina"]  # figures drawn sharp on high-resolution screens
    notebook_start = time.perf_counter()
    # One thread: this model's matrix products are a few million multiply-adds each, over in
    # microseconds, and several threads spend more time waiting for each other than computing
    # (on a busy machine, many times more). One thread is never far from the fastest here.
    torch.set_num_threads(1)
    """),
    md(r"""
    ## 1. The corpus: Python's own documentation

    Every CPython carries, in its standard library, the pages that `help("for")` or
    `help("string-methods")` print: `pydoc_data.topics.topics`, a dict from a topic's name to its
    page of the Python Language and Library Reference. It makes a good first pretraining corpus:

    - **it is already on your machine**: no download, no network, the same on every computer that
      runs this notebook with the same Python;
    - **it is real text written by people**: English prose about one subject, with code examples,
      grammar rules and tables mixed in, much like the web pages and code in Gemma's data;
    - **its licence is clear**: the Python documentation is distributed under the
      [Python Software Foundation License Version 2](https://docs.python.org/3/license.html)
      (since Python 3.8.6 its code examples are also under the Zero-Clause BSD licence), which
      allows copying, changing and redistributing it with the notice kept.

    The pages are regenerated for every Python release, so the sizes printed below depend on your
    Python. Cells whose output depends on that carry `# NBVAL_IGNORE_OUTPUT` (the test suite runs
    them but does not compare what they print); what the text says about them is checked by
    `assert`s or printed as a comparison that holds whatever the release.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the topics are regenerated for every Python release
    topics = pydoc_data.topics.topics
    corpus_bytes = sum(len(page.encode()) for page in topics.values())
    print(f"Python {sys.version.split()[0]}: {len(topics)} topics, {corpus_bytes:,} bytes of text")
    print(topics["for"][:500])
    """),
    code(r"""
    print("more than 50 topics and 300 KB:", len(topics) > 50 and corpus_bytes > 300_000)
    """),
    md(r"""
    **A validation split.** To know whether the model learns the *language* rather than the pages
    themselves, some pages must never be seen in training. We hold out whole topics, not random
    lines: a line's neighbours would tell the model most of it. A topic is held out when a hash of
    its name falls in one bucket of ten, so the split is the same on every run and a topic stays on
    its side when a new Python release adds others.
    """),
    code(r"""
    def held_out(name: str) -> bool:
        return zlib.crc32(name.encode()) % 10 == 1  # bucket 1 of 10: a fixed, arbitrary choice


    train_names = sorted(n for n in topics if not held_out(n))
    val_names = sorted(n for n in topics if held_out(n))
    assert not set(train_names) & set(val_names) and len(train_names) + len(val_names) == len(topics)
    val_share = sum(len(topics[n].encode()) for n in val_names) / corpus_bytes
    print("between 3% and 20% of the text held out:", 0.03 < val_share < 0.20)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the topics are regenerated for every Python release
    print(f"training: {len(train_names)} topics; validation: {len(val_names)} topics, {val_share:.1%} of the bytes")
    print("held out:", ", ".join(val_names))
    """),
    md(r"""
    **Decontamination.** The pages overlap. `help("else")` prints the very page of `help("if")`,
    and most paragraphs of the `class` page are also in `compound`, the page on all compound
    statements. A held-out page whose paragraphs the model has read in training measures its
    memory, not its grasp of the language. The Gemma report filters its evaluation sets out of its
    pretraining data (section "Pretraining", "Filtering"); we do the same, by removing from the
    training pages every paragraph that also appears in a held-out page.
    """),
    code(r"""
    def paragraphs(page: str) -> list[str]:
        return [p.strip() for p in page.split("\n\n") if p.strip()]


    print('"else" is the "if" page:', topics["else"] == topics["if"])
    in_compound = [p in topics["compound"] for p in paragraphs(topics["class"])]
    print('most paragraphs of "class" are in "compound":', sum(in_compound) > len(in_compound) / 2)
    held_paragraphs = {p for n in val_names for p in paragraphs(topics[n])}


    def decontaminated(page: str) -> str:
        return "\n\n".join(p for p in page.split("\n\n") if p.strip() not in held_paragraphs)


    def leaked_share(training_text: str) -> float:
        # The share of the held-out paragraphs' text that appears verbatim in the training text.
        return sum(len(p) for p in held_paragraphs if p in training_text) / sum(map(len, held_paragraphs))


    pages = {n: decontaminated(topics[n]) if n in train_names else topics[n] for n in topics}
    before = leaked_share("\n\n".join(topics[n] for n in train_names))
    after = leaked_share("\n\n".join(pages[n] for n in train_names))
    print("before: more than a tenth of the held-out text is in the training pages:", before > 0.1)
    print("after: less than 1%:", after < 0.01)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the topics are regenerated for every Python release
    cut = {n: len(topics[n]) - len(pages[n]) for n in train_names if pages[n] != topics[n]}
    print(f"held-out text found in training pages: {before:.1%} before, {after:.1%} after")
    print(f"removed {sum(cut.values()):,} characters from {len(cut)} training pages:", ", ".join(sorted(cut)))
    """),
    md(r"""
    ## 2. A vocabulary of our own

    Notebook 01 built `train_bpe`, a SentencePiece-style BPE trainer with Gemma's settings (digits
    split, whitespace kept, byte fallback). Gemma's vocabulary has 256k pieces (the report, section
    "Pretraining"); ours gets 1,024, laid out as Gemma's are (notebook 01): 4 special pieces
    (`<pad>`, `<eos>`, `<bos>`, `<unk>`), the 2 chat markers, 256 byte pieces for anything
    unforeseen, one piece for every character of the text, and the rest spent on merges. It is
    trained on the training pages only: even the vocabulary must not peek at the validation text.
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the pieces follow the corpus of this Python release; the time varies
    train_text = "\n\n".join(pages[n] for n in train_names)
    t0 = time.perf_counter()
    spm = train_bpe(train_text, vocab_size=1024)
    tok = BPETokenizer(spm)
    print(f"{tok.vocab_size} pieces learned in {time.perf_counter() - t0:.1f} s")

    ordinary = [p for p, kind in zip(spm.pieces, spm.types) if kind == NORMAL]
    merges = [p for p in ordinary if len(p) > 1]
    print(f"6 special and chat pieces, 256 bytes, {len(ordinary) - len(merges)} characters, {len(merges)} merges")
    print("first merges:", merges[:12])
    print("longest pieces:", sorted(merges, key=len)[-6:])
    """),
    md(r"""
    Now every topic becomes a list of ids. Each document starts with `<bos>`, as every sequence
    Gemma was trained on does (pitfall 5), and the documents are packed end to end into one long
    stream: training will cut windows out of it, wherever they fall.
    """),
    code(r"""
    def encode_documents(names: list[str]) -> torch.Tensor:
        return torch.tensor([i for n in names for i in tok.encode(pages[n], add_bos=True)])


    train_ids, val_ids = encode_documents(train_names), encode_documents(val_names)
    assert all(tok.decode(tok.encode(topics[n])) == topics[n] for n in topics)  # lossless, every page
    train_bytes_per_token = len(train_text.encode()) / len(train_ids)
    val_bytes_per_token = sum(len(pages[n].encode()) for n in val_names) / len(val_ids)
    print("every page decodes back to itself: True")
    print("between 2 and 4 bytes per token, on both streams:", all(2 < b < 4 for b in (train_bytes_per_token, val_bytes_per_token)))
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: token counts follow the corpus of this Python release
    print(f"training stream: {len(train_ids):,} tokens, {train_bytes_per_token:.2f} bytes per token")
    print(f"validation stream: {len(val_ids):,} tokens, {val_bytes_per_token:.2f} bytes per token")
    sample = 'for x in range(10):\n    print(x)'
    print([tok.id_to_piece(i) for i in tok.encode(sample)])
    """),
    md(r"""
    With 1,024 pieces a token is a few bytes: common words are single pieces, rarer ones are cut
    into fragments. Gemma's 256k vocabulary holds far more whole words, so each token carries more
    text; ours costs far fewer embedding parameters, at the price of longer sequences.

    ## 3. The model: the same `Gemma` class, much smaller

    The preset `tiny-pretrain` is the Gemma 3 270M's layout at a size a CPU can train:
    QK-norm, sandwich norms, one key/value head shared by all query heads, and local
    sliding-window layers with their own RoPE base next to a global one (notebook 07). Three local
    layers for one global one here, five for one in the real model.
    """),
    code(r"""
    config = minigemma.get_config("tiny-pretrain")
    real = minigemma.get_config("gemma3-270m")
    print(f"{'':24s} {'tiny-pretrain':>14s} {'gemma3-270m':>14s}")
    for field in ["vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                  "head_dim", "sliding_window", "sliding_window_pattern", "qk_norm", "post_norms"]:
        print(f"{field:24s} {getattr(config, field)!s:>14s} {getattr(real, field)!s:>14s}")
    print("layers:", ["local" if config.is_local_layer(i) else "global" for i in range(config.num_layers)])
    assert config.vocab_size == tok.vocab_size
    """),
    code(r"""
    torch.manual_seed(0)
    model = minigemma.Gemma(config)  # the class that runs the real 270M
    n_params = model.num_parameters()
    n_embed = model.embed.weight.numel()
    print(f"{n_params:,} parameters, {n_embed / n_params:.0%} of them in the (tied) embedding")
    print(f"{n_params * 4 / 1e6:.2f} MB in float32")
    """),
    md(r"""
    **The pitfall: PyTorch's default initialisation.** `Gemma(config)` builds modules meant to
    receive trained weights, so it leaves PyTorch's defaults in place: `nn.Embedding` draws every
    entry from $N(0, 1)$. Gemma then multiplies the embeddings by $\sqrt{128} \approx 11.3$, and
    the *same* matrix scores the output (tied embeddings): after the final norm, each logit is
    the dot product of a vector of RMS 1 with a row of $N(0, 1)$ entries, so the logits spread
    over about $\pm\sqrt{128}$. The untrained model is confidently wrong everywhere, and its loss
    is enormous.
    """),
    code(r"""
    SEQ = 64  # tokens per training window, and per validation window
    val_windows = val_ids[: len(val_ids) // SEQ * SEQ].view(-1, SEQ)  # (windows, 64)


    @torch.no_grad()
    def val_loss(model, windows: torch.Tensor, batch: int = 64) -> float:
        # Mean cross-entropy (nats) of every token after the first of each window.
        return sum(float(lm_loss(model, w, w)) * len(w) for w in windows.split(batch)) / len(windows)


    ln_v = math.log(config.vocab_size)
    default_init = val_loss(model, val_windows)
    print(f"ln V = ln {config.vocab_size} = {ln_v:.3f}")
    print("loss with PyTorch's default initialisation above 10 x ln V:", default_init > 10 * ln_v)
    """),
    md(r"""
    A model that knows nothing should give every token the same probability $1/V$, and its loss,
    $-\ln(1/V) = \ln V$, is where training should start. So we draw every matrix from
    $N(0, 0.02^2)$ (GPT-2's choice) and leave the norms' gains at zero, which in Gemma's
    $(1 + w)$ convention is the identity (pitfall 2). The logits then spread by only about
    $0.02\sqrt{128} \approx 0.23$, and the softmax is nearly uniform.
    """),
    code(r"""
    def init_weights(model, std: float = 0.02) -> None:
        for p in model.parameters():
            if p.ndim >= 2:  # embedding and projections; the 1-D norm gains stay 0 (the identity)
                torch.nn.init.normal_(p, std=std)


    init_weights(model)
    untrained = copy.deepcopy(model)  # kept for comparison at the end
    initial = val_loss(model, val_windows)
    print("initial loss within 10% of ln V:", abs(initial - ln_v) < 0.1 * ln_v)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: torch's normal draws (the random weights) differ between CPU code paths
    print(f"default initialisation: {default_init:.1f}   N(0, 0.02^2): {initial:.3f}   ln V: {ln_v:.3f}")
    print(repr(minigemma.generate(model, tok, "The ", max_new_tokens=30, temperature=1.0, seed=0)))
    """),
    md(r"""
    Gibberish, as it should be: each token drawn almost uniformly from the 1,024 pieces.
    (`minigemma.generate` works with any tokenizer of the `Tokenizer` protocol, ours included; it
    adds `<bos>` itself.)

    ## 4. A baseline that only counts

    Before spending any compute, ask what simple counting achieves. A **bigram** model predicts a
    token from the one before it alone, from how often each pair occurs in the training stream:

    $$P(b \mid a) = \frac{\mathrm{count}(a, b) + k}{\mathrm{count}(a) + kV}$$

    The $+k$ ("add-k smoothing"; $k = 1$ is Laplace's add-one) keeps pairs never seen in training
    from getting probability zero, which would be an infinite loss. It is scored on exactly the
    tokens the model will be scored on: every token after the first of each validation window.
    We even let the bigram pick its $k$ on the validation set, an advantage the model never gets.
    """),
    code(r"""
    V = config.vocab_size
    counts = torch.zeros(V, V, dtype=torch.float64)  # counts[a, b]: how often b follows a
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1, dtype=torch.float64),
                      accumulate=True)
    prev, nxt = val_windows[:, :-1].reshape(-1), val_windows[:, 1:].reshape(-1)  # the scored pairs


    def bigram_loss(k: float) -> float:
        probs = (counts + k) / (counts.sum(1, keepdim=True) + k * V)  # each row sums to 1
        return float(-probs[prev, nxt].log().mean())


    unigram = (torch.bincount(train_ids, minlength=V).double() + 1) / (len(train_ids) + V)  # add-one
    unigram_loss = float(-unigram[nxt].log().mean())
    bigram_by_k = {k: bigram_loss(k) for k in (1.0, 0.3, 0.1, 0.03, 0.01)}
    best_k = min(bigram_by_k, key=bigram_by_k.get)
    bigram = bigram_by_k[best_k]
    print("bigram below unigram below ln V:", bigram < unigram_loss < ln_v)
    print("add-one smoothing is not the best k:", best_k < 1.0)
    print(f"most tokens occur fewer than V = {V:,} times in training:", float((counts.sum(1) < V).double().mean()) > 0.5)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the counts follow the corpus of this Python release
    print(f"uniform {ln_v:.3f}   unigram {unigram_loss:.3f}")
    print("bigram:", "   ".join(f"k={k}: {loss:.3f}" for k, loss in bigram_by_k.items()))
    """),
    md(r"""
    With 1,024 possible next tokens, $k = 1$ adds 1,024 imaginary counts to every row, more than
    most rows have real ones (the last check above), and drowns what the text says. A smaller $k$
    trusts the counts more.

    ## 5. Training

    `minigemma.train.train` runs the standard recipe for transformers (`minigemma/train/loop.py`):
    AdamW, a learning rate that rises linearly over the first steps (warmup) and then follows a
    half cosine down to zero, weight decay (AdamW's pull of every matrix towards zero, here 0.1),
    and the gradient's norm clipped to 1 so that one odd batch cannot throw the weights far.
    `text_batches` cuts random windows of 64 tokens out of the training stream, 16 at a time, and
    every token of a window is scored against the one after it, as in Gemma's pretraining. The
    learning rate is high for a transformer: small models tolerate it, and Gemma 3's QK-norm keeps
    the attention logits from blowing up.
    """),
    code(r"""
    STEPS, BATCH, LR = 400, 16, 2e-2
    t0 = time.perf_counter()
    history = train(model, text_batches(train_ids, BATCH, SEQ, seed=0), steps=STEPS, lr=LR, warmup=STEPS // 10,
                    weight_decay=0.1, progress=False)  # progress=True draws a progress bar
    train_seconds = time.perf_counter() - t0
    tokens_seen = STEPS * BATCH * SEQ
    print(f"{tokens_seen:,} tokens seen, {tokens_seen / len(train_ids):.1f} times the training stream")
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the time depends on the machine
    print(f"{STEPS} steps in {train_seconds:.0f} s, {tokens_seen / train_seconds:,.0f} tokens/s")
    """),
    code(r"""
    tiny = val_loss(model, val_windows)
    with plt.rc_context({"figure.dpi": 80, "font.size": 12}):  # large enough for a projector
        fig = history.plot()  # loss, learning rate and gradient norm of every step
        ax = fig.axes[0]
        ax.axhline(ln_v, color="gray", ls=":", label="uniform (ln V)")
        ax.axhline(bigram, color="tab:red", ls="--", label="bigram, validation")
        ax.plot([STEPS - 1], [tiny], "k*", ms=14, label="tiny Gemma, validation")
        ax.set_title("training loss (per batch)")
        ax.legend(fontsize=10, loc="center right")
        fig.tight_layout()
        plt.show()
    """),
    md(r"""
    The training loss falls fast while the model learns which tokens are common, then more slowly;
    the learning-rate panel shows the warmup and the cosine. The star is what matters: the loss on
    the held-out pages, computed after training.
    """),
    code(r"""
    print("tiny Gemma beats the bigram on validation by more than 0.1 nats:", bigram - tiny > 0.1)
    print("tiny Gemma beats the uniform guess by more than 2 nats:", ln_v - tiny > 2)
    train_windows = train_ids[: len(val_windows) * SEQ].view(-1, SEQ)  # as many training windows
    seen = val_loss(model, train_windows)
    print("loss on training pages below the loss on held-out pages:", seen < tiny)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: losses after training differ in their last digits between CPU code paths
    rows = [("uniform, ln V", ln_v), ("unigram", unigram_loss), (f"bigram, k = {best_k}", bigram),
            ("tiny Gemma", tiny), ("(tiny Gemma on training pages)", seen)]
    print(f"{'loss on held-out pages':31s} {'nats':>6s} {'perplexity':>11s}")
    for name, loss in rows:
        print(f"{name:31s} {loss:6.3f} {math.exp(loss):11.1f}")
    """),
    md(r"""
    **Perplexity** is $e^{\text{loss}}$: the number of equally likely tokens the model is, on
    average, as unsure as. The uniform guess has perplexity $V$; each step down the table is a
    model that narrows the choice further. The tiny Gemma beats the bigram because it looks
    further back than one token: its global layer sees the whole window. Its loss on the training
    pages is lower still: it has seen each training token several times and begun to memorise, and
    the held-out pages also discuss other things.

    ## 6. What it writes now

    Greedy and sampled continuations of a few prompts. (The text depends on the last bits of the
    trained weights, so its cell is not compared; the check after it is.)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: trained weights differ in their last bits between CPU code paths; text follows them
    for prompt in ['The "while" statement', "A list is", "x = "]:
        greedy = minigemma.generate(model, tok, prompt, max_new_tokens=40)
        sampled = minigemma.generate(model, tok, prompt, max_new_tokens=40, temperature=0.8, top_p=0.95, seed=0)
        print(f"{prompt!r}\n  greedy : {greedy!r}\n  sampled: {sampled!r}")
    """),
    md(r"""
    Not Python documentation yet, but its words, punctuation and layout; greedy decoding tends to
    fall into loops (notebook 10), sampling wanders more. Prompt and continuation stay within 64
    tokens, the longest window the model was trained on: positions beyond it are new to it.

    A check that does not depend on the exact words: of the words (runs of letters) in twenty
    sampled texts, what share occurs in the training text? Tokens drawn at random glue pieces into
    words that do not exist.
    """),
    code(r"""
    known_words = set(re.findall(r"[A-Za-z]+", train_text))


    def word_share(m, samples: int = 20) -> float:
        text = " ".join(minigemma.generate(m, tok, [tok.bos_id], max_new_tokens=SEQ - 1, temperature=1.0, seed=s)
                        for s in range(samples))
        words = re.findall(r"[A-Za-z]+", text)
        return sum(w in known_words for w in words) / max(1, len(words))


    share_trained, share_untrained = word_share(model), word_share(untrained)
    print("share of words found in the training text, trained above untrained by more than 20 points:",
          share_trained > share_untrained + 0.2)
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: sampled text differs between CPU code paths
    print(f"words found in the training text: trained {share_trained:.0%}, untrained {share_untrained:.0%}")
    """),
    md(r"""
    ## 7. The same recipe at Gemma's scale

    The Gemma report, section "Pretraining", says: Gemma 2B and 7B were trained on 3T and 6T
    tokens respectively (early versions of the report said 2T for the 2B) of primarily English web
    documents, mathematics and code, with a 256k-piece subset of Gemini's SentencePiece vocabulary
    that splits digits, preserves whitespace and falls back to bytes; the data were filtered, and
    the mixture was changed during training to upweight relevant, high-quality data towards the
    end. The models were trained with a context of 8,192 tokens (section "Model Architecture").
    Set against our run:
    """),
    code(r"""
    gemma = {"gemma-2b": 3e12, "gemma-7b": 6e12}  # training tokens, the report's "Pretraining" section
    runs = {"tiny-pretrain": (n_params, tokens_seen, SEQ, config.vocab_size)}
    for name, tokens in gemma.items():
        c = minigemma.get_config(name)
        runs[name] = (empty_model(c).num_parameters(), tokens, 8192, c.vocab_size)
    print(f"{'':14s} {'parameters':>14s} {'tokens':>10s} {'tokens/param':>13s} {'compute 6ND':>12s} {'context':>8s} {'vocab':>8s}")
    for name, (n, d, ctx, vocab) in runs.items():
        print(f"{name:14s} {n:14,} {d:10.2g} {d / n:13.3g} {6 * n * d:12.2g} {ctx:8,} {vocab:8,}")
    print(f"gemma-7b used {6 * runs['gemma-7b'][0] * 6e12 / (6 * n_params * tokens_seen):.1g} times our compute")
    """),
    md(r"""
    **What is the same.** The objective (next-token cross-entropy, `lm_loss`, from $\ln V$ down),
    the model code (the class above runs the real weights), the kind of tokenizer (SentencePiece
    BPE with split digits and byte fallback), documents that start with `<bos>`, and held-out
    text filtered out of the training data. Our loop is the common recipe for transformers; the
    Gemma report does not publish its optimizer or learning-rate schedule.

    **What scales.** Everything else, by many orders of magnitude. Compute is about
    $6ND$ floating-point operations for $N$ parameters and $D$ tokens (a forward and a backward
    pass per token). Gemma trained far beyond the 20 tokens per parameter that Hoffmann et al.
    found compute-optimal, the usual choice for a model meant to be run a lot: a smaller model
    trained longer costs less at every use. Our run is at the other extreme, short of data even
    after repeating it.

    **What does not carry over.** Our hyperparameters: large models train at far smaller learning
    rates and on far larger batches (GPT-3's rates went from $6 \cdot 10^{-4}$ for its smallest
    model down to $0.6 \cdot 10^{-4}$ for the 175B, its batches from 0.5M to 3.2M tokens; Brown et
    al., 2020, Table 2.1), where ours takes a thousand tokens a step. Our data regime: we cycle
    through a small corpus several times and start to memorise it, while a large run sees most of
    its tokens once. And the part the report spends its words on: collecting, filtering,
    decontaminating and staging trillions of tokens. The vocabulary's size is a trade as well:
    256k pieces cost the 2B more than half a billion embedding parameters (Table 2), worth it for
    many languages and long words, ruinous for a model of our size.

    ## Summary

    - A corpus held out by whole documents, and decontaminated: no held-out paragraph left in
      training. A BPE vocabulary learned on the training part only, documents packed behind `<bos>`
      into one stream, random windows of it: that is pretraining data.
    - The same `Gemma` class as the real models, initialised so that it starts at the uniform loss,
      trained by AdamW with warmup and cosine decay: its validation loss fell below a bigram's.
    - Judge a model on text it has not seen, against baselines that cost nothing.
    - The pitfall: a model built to receive weights keeps PyTorch's default initialisation; with
      Gemma's $\sqrt{\text{hidden}}$ embedding scale and tied output it starts far above $\ln V$.

    The one number to remember:
    """),
    code(r"""
    print(f"ln V: the loss of a model that knows nothing, {ln_v:.2f} nats for our {V:,} pieces "
          f"and {math.log(real.vocab_size):.2f} for Gemma 3's {real.vocab_size:,}")
    """),
    code(r"""
    # NBVAL_IGNORE_OUTPUT
    # not compared: the time depends on the machine
    print(f"this notebook ran in {time.perf_counter() - notebook_start:.0f} s")
    """),
    md(r"""
    ## Exercises

    Solutions: `notebooks/solutions/14_pretraining.py` (run by `tests/test_exercises_14.py`).

    1. **A trigram baseline.** Predict each token from the two before it, mixing in the bigram and
       unigram estimates for contexts that were rare or never seen (Jelinek-Mercer interpolation):
       $P(c \mid a, b) = \lambda_3 P_3(c \mid a, b) + \lambda_2 P_2(c \mid b) + \lambda_1 P_1(c)$, with
       $P_3$ and $P_2$ plain ratios of counts and $P_1$ add-one smoothed. A context never seen in
       training says nothing: drop its term and renormalise the other weights. Write
       `trigram_loss(train_ids, windows, vocab_size, weights=(0.6, 0.3, 0.1))` scoring the same
       tokens as the bigram (the first scored token of a window has one token of context only).
       Does it beat the bigram? The tiny Gemma? If the answer surprises you, think about what
       grows when the context gets longer: the count table, or the network?
    2. **A constant learning rate.** Write `compare_schedules(config, train_ids, windows, steps, lr)`
       that trains a fresh, initialised model with `schedule="cosine"` and another with
       `schedule="constant"` (same seed, same batches, same warmup) and returns, for each, the
       validation loss and the `History`. Which ends lower, and why might the last steps at a small
       learning rate help?
    3. **Loss against model size.** Write `size_sweep(config, hidden_sizes, train_ids, windows,
       steps, lr, equal_compute=False)` returning `(parameters, steps, validation loss)` for
       `config` at each hidden size (with `intermediate_size` twice the hidden size), all trained
       for `steps` steps. Does the largest win? With `equal_compute=True` give each model the same
       compute instead: `steps` for the largest, proportionally more for the smaller ones. Which
       wins now?
    """),
    code(r"""
    def trigram_loss(train_ids, windows, vocab_size, weights=(0.6, 0.3, 0.1)):
        ...  # your code


    def compare_schedules(config, train_ids, windows, steps, lr):
        ...  # your code


    def size_sweep(config, hidden_sizes, train_ids, windows, steps, lr, equal_compute=False):
        ...  # your code

    # When your functions return something, compare them with the bigram, e.g.:
    # print(trigram_loss(train_ids, val_windows, V), bigram)
    """),
    md(r"""
    **Next:** `15_instruction_tuning`. The real 270M is a pretrained model too, at a vastly larger
    scale; notebook 15 fine-tunes it to answer in Gemma's chat format, with the same `train`.
    """),
]


def build() -> Path:
    return write_notebook(CELLS, "14_pretraining.ipynb", id_prefix="14")  # stable ids: rebuilds diff cleanly


if __name__ == "__main__":
    print(build())

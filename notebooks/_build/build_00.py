"""Writes notebooks/00_quickstart.ipynb (then execute it with nbconvert)."""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 00 · Quickstart: real Gemma text on your CPU

**What you will learn**
- how to load a real Gemma model (Google's Gemma 3 270M, shipped inside a PyPI package, so nothing is downloaded from a model hub);
- how text becomes token ids, ids become logits, and logits become the next token;
- what the model's next-token distribution looks like.

Gemma is a family of lightweight open models "built from the research and technology used to create Gemini" (Gemma technical report, abstract). The report describes 2B and 7B models; the model we run here is the smallest member of the third generation. Later notebooks take it apart piece by piece; this one just drives it."""),
    code("""import torch
import matplotlib.pyplot as plt

import minigemma

torch.manual_seed(0)
model, tok = minigemma.load("gemma3-270m", progress=False)
print(model.config.name, f"{model.num_parameters():,} parameters")"""),
    md("""The first `load` converts the GGUF file into a cache (it takes a minute); afterwards it takes a second or two. Most of those 268 million parameters sit in one matrix: the 262,144 x 640 token embedding, which Gemma also reuses as its output layer."""),
    code("""embedding_share = model.embed.weight.numel() / model.num_parameters()
print(f"embedding matrix: {tuple(model.embed.weight.shape)}, {embedding_share:.0%} of all parameters")
assert model.num_parameters() == 268_098_176"""),
    md("""## Text to token ids

A tokenizer cuts text into pieces from a fixed vocabulary and numbers them. Gemma always starts a sequence with the special `<bos>` token (id 2): the model never saw text without it."""),
    code("""prompt = "The capital of France is"
ids = tok.encode(prompt, add_bos=True)
print(ids)
print([tok.id_to_piece(i) for i in ids])
assert ids[0] == tok.bos_id == 2 and tok.decode(ids[1:]) == prompt"""),
    md("""## Ids to logits

The model reads all ids at once and returns, for every position, one score (a *logit*) per vocabulary entry: its guess of what comes next. Only the last position's guess matters for continuing the text."""),
    code("""with torch.no_grad():
    logits = model(torch.tensor([ids]))
print(tuple(logits.shape), "= (batch, positions, vocabulary)")
assert logits.shape == (1, len(ids), tok.vocab_size)"""),
    md("""Softmax turns the last position's logits into probabilities. Here are the ten most likely next tokens:"""),
    code("""probs = logits[0, -1].softmax(-1)
top = probs.topk(10)
labels = [repr(tok.decode([i])) for i in top.indices.tolist()]
for label, p in zip(labels, top.values.tolist()):
    print(f"{label:>14}  {p:.3f}")
assert abs(probs.sum().item() - 1) < 1e-4"""),
    code("""fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
ax.barh(labels[::-1], top.values.flip(0).numpy(), color="tab:blue")
ax.set_xlabel("probability")
ax.set_title(f"next token after {prompt!r}")
fig.tight_layout()
plt.show()"""),
    md("""## Generating text

Generation repeats that step: pick a token (greedy decoding takes the most likely one), append it, and ask again. `minigemma.generate` does this with a KV cache, so each new token costs one small forward pass instead of re-reading the whole prompt."""),
    code("""text = minigemma.generate(model, tok, prompt, max_new_tokens=24)
print(prompt + text)
first = tok.decode([top.indices[0].item()])
assert text.startswith(first)  # greedy: the first new token is the top bar above"""),
    md("""Sampling instead of greedy decoding: `temperature` flattens or sharpens the distribution, `top_k` and `top_p` cut off unlikely tokens, and a `seed` makes a draw reproducible."""),
    code("""for seed in (1, 2):
    print(seed, repr(minigemma.generate(model, tok, "My favourite animal is", max_new_tokens=16,
                                        temperature=0.8, top_p=0.95, seed=seed)))"""),
    md("""## Exercises

1. Write `top_tokens(model, tok, prompt, k)` returning the `k` most likely next tokens (as text) with their probabilities.
2. Write `greedy_by_hand(model, tok, prompt, n)`: greedy decoding *without* a cache, by calling `model` on the growing sequence; check it equals `minigemma.generate`.

Solutions: `notebooks/solutions/00_quickstart.py` (the tests run them)."""),
    code("""import importlib

solutions = importlib.import_module("solutions.00_quickstart")  # the file name starts with a digit
top_tokens, greedy_by_hand = solutions.top_tokens, solutions.greedy_by_hand
print(top_tokens(model, tok, prompt, 3))
assert greedy_by_hand(model, tok, prompt, 8) == minigemma.generate(model, tok, prompt, max_new_tokens=8)"""),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
Path(__file__).resolve().parents[1].joinpath("00_quickstart.ipynb").write_text(nbf.writes(nb))

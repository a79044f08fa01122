"""Writes notebooks/01_tokenizer.ipynb (scratch builder; the notebook is the artifact)."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = []


def md(text: str) -> None:
    cells.append(new_markdown_cell(text.strip("\n")))


def code(text: str) -> None:
    cells.append(new_code_cell(text.strip("\n")))


md(r"""
# 01 · The tokenizer: from bytes to pieces to ids

**What you will learn**
- why Gemma cuts text with a SentencePiece BPE vocabulary of 262,144 pieces, and what is in it;
- the four steps of encoding, run one at a time with minigemma's pure-Python tokenizer
  (`minigemma.tokenizer.bpe`): text as bytes, normalization (a space becomes `▁`), user-defined pieces cut
  out first, then BPE merges in score order;
- how digits and whitespace are split, and what *byte fallback* does with an emoji the vocabulary
  lacks;
- Gemma's chat control tokens, and why `<bos>` typed in a prompt is *not* `<bos>`;
- how a BPE vocabulary is learned (`minigemma.tokenizer.bpe_train`), and how that differs from
  SentencePiece's own trainer.

After every step a check (`assert`) compares our Python with Google's C++ `sentencepiece`
library: the two must give the same ids, always. Runs in well under a minute on a laptop CPU.
""")

code(r"""
import collections
import random
import unicodedata
from pathlib import Path

import matplotlib.pyplot as plt
import sentencepiece

import minigemma
from minigemma.tokenizer.bpe import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, BPETokenizer
from minigemma.tokenizer.bpe_train import train_bpe
from minigemma.loading import converted_gguf_dir, embedded_gguf_path
from minigemma.tokenizer import load_tokenizer

# The embedded Gemma 3 270M is a GGUF file: its vocabulary is stored as metadata. minigemma
# rebuilds a SentencePiece `tokenizer.model` from it once and caches it (the first run reads
# the GGUF, some seconds); later runs start here at once.
model_file = converted_gguf_dir(embedded_gguf_path(), progress=False) / "tokenizer.model"
sp = load_tokenizer(model_file, backend="sentencepiece")  # Google's C++ library
py = load_tokenizer(model_file, backend="python")         # minigemma.tokenizer.bpe: the same algorithm in Python
print(sp, py)
assert sp.vocab_size == py.vocab_size == 262_144
""")

md(r"""
## 0. Why a vocabulary of 262,144 pieces?

A model reads integers, one per *token*. Cutting at every character gives a tiny vocabulary
but very long sequences; one token per word needs an endless vocabulary and still fails on a
new word. Sub-word pieces sit between: frequent words are one piece, rare ones a few.

The Gemma report (pre-training section) describes Gemma 1's tokenizer as a subset of Gemini's
SentencePiece tokenizer with 256k entries: digits split, extra whitespace kept, and unknown
characters written as bytes. Gemma 3 switched to the Gemini 2.0 tokenizer, 262k entries, which
its report calls more balanced for languages other than English. A big vocabulary costs memory
(the embedding matrix has one row per entry: 168M of the 270M model's parameters) but lets many
languages use pieces of a sensible size instead of single characters or bytes.

Each piece has an id (its position), a score and a *type*. Let us look at the layout:
""")

code(r"""
kinds = {NORMAL: "normal", CONTROL: "control", USER_DEFINED: "user-defined", BYTE: "byte", UNKNOWN: "unknown"}
types = py.model.types  # the SentencePiece model as minigemma.tokenizer.bpe read it: pieces, scores, types
print(collections.Counter(kinds[t] for t in types).most_common())
for i in [0, 1, 2, 3, 105, 106, 107, 108, 138, 238, 493, 494, 495, 262_143]:
    score = py.model.scores[i] + 0.0  # + 0.0 prints the file's -0.0 as 0
    print(f"{i:>7}  {kinds[types[i]]:<12} {py.id_to_piece(i)!r:<20} score {score:g}")
assert (sp.pad_id, sp.eos_id, sp.bos_id, sp.unk_id) == (0, 1, 2, 3)
assert types.count(BYTE) == 256 and types.count(UNKNOWN) == 1
""")

md(r"""
- **control** pieces (`<pad>`, `<eos>`, `<bos>`, `<mask>`, thousands of `<unusedN>`) are never
  produced from text: the program inserts them.
- **user-defined** pieces are matched in text as they are, before anything else: the chat
  markers, runs of newlines, spaces and tabs, a few HTML tags.
- **byte** pieces `<0x00>`..`<0xFF>`: the safety net for characters the vocabulary lacks.
- **normal** pieces are what BPE learned, best first: the score is minus the rank.

And the ordinary pieces cover many scripts, which is the point of the size:
""")

code(r"""
def script(piece):
    # The Unicode script of the piece's first letter, from the character's name ("LATIN SMALL ...").
    for c in piece:
        if c.isalpha():
            return unicodedata.name(c, "?").split()[0]
    return "(no letter)"

normal = [p for p, t in zip(py.model.pieces, types) if t == NORMAL]
scripts = collections.Counter(script(p) for p in normal)
lengths = collections.Counter(len(p) for p in normal)
print(scripts.most_common(8))
print("longest normal piece:", max(lengths), "characters")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6, 3), dpi=80)
top = scripts.most_common(12)[::-1]
ax1.barh([name.title() for name, _ in top], [n for _, n in top])
ax1.set_xscale("log")
ax1.set_title("normal pieces by script", fontsize=9)
ax1.tick_params(labelsize=7)
ax2.bar(sorted(lengths), [lengths[n] for n in sorted(lengths)])
ax2.set_title("piece length (characters)", fontsize=9)
ax2.tick_params(labelsize=7)
fig.tight_layout()
plt.show()
assert scripts["LATIN"] > 100_000 and scripts["DEVANAGARI"] > 10_000 and max(lengths) == 16
""")

md(r"""
## 1. Text is bytes

SentencePiece works on the UTF-8 bytes of the text. One character can take one byte (ASCII) to
four (most emoji), which matters later for byte fallback.
""")

code(r"""
text = "Gemma reads 🦙 and café"
data = text.encode("utf-8")
print(len(text), "characters,", len(data), "bytes")
print("🦙 ->", list("🦙".encode("utf-8")), " é ->", list("é".encode("utf-8")))
assert (len(text), len(data)) == (22, 26)
""")

md(r"""
## 2. Normalization: a space becomes `▁`

SentencePiece treats the input as one stream of characters and writes the space as a visible
character, `▁` (U+2581), so that pieces can carry it: `▁world` is "world after a space". That
is what makes decoding lossless: glue the pieces, turn `▁` back into spaces (Kudo and
Richardson, 2018, section 3.1). Gemma's normalizer does nothing else: no Unicode folding, no
trimming, no "dummy" space in front of the text.
""")

code(r"""
normalized = py.normalize("Hello  world\tand more")
print(normalized)
assert normalized == "Hello▁▁world\tand▁more"
""")

md(r"""
## 3. User-defined pieces are cut out first

The chat markers and the whitespace runs are *user-defined* pieces. The tokenizer finds them
first, longest match first, and never merges them with their neighbours; everything between
them goes to BPE.
""")

code(r"""
chat = "<start_of_turn>user\nWhy  is the sky blue?<end_of_turn>\n"
segments = list(py.segments(py.normalize(chat)))
for segment, is_user_defined in segments:
    print(f"{'user-defined' if is_user_defined else 'to BPE':>12}  {segment!r}")
assert [s for s, user in segments if user] == ["<start_of_turn>", "\n", "▁▁", "<end_of_turn>", "\n"]
""")

md(r"""
## 4. BPE: merge the best pair, again and again

Start with one symbol per character. Among all adjacent pairs whose concatenation is a
vocabulary piece, merge the one with the highest score (the leftmost if two tie); repeat
until no pair forms a piece. There is no list of merge rules: the scores are the rules.

`merge` keeps the candidate pairs in a heap and the symbols in a linked list, so each merge
costs $O(\log n)$ instead of a rescan of the word. Watch it build ` tokenization`:
""")

code(r"""
trace = []
pieces = py.merge(list("▁tokenization"), trace=trace)
for left, right, score in trace:
    print(f"score {score + 0.0:>8.0f}:  {left!r} + {right!r}")
print(pieces)
assert pieces == ["▁token", "ization"] == [sp.id_to_piece(i) for i in sp.encode(" tokenization")]
""")

md(r"""
The merges do not follow the word from left to right: `on`, `en`, `at`, then `ion` come first
because they are the most frequent pairs in Gemini's training data. The last step turns pieces
into ids, and decoding goes back:
""")

code(r"""
ids = py.encode(" tokenization")
print(ids, "->", repr(py.decode(ids)))
assert ids == sp.encode(" tokenization") and py.decode(ids) == " tokenization"
""")

md(r"""
## 5. Digits are always split

Every number becomes single digits (as PaLM's tokenizer did before): the model sees the same
ten symbols in every number instead of arbitrary chunks like `202` or `4096`, which keeps
arithmetic regular. No piece of the vocabulary holds an ASCII digit next to anything else.
""")

code(r"""
ids = sp.encode("In 2024, 1234567 people")
print([sp.id_to_piece(i) for i in ids])
with_digit = [p for p in normal if len(p) > 1 and any(c in "0123456789" for c in p)]
print(len(with_digit), "normal pieces longer than one character contain an ASCII digit")
assert with_digit == [] and py.encode("In 2024, 1234567 people") == ids
""")

md(r"""
## 6. Whitespace is kept, runs included

Indentation matters in code, so nothing is dropped: runs of 2 to 31 spaces, of tabs and of
newlines are user-defined pieces of their own.
""")

code(r"""
source = "def f():\n    return 1\n\n\n\tpass  # done"
ids = sp.encode(source)
print([sp.id_to_piece(i) for i in ids])
space_runs = [p for p, t in zip(py.model.pieces, types) if t == USER_DEFINED and set(p) == {"▁"}]
print("space runs:", min(map(len, space_runs)), "to", max(map(len, space_runs)), "spaces")
assert sp.decode(ids) == source and py.encode(source) == ids
""")

md(r"""
## 7. Byte fallback: 🦙

The llama emoji is not in the vocabulary. Instead of an `<unk>` that would lose it, the
tokenizer writes its four UTF-8 bytes as the pieces `<0xF0>` `<0x9F>` `<0xA6>` `<0x99>`;
decoding joins the bytes again. Cut the emoji short and the bytes are invalid UTF-8:
SentencePiece prints one U+FFFD (�) per bad byte (Python's `errors="replace"` would print one
for the whole truncated sequence; our decoder follows the library).
""")

code(r"""
ids = sp.encode("🦙")
print(ids, [sp.id_to_piece(i) for i in ids])
assert [sp.id_to_piece(i) for i in ids] == [f"<0x{b:02X}>" for b in "🦙".encode("utf-8")]
assert sp.decode(ids) == py.decode(ids) == "🦙"
print(repr(sp.decode(ids[:2])), repr(py.decode(ids[:2])))
assert sp.decode(ids[:2]) == py.decode(ids[:2]) == "\ufffd\ufffd"
""")

md(r"""
## 8. Chat control tokens

Gemma's instruction-tuned models read turns framed by `<start_of_turn>` and `<end_of_turn>`
(ids 105 and 106 in Gemma 3, 106 and 107 in Gemma 1), after a `<bos>`. The markers are
user-defined, so they are found in text; `<bos>` is control: `decode` prints nothing for it,
and the characters `<bos>` typed in a prompt are just characters.
""")

code(r"""
prompt = "<start_of_turn>user\nWhat is a token?<end_of_turn>\n<start_of_turn>model\n"
ids = sp.encode(prompt, add_bos=True)
print(ids)
print([sp.id_to_piece(i) for i in ids])
assert ids[:2] == [sp.bos_id, sp.start_of_turn_id] == [2, 105] and sp.end_of_turn_id == 106
assert sp.decode(ids) == prompt and py.encode(prompt, add_bos=True) == ids
typed = sp.encode("<bos>")
print("'<bos>' typed in text:", [sp.id_to_piece(i) for i in typed])
assert sp.bos_id not in typed
""")

md(r"""
## 9. Learning a vocabulary

Where do the pieces come from? BPE training (Sennrich et al., 2016) counts every adjacent pair
in a text, merges the most frequent into a new piece, and repeats. `minigemma.tokenizer.bpe_train` does
this with Gemma's settings on a few kilobytes of prose in `assets/`: the first merges are the
most frequent pairs of English.
""")

code(r"""
root = Path(minigemma.__file__).resolve().parents[1]
corpus = (root / "assets" / "tokenizer_training_text.txt").read_text(encoding="utf-8")
small = train_bpe(corpus, 600, user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n", "  ", "   "])
learned = [p for p, t in zip(small.pieces, small.types) if t == NORMAL]
print(len(small.pieces), "pieces; first merges:", learned[:12])
tiny = BPETokenizer(small)
print([tiny.id_to_piece(i) for i in tiny.encode("Tokenizers split text into pieces, 42 times.")])
# The same vocabulary written as a .model file runs in the C++ library too, with the same ids:
library = sentencepiece.SentencePieceProcessor(model_proto=small.to_bytes())
assert library.encode(corpus) == tiny.encode(corpus)
""")

md(r"""
SentencePiece's own trainer learns a similar but not identical vocabulary from the same text:
it splits words where the Unicode script changes, drops the rarest characters, refreshes pair
counts lazily for speed and breaks ties differently (details in `minigemma/tokenizer/bpe_train.py`).
Most learned pieces still agree:
""")

code(r"""
# NBVAL_IGNORE_OUTPUT  (the exact counts depend on the sentencepiece version)
import io

buffer = io.BytesIO()
sentencepiece.SentencePieceTrainer.train(
    sentence_iterator=iter(corpus.splitlines()), model_writer=buffer, model_type="bpe", vocab_size=600,
    hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True, split_digits=True,
    add_dummy_prefix=False, normalization_rule_name="identity", remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n", "▁▁", "▁▁▁"],
    minloglevel=2, num_threads=1)
reference = sentencepiece.SentencePieceProcessor(model_proto=buffer.getvalue())
theirs = {reference.id_to_piece(i) for i in range(reference.get_piece_size())}
ours = {p for p in learned if len(p) > 1}
print(f"{len(ours & theirs)} of our {len(ours)} merged pieces are in sentencepiece's vocabulary")
assert len(ours & theirs) / len(ours) > 0.6
""")

md(r"""
## 10. The final check

Our Python and the library on a mixed corpus: the training text, many languages, code, and
random strings. Every id must match.
""")

code(r"""
rng = random.Random(0)
texts = corpus.splitlines() + [
    "日本語のテキストです。中文文本，还有标点。한국어 텍스트입니다.",
    "مرحبا بالعالم، هذا نص عربي. नमस्ते दुनिया, यह हिंदी पाठ है।",
    "Emoji: 🦙🤖👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️   and\ttabs\n\n\n" + " " * 40 + "deep",
] + ["".join(chr(rng.randint(32, 0x2FFF)) for _ in range(30)) for _ in range(300)]
mismatches = [t for t in texts if py.encode(t) != sp.encode(t)]
n_tokens = sum(len(sp.encode(t)) for t in texts)
print(f"{len(texts)} texts, {n_tokens} tokens, {len(mismatches)} mismatches")
assert not mismatches
assert all(py.decode(sp.encode(t)) == t for t in texts if "▁" not in t)
""")

md(r"""
(Text that itself contains `▁` cannot round-trip through any SentencePiece tokenizer: the
character is how spaces are written, so it decodes as a space. The ids still match.)

## Exercises

Solutions: `notebooks/solutions/01_tokenizer.py` (run by `tests/test_exercises_01.py`).

1. **Bytes per token.** Write `bytes_per_token(tok, text)`: UTF-8 bytes divided by the number
   of tokens. Compare English, Hindi, Chinese and a row of emoji. Which language does the
   vocabulary serve best, and what is the floor for text it does not know at all?
2. **A chat prompt from ids.** Write `chat_prompt_ids(tok, turns)` for a list of
   `(role, text)` turns, building the ids piece by piece from `tok.bos_id`,
   `tok.start_of_turn_id`, `tok.end_of_turn_id` and `tok.encode`, and ending with the
   `<start_of_turn>model\n` cue. Check it equals `tok.encode(formatted_string, add_bos=True)`.
   Why is concatenating the parts safe here? What should happen for a `"system"` role?
3. **Greedy longest match.** Write `longest_match_tokenize(tok, text)`: at each position take
   the longest piece of the vocabulary that matches (bytes for characters no piece starts
   with). It always decodes back to the text, yet it is not BPE: find words of
   `assets/tokenizer_training_text.txt` where the two disagree, and explain one.
""")

code(r"""
def bytes_per_token(tok, text):
    ...  # your code


def chat_prompt_ids(tok, turns):
    ...  # your code


def longest_match_tokenize(tok, text):
    ...  # your code

# When your functions return something, check them, e.g.:
# assert chat_prompt_ids(sp, [("user", "hi")]) == sp.encode("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", add_bos=True)
""")

nb = new_notebook(cells=cells)
nb.metadata = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
nbformat.write(nb, str(Path(__file__).resolve().parents[1] / "01_tokenizer.ipynb"))
print("wrote", len(cells), "cells")

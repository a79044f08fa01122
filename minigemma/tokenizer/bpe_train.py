"""Learn a small SentencePiece-style BPE vocabulary from text, with Gemma's settings.

Byte pair encoding (Sennrich et al., 2016, after Gage's 1994 compression scheme) learns a
vocabulary bottom-up: start from single characters, count every pair of neighbours in the
training text, glue the most frequent pair into a new piece, repeat. SentencePiece (Kudo and
Richardson, 2018) runs the same loop on raw text in which a space is just the character "▁".

`train_bpe` returns a `minigemma.tokenizer.bpe.SentencePieceModel`: hand it to `BPETokenizer`, or write it
with `.to_bytes()` and the `sentencepiece` library will load it too. Gemma's settings:

- spaces become "▁" and stay at the front of the word that follows (no dummy prefix added);
- digits are split: every digit is a word of its own, so no piece ever holds two digits;
- user-defined pieces (chat markers, whitespace runs...) are reserved up front and cut out of
  the text before counting, exactly as the tokenizer cuts them out before merging;
- byte fallback: the 256 pieces <0x00>..<0xFF> are always in the vocabulary.

How this differs from `sentencepiece`'s own trainer (the vocabularies overlap but are not equal):

- words are split where characters change between letters and everything else; SentencePiece
  also splits where the Unicode *script* changes (Latin next to Han, say) and by number;
- every character of the text is kept (SentencePiece drops the rarest beyond
  `character_coverage` and maps them to <unk>/bytes);
- pair counts are exact at every step and ties go to the alphabetically smallest pair;
  SentencePiece refreshes the counts of only its most promising pairs on each step, a speed
  trick that can pick a different pair when counts are close;
- the vocabulary is laid out as [<pad>, <eos>, <bos>, <unk>, user-defined, bytes, merges (in
  the order learned), single characters (most frequent first)], with score -rank for
  merges and characters, the layout of Gemma's own vocabulary.

One more subtlety, shared with SentencePiece: the encoder does not replay the merge list. It
merges whichever adjacent pair forms the best-scoring *piece*. A piece learned as "ab"+"c" may
therefore be built as "a"+"bc" at encoding time; the result is the same piece, so this rarely
shows, but it is why BPE-with-scores and BPE-with-merge-rules can disagree on odd inputs.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence

from .bpe import BPE, BYTE, CONTROL, NORMAL, SPACE, UNKNOWN, USER_DEFINED, SentencePieceModel, byte_piece

# Gemma's special pieces and ids: pad 0, eos 1, bos 2, unk 3.
SPECIALS = (("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", UNKNOWN))
GEMMA_USER_DEFINED = ("<start_of_turn>", "<end_of_turn>")


def _char_class(c: str) -> str:
    """Coarse class used to split words: space, digit (always alone), letter, number or other.

    Only ASCII 0-9 count as split digits: Gemma's vocabulary has multi-digit pieces in other
    scripts (Bengali "২০", for instance) but none made of ASCII digits.
    """
    if c == SPACE:
        return "space"
    if "0" <= c <= "9":
        return "digit"
    category = unicodedata.category(c)[0]  # L letter, M combining mark, N number, P, S, Z, C
    return "letter" if category in "LM" else "number" if category == "N" else "other"


def split_words(text: str) -> list[str]:
    """Cut normalized text (spaces already "▁") into the units merges may not cross.

    A word is an optional run of "▁" followed by a run of letters, or of other symbols, or by
    one digit, which stands alone even without its space: "▁▁x▁=▁42." -> ["▁▁x", "▁=", "▁", "4",
    "2", "."]. (SentencePiece's rule is the same: with `split_digits` a piece holding a digit
    must be one character long.)
    """
    words: list[str] = []
    current, current_class = "", ""
    for c in text:
        cls = _char_class(c)
        # Keep extending the word while the class does not change (a digit always ends one);
        # right after a run of "▁", the first non-space character still joins that word.
        joins = current and cls != "digit" and (cls == current_class or current_class == "space")
        if current and (not joins or (cls == "space" and current_class != "space")):
            words.append(current)
            current = ""
        current += c
        current_class = cls
    if current:
        words.append(current)
    return words


def train_bpe(
    text: str,
    vocab_size: int,
    *,
    user_defined_symbols: Sequence[str] = GEMMA_USER_DEFINED,
    max_piece_length: int = 16,
) -> SentencePieceModel:
    """Learn a BPE vocabulary of (at most) `vocab_size` pieces from `text`.

    Stops early if no pair occurs twice any more (a small text runs out of useful merges).
    `user_defined_symbols` are written as they appear in text (spaces as " " or "▁").
    """
    user_defined = list(dict.fromkeys(s.replace(" ", SPACE) for s in user_defined_symbols))
    fixed = len(SPECIALS) + len(user_defined) + 256
    normalized = text.replace(" ", SPACE)

    # 1. Cut out the user-defined pieces (longest first), then split the rest into words.
    if user_defined:
        pattern = "|".join(map(re.escape, sorted(user_defined, key=len, reverse=True)))
        chunks = re.split(pattern, normalized)
    else:
        chunks = [normalized]
    word_counts = Counter(w for chunk in chunks for w in split_words(chunk))

    # 2. Every character is a piece; the rest of the budget goes to merges.
    char_counts: Counter[str] = Counter()
    for word, count in word_counts.items():
        for c in word:
            char_counts[c] += count
    n_merges = vocab_size - fixed - len(char_counts)
    if n_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the specials, user-defined and byte pieces take "
            f"{fixed} and the text has {len(char_counts)} distinct characters; use at least {fixed + len(char_counts)}"
        )

    # 3. The merge loop. Each distinct word is a list of symbols with a count; `pair_counts`
    # says how often each adjacent pair occurs in the whole text, and `where` which words hold
    # it, so that a merge only revisits the words it changes.
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for k, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[k]
            where[pair].add(k)

    merges: list[str] = []
    learned = set(user_defined) | {p for p, _ in SPECIALS}
    while len(merges) < n_merges:
        candidates = [(n, p) for p, n in pair_counts.items() if n >= 2 and len(p[0]) + len(p[1]) <= max_piece_length]
        if not candidates:
            break
        # Most frequent pair; on ties the alphabetically smallest, so results are reproducible.
        _, best = min(candidates, key=lambda item: (-item[0], item[1]))
        joined = best[0] + best[1]
        if joined not in learned:  # the same string can arise from two different pairs
            merges.append(joined)
            learned.add(joined)
        for k in where.pop(best):
            symbols = words[k]
            for pair in zip(symbols, symbols[1:]):  # forget this word's old pairs...
                pair_counts[pair] -= counts[k]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[k] = merged
            for pair in zip(merged, merged[1:]):  # ...and count its new ones
                pair_counts[pair] += counts[k]
                where[pair].add(k)
        pair_counts = +pair_counts  # drop pairs whose count fell to zero

    # 4. Lay out the vocabulary the way Gemma's is laid out, scores falling with rank.
    pieces = [p for p, _ in SPECIALS] + user_defined + [byte_piece(b) for b in range(256)]
    types = [t for _, t in SPECIALS] + [USER_DEFINED] * len(user_defined) + [BYTE] * 256
    scores = [0.0] * len(pieces)
    ordinary = merges + [c for c, _ in char_counts.most_common() if c not in learned]
    pieces += ordinary
    types += [NORMAL] * len(ordinary)
    scores += [-float(rank) for rank in range(len(ordinary))]
    return SentencePieceModel(
        pieces=pieces,
        scores=scores,
        types=types,
        model_type=BPE,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_piece="<unk>",
        bos_piece="<bos>",
        eos_piece="<eos>",
        pad_piece="<pad>",
        normalizer_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        escape_whitespaces=True,
    )

"""Solutions to the exercises of notebook 01 (the tokenizer)."""

from __future__ import annotations

from minigemma.tokenizer import Tokenizer

SPACE = "\u2581"  # "▁", how SentencePiece writes a space inside pieces


# Exercise 1: how much text does one token carry?
def bytes_per_token(tok: Tokenizer, text: str) -> float:
    """UTF-8 bytes of `text` per token: higher means the vocabulary fits that text better.

    Bytes, not characters, so that scripts compare fairly: a Devanagari letter takes 3 bytes,
    an ASCII letter 1. A language the vocabulary knows well reaches several bytes per token;
    one it lacks falls towards 1 (byte fallback: one token per byte).
    """
    ids = tok.encode(text)
    if not ids:
        raise ValueError("empty text has no tokens")
    return len(text.encode("utf-8")) / len(ids)


# Exercise 2: a Gemma chat prompt built from ids, without formatting one long string.
def chat_prompt_ids(tok: Tokenizer, turns: list[tuple[str, str]]) -> list[int]:
    """<bos>, then each turn as <start_of_turn>{role}\\n{text}<end_of_turn>\\n, then the model's cue.

    Gemma knows two roles, "user" and "model"; it has no "system" role (fold such instructions
    into the first user turn). Concatenating the ids of the parts gives the same ids as
    encoding the whole formatted string because the markers are user-defined pieces: the
    tokenizer cuts the text at them before any merge, so no merge ever crosses a marker.
    """
    ids = [tok.bos_id]
    newline = tok.encode("\n")
    for role, text in turns:
        if role not in ("user", "model"):
            raise ValueError(f"unknown role {role!r}: Gemma has 'user' and 'model' turns (put system text in the first user turn)")
        ids += [tok.start_of_turn_id, *tok.encode(f"{role}\n{text}"), tok.end_of_turn_id, *newline]
    return ids + [tok.start_of_turn_id, *tok.encode("model\n")]


# Exercise 3: greedy longest match, a different way to use the same vocabulary.
def longest_match_tokenize(tok: Tokenizer, text: str, max_piece_chars: int = 32) -> list[int]:
    """At each position take the longest vocabulary piece that matches (WordPiece's MaxMatch).

    Only pieces text can produce count: normal and user-defined ones, recognised here because
    they decode to exactly their own spelling (control pieces decode to "", byte pieces to the
    byte's character, <unk> to " ⁇ "). A character no piece starts with falls back to its
    UTF-8 bytes, as in SentencePiece. The result always decodes back to `text`, but it is
    often not the BPE segmentation: greedy matching grabs a long prefix even when that leaves
    an awkward rest, where BPE builds pieces bottom-up in the order it learned them.
    """
    s = text.replace(" ", SPACE)
    ids: list[int] = []
    pos = 0
    while pos < len(s):
        for length in range(min(max_piece_chars, len(s) - pos), 0, -1):
            piece = s[pos : pos + length]
            i = tok.piece_to_id(piece)
            if tok.id_to_piece(i) == piece and tok.decode([i]) == piece.replace(SPACE, " "):
                ids.append(i)
                pos += length
                break
        else:  # no piece starts here: byte fallback
            ids += [tok.piece_to_id(f"<0x{b:02X}>") for b in s[pos].encode("utf-8")]
            pos += 1
    return ids

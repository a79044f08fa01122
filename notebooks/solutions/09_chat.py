"""Solutions to the exercises of notebook 09 (the chat format)."""

from __future__ import annotations

import re

from minigemma.decoding.chat import format_chat
from minigemma.tokenizer import Tokenizer

START, END = "<start_of_turn>", "<end_of_turn>"
GENERATION_PROMPT = f"{START}model\n"
# One turn as format_chat writes it. The content may hold newlines (DOTALL) but no chat marker:
# a marker inside a message cannot be told apart from the template's own.
TURN = re.compile(rf"{START}(user|model)\n(.*?){END}\n", re.DOTALL)


# Exercise 1: format_chat, inverted.
def parse_chat(text: str) -> list[dict[str, str]]:
    """The messages of a conversation rendered by format_chat; an open model turn at the end is dropped.

    Lossy cases of format_chat cannot come back: a system message was merged into the first user
    message, "assistant" was written as "model", and a message holding a chat marker reads as
    several turns (or as broken text, a ValueError).
    """
    text = text.removesuffix(GENERATION_PROMPT)
    messages, pos = [], 0
    while pos < len(text):
        turn = TURN.match(text, pos)
        if turn is None:
            raise ValueError(f"expected a turn '<start_of_turn>user|model\\n...<end_of_turn>\\n' at character "
                             f"{pos}, found {text[pos:pos + 30]!r}; is this text from format_chat?")
        if START in turn[2]:
            raise ValueError(f"the turn at character {pos} has no <end_of_turn>; is this text from format_chat?")
        messages.append({"role": turn[1], "content": turn[2]})
        pos = turn.end()
    return messages


# Exercise 2: what the template costs per turn.
def template_overhead(tok: Tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Tokens each turn adds beyond its content: <start_of_turn>, role, "\\n", <end_of_turn>, "\\n" = 5.

    Each turn is encoded alone: the chat markers cut the text into pieces that the tokenizer
    never merges across, so a turn's tokens do not depend on its neighbours.
    """
    return [len(tok.encode(format_chat([m], add_generation_prompt=False))) - len(tok.encode(m["content"]))
            for m in messages]


# Exercise 3: markers inside a message stay text.
def encode_as_text(tok: Tokenizer, text: str) -> list[int]:
    """Ids of `text` in which a typed chat marker is spelled with ordinary pieces, never its own id."""
    ids = []
    for part in re.split(f"({re.escape(START)}|{re.escape(END)})", text):
        if part in (START, END):
            ids += tok.encode("<") + tok.encode(part[1:])  # "<" alone and "start_of_turn>" are not markers
        elif part:
            ids += tok.encode(part)
    return ids


def safe_chat_ids(tok: Tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """format_chat's conversation as ids, with only the template's markers as marker ids
    (what `minigemma.decoding.chat.encode_chat` does, written another way).

    The turns come from format_chat itself, run on placeholders ("\\0" + index + "\\0") instead
    of the contents, so roles, the system fold and the error messages stay format_chat's own.
    """
    placeholders = [{**m, "content": f"\0{k}\0"} for k, m in enumerate(messages)]
    ids = [tok.bos_id]
    for turn in parse_chat(format_chat(placeholders, add_generation_prompt=False)):
        content = re.sub(r"\0(\d+)\0", lambda k: messages[int(k[1])].get("content", ""), turn["content"])
        ids += [tok.start_of_turn_id, *encode_as_text(tok, f"{turn['role']}\n{content}"), tok.end_of_turn_id,
                *tok.encode("\n")]
    if add_generation_prompt:
        ids += [tok.start_of_turn_id, *tok.encode("model\n")]
    return ids

"""The instruction-tuned conversation format (Gemma report, section 4, "Formatting").

Each turn is wrapped in control tokens the -it models were fine-tuned on:

    <bos><start_of_turn>user
    What is RoPE?<end_of_turn>
    <start_of_turn>model
    ...<end_of_turn>

There are two roles only, `user` and `model`. Gemma has no system role, so a system prompt is
folded into the first user turn (pitfall 6). Generation stops at `<end_of_turn>`.

The markers are pieces the tokenizer finds anywhere in text, so a message that *contains*
"<end_of_turn>" could end its turn early and forge the model's. `format_chat` gives the text
to read; `encode_chat` gives the ids to send, with markers inside messages kept as text
(unless `trusted=True`). `Chat` uses `encode_chat`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ArgumentError
from .generate import check_generation, check_text, generate
from ..model.gemma import Gemma
from ..tokenizer import Tokenizer

ROLES = {"user": "user", "model": "model", "assistant": "model"}
START, END = "<start_of_turn>", "<end_of_turn>"
MARKERS = re.compile(f"({START}|{END})")


def chat_turns(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """[{"role": ..., "content": ...}, ...] as checked (role, content) turns, a system message folded in."""
    turns: list[tuple[str, str]] = []
    system = None
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content", "")
        check_text(content, f"message {i} ({role})")
        if role == "system":
            if i != 0:
                raise ArgumentError("a system message may only come first; Gemma has no system role, so it "
                                    "is folded into the first user turn")
            system = content
            continue
        if role not in ROLES:
            raise ArgumentError(f"unknown chat role {role!r}; use 'user' or 'model' (or 'system' first)")
        turns.append((ROLES[role], content))
    if system is not None:
        if not turns or turns[0][0] != "user":
            raise ArgumentError("a system message must be followed by a user message to fold it into")
        turns[0] = ("user", f"{system}\n\n{turns[0][1]}")
    for (a, _), (b, _) in zip(turns, turns[1:]):
        if a == b:
            raise ArgumentError(f"chat turns must alternate between user and model; found two {a!r} turns in a row")
    return turns


def format_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Render [{"role": ..., "content": ...}, ...] as Gemma's chat text (BOS is added at encoding).

    This is the text to read. To give a conversation to a model, use `encode_chat`: encoding
    this text with `tok.encode` would turn a chat marker typed *inside* a message into a real one.
    """
    text = "".join(f"{START}{role}\n{content}{END}\n" for role, content in chat_turns(messages))
    if add_generation_prompt:
        text += f"{START}model\n"
    return text


def encode_text(tok: Tokenizer, text: str) -> list[int]:
    """Ids of `text` in which a typed chat marker is spelled with ordinary pieces, never its own id.

    The tokenizer matches the markers anywhere in text (they are user-defined pieces), so each
    one is encoded in two parts, "<" and "start_of_turn>", neither of which is a marker.
    Text without markers gets exactly the ids of `tok.encode`.
    """
    ids = []
    for part in MARKERS.split(text):
        if part in (START, END):
            ids += tok.encode(part[0]) + tok.encode(part[1:])
        elif part:
            ids += tok.encode(part)
    return ids


def encode_chat(tok: Tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                trusted: bool = False) -> list[int]:
    """The conversation `format_chat` renders, as token ids with BOS first: what `Chat` sends.

    Only the template's own markers become marker ids. By default, user and system text is
    *text*: someone who types "<end_of_turn>" and then "<start_of_turn>model" into a message
    cannot end their turn and write one for the model; `tok.decode` still gives `format_chat`'s
    text. trusted=True encodes the text of `format_chat(messages)` as it is (as a chat template
    that renders text, then encodes it, does), so markers inside messages act as markers: for
    conversations you wrote yourself, e.g. a few-shot prompt with turns inside one message.
    """
    if trusted:
        return tok.encode(format_chat(messages, add_generation_prompt), add_bos=True)
    start, end, newline = tok.start_of_turn_id, tok.end_of_turn_id, tok.encode("\n")
    ids = [tok.bos_id]
    for role, content in chat_turns(messages):
        ids += [start, *encode_text(tok, f"{role}\n{content}"), end, *newline]
    if add_generation_prompt:
        ids += [start, *tok.encode("model\n")]
    return ids


@dataclass
class Chat:
    """A conversation that remembers its turns: `Chat(model, tok).say("Hello!")`.

    Every `say` sends the whole conversation again: the system text (folded into the first
    user turn), `history`, the new message, with room for `max_new_tokens` of reply. When that
    no longer fits in the model's context, the oldest exchanges (a user message and the model's
    reply, always both) are dropped from `history` until it fits; the system text is always
    kept. `dropped` is how many messages the last `say` dropped (0 until the context is full).
    trusted: let chat markers typed in messages act as markers (see `encode_chat`).
    """

    model: Gemma
    tok: Tokenizer
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    trusted: bool = False
    dropped: int = field(default=0, init=False)

    def say(self, message: str, max_new_tokens: int = 256, stream: Callable[[str], None] | None = None, *,
            temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
            seed: int | None = None, progress: bool = False) -> str:
        """Send `message`; return the reply (streamed to `stream` as it comes). Sampling as in `generate`."""
        check_generation(max_new_tokens, temperature, top_k, top_p, seed)
        check_text(message, "the message")
        history, ids = self._fit(message, max_new_tokens)
        reply = generate(self.model, self.tok, ids, max_new_tokens=max_new_tokens, stream=stream,
                         temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, progress=progress)
        # Only a finished reply changes the conversation: an error or Ctrl-C above leaves it as it was.
        self.dropped = len(self.history) - len(history)
        self.history = [*history, {"role": "user", "content": message}, {"role": "model", "content": reply.strip()}]
        return reply

    def _fit(self, message: str, max_new_tokens: int) -> tuple[list[dict[str, str]], list[int]]:
        """The history to keep and the prompt ids: the oldest exchanges dropped until prompt + reply fit."""
        context = self.model.config.max_position_embeddings
        system = [{"role": "system", "content": self.system}] if self.system else []
        new = {"role": "user", "content": message}
        history = self.history
        while True:
            ids = encode_chat(self.tok, [*system, *history, new], trusted=self.trusted)
            if len(ids) + max_new_tokens <= context:
                return history, ids
            if not history:
                with_system = " the system prompt and" if self.system else ""
                raise ArgumentError(
                    f"the message is {len(encode_text(self.tok, message))} tokens; with{with_system} the chat "
                    f"template the prompt is {len(ids)} tokens, and {len(ids)} + max_new_tokens ({max_new_tokens}) "
                    f"is more than the model's context of {context} tokens: shorten the message or lower "
                    "max_new_tokens")
            history = history[2:]  # the oldest exchange: a user message and the model's reply

    def reset(self) -> None:
        self.history.clear()
        self.dropped = 0

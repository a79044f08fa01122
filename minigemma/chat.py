"""The instruction-tuned conversation format (Gemma report, section 4, "Formatting").

Each turn is wrapped in control tokens the -it models were fine-tuned on:

    <bos><start_of_turn>user
    What is RoPE?<end_of_turn>
    <start_of_turn>model
    ...<end_of_turn>

There are two roles only, `user` and `model`. Gemma has no system role, so a system prompt is
folded into the first user turn (pitfall 6). Generation stops at `<end_of_turn>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .generate import generate
from .model import Gemma
from .tokenizer import Tokenizer

ROLES = {"user": "user", "model": "model", "assistant": "model"}


def format_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Render [{"role": ..., "content": ...}, ...] as Gemma's chat text (BOS is added at encoding)."""
    turns: list[tuple[str, str]] = []
    system = None
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content", "")
        if role == "system":
            if i != 0:
                raise ValueError("a system message may only come first; Gemma has no system role, so it "
                                 "is folded into the first user turn")
            system = content
            continue
        if role not in ROLES:
            raise ValueError(f"unknown chat role {role!r}; use 'user' or 'model' (or 'system' first)")
        turns.append((ROLES[role], content))
    if system is not None:
        if not turns or turns[0][0] != "user":
            raise ValueError("a system message must be followed by a user message to fold it into")
        turns[0] = ("user", f"{system}\n\n{turns[0][1]}")
    for (a, _), (b, _) in zip(turns, turns[1:]):
        if a == b:
            raise ValueError(f"chat turns must alternate between user and model; found two {a!r} turns in a row")
    text = "".join(f"<start_of_turn>{role}\n{content}<end_of_turn>\n" for role, content in turns)
    if add_generation_prompt:
        text += "<start_of_turn>model\n"
    return text


@dataclass
class Chat:
    """A conversation that remembers its turns: `Chat(model, tok).say("Hello!")`."""

    model: Gemma
    tok: Tokenizer
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    def say(self, message: str, max_new_tokens: int = 256, stream: Callable[[str], None] | None = None,
            **sampling) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        messages.append({"role": "user", "content": message})
        reply = generate(self.model, self.tok, format_chat(messages), max_new_tokens=max_new_tokens,
                         stream=stream, **sampling)
        self.history += [{"role": "user", "content": message}, {"role": "model", "content": reply.strip()}]
        return reply

    def reset(self) -> None:
        self.history.clear()

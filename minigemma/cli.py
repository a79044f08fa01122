"""`minigemma generate | chat | tune | info | cache` in a terminal (also `python -m minigemma`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

import torch

from .errors import MinigemmaError
from .quantize import SCHEMES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gemma3-270m",
                   help="a known name (default: the embedded gemma3-270m), a hub id, or a path to a checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: float32 on CPU, bfloat16 on GPU (float16 is refused: it overflows)")
    p.add_argument("--tokenizer", choices=["sentencepiece", "python"], default="sentencepiece",
                   help="the sentencepiece library or minigemma's own pure-Python BPE")


def _add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)


QUANTIZE = tuple(s for s in SCHEMES if s is not None)  # what load(..., quantize=) accepts


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", choices=QUANTIZE, default=None, metavar="{" + ",".join(QUANTIZE) + "}",
                   help="replace the weights by quantized ones (minigemma.quantize); int8: on a CPU, minigemma's "
                        "own kernel (int8-blocks: weights and activations in blocks of 32, the fastest here; "
                        "benchmarks/RESULTS.md), elsewhere int8-rows (PyTorch's int8 kernel)")
    p.add_argument("--compile", action="store_true",
                   help="compile the decoding step with torch.compile first (a minute or two; faster afterwards)")


def _add_adapter_arg(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--adapter", default=default,
                   help="a LoRA adapter directory in peft's format; 'chat': the 270M's chat adapter that "
                        "`minigemma tune` makes; 'none': the model alone" + (" (default: chat, if it was made)"
                                                                          if default else ""))


def _adapter(args) -> tuple[str | None, str]:
    """The adapter to load and a note to print once loading worked: --adapter as given, or for chat
    with the embedded base model, the chat adapter if `minigemma tune` made it (else how to make it)."""
    from .loading.adapter import CHAT, chat_adapter_dir

    adapter = getattr(args, "adapter", None)
    if adapter != "auto":
        return (None if adapter in (None, "none") else adapter), ""
    if args.model != "gemma3-270m":
        return None, ""
    if (chat_adapter_dir() / "adapter_config.json").is_file():
        return CHAT, (f"minigemma: note: gemma3-270m with its chat adapter from {chat_adapter_dir()} "
                      "(made by `minigemma tune`; --adapter none for the base model)")
    return None, ("minigemma: note: gemma3-270m is a base model: it continues text rather than answering. "
                  "`minigemma tune` instruction-tunes it once (a few minutes on a CPU) and chat then uses it")


def _sampling(args) -> dict:
    """The sampling flags as keyword arguments, checked now: a bad value fails before the model loads."""
    from .decoding.generate import check_generation

    kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    check_generation(**kwargs)
    return kwargs


def _load(args):
    import minigemma

    dtype = DTYPES[args.dtype] if args.dtype else None
    adapter, note = _adapter(args)
    model, tok = minigemma.load(args.model, device=args.device, dtype=dtype, tokenizer=args.tokenizer,
                                quantize=getattr(args, "quantize", None), adapter=adapter)
    if note:
        print(note, file=sys.stderr)
    if getattr(args, "compile", False):
        minigemma.compile(model)
    return model, tok


def _stream(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _error(err: BaseException) -> None:
    """One line on stderr, never a traceback: our messages say what is wrong and what to do."""
    message = " ".join(str(err).splitlines())
    print(f"minigemma: error: {message}", file=sys.stderr)


def cmd_generate(args) -> None:
    import minigemma
    from .decoding.generate import check_room, check_text

    sampling = _sampling(args)
    check_text(args.prompt)
    model, tok = _load(args)
    prompt_ids = tok.encode(args.prompt, add_bos=True)
    check_room(model, len(prompt_ids), args.max_new_tokens)  # before the prompt is echoed
    sys.stdout.write(args.prompt)
    minigemma.generate(model, tok, prompt_ids, stream=_stream, **sampling)
    sys.stdout.write("\n")


def cmd_chat(args) -> None:
    from .decoding.chat import Chat
    from .decoding.generate import check_text

    sampling = _sampling(args)
    if args.system is not None:
        check_text(args.system, "--system")
    model, tok = _load(args)
    chat = Chat(model, tok, system=args.system)
    # Read bytes that are not UTF-8 as stand-in characters instead of failing inside input():
    # Chat.say then refuses that one message with a clear error, and the chat goes on.
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    print(f"Chatting with {model.config.name}. Empty line or Ctrl-D to quit, /reset to start over.")
    # Ctrl-C while input() waits on a pipe can surface as an empty read (EOF) instead of
    # KeyboardInterrupt (seen in CI): note the signal, so that EOF after it still means "interrupted".
    interrupted: list[int] = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    while True:
        try:
            message = input("you> ")
        except EOFError:
            if interrupted:
                raise KeyboardInterrupt from None
            break
        if not message.strip():
            break
        if message.strip() == "/reset":
            chat.reset()
            continue
        sys.stdout.write("model> ")
        try:
            chat.say(message, stream=_stream, **sampling)
        except ValueError as err:  # this message cannot be answered; the conversation so far is kept
            sys.stdout.write("\n")
            sys.stdout.flush()
            _error(err)
            continue
        sys.stdout.write("\n")
        if chat.dropped:
            print(f"minigemma: note: the conversation outgrew the model's context of "
                  f"{model.config.max_position_embeddings:,} tokens: its oldest {chat.dropped} messages were dropped",
                  file=sys.stderr)


def cmd_tune(args) -> None:
    from .train.chat_tuning import cached_chat_adapter, make_chat_adapter

    made = cached_chat_adapter()
    where = make_chat_adapter(progress=True)
    print(f"the chat adapter is {'already made' if made else 'saved'}: {where} (delete it to train again); "
          "`minigemma chat` uses it")


def cmd_info(args) -> None:
    model, tok = _load(args)
    c = model.config
    print(f"model        {c.name} ({c.architecture})")
    print(f"parameters   {model.num_parameters():,}")
    print(f"layers       {c.num_layers}  hidden {c.hidden_size}  MLP {c.intermediate_size}")
    print(f"heads        {c.num_heads} query / {c.num_kv_heads} key-value, head_dim {c.head_dim}")
    if c.sliding_window:
        local = sum(c.is_local_layer(i) for i in range(c.num_layers))
        print(f"attention    {local} local layers (window {c.sliding_window}), {c.num_layers - local} global")
    print(f"context      {c.max_position_embeddings}")
    print(f"vocabulary   {tok.vocab_size} pieces (bos {tok.bos_id}, eos {tok.eos_id})")
    # The final norm's weight: the activations' dtype even when the embedding is quantized.
    weights = str(model.ln_final.weight.dtype).removeprefix("torch.")
    if getattr(model, "quantization", None):
        weights += ", int" + "/int".join(sorted({str(v["bits"]) for v in model.quantization["layers"].values()}))
    print(f"weights      {weights} on {model.device}")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cmd_cache(args) -> None:
    """Where minigemma's cache is and what it holds; `verify` checks every byte, `clear` empties it."""
    from .loading import cache

    root = cache.cache_root()
    if args.action == "clear":
        count, freed = cache.clear()
        print(f"removed {count} cache entr{'y' if count == 1 else 'ies'} from {root}, freeing {_size(freed)}")
        for folder, _ in cache.other_folders(root):  # only the adapters are left
            print(f"kept the adapters you trained, in {folder} ({_size(cache.entry_size(folder))}; delete by hand)")
    elif args.action == "verify":
        results = cache.verify()
        for entry, problem in results:
            print(f"{entry.name}  {'ok' if problem is None else problem + ': removed (rebuilt at the next load)'}")
        damaged = sum(problem is not None for _, problem in results)
        print(f"checked {len(results)} cache entr{'y' if len(results) == 1 else 'ies'} (sha256 of every file), "
              f"{damaged} damaged")
    else:
        found = cache.entries(root)
        print(f"cache    {root} ({cache.root_origin()})")
        for entry in found:
            print(f"  {entry.name}  {_size(cache.entry_size(entry))}  {cache.entry_source(entry)}")
        print(f"total    {len(found)} entries, {_size(sum(map(cache.entry_size, found)))}")
        for folder, what in cache.other_folders(root):
            print(f"  {folder.name}/  {_size(cache.entry_size(folder))}  {what}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistyped command line gets one line (argparse prints its usage too), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command line shows it: one line, without the source line Python adds."""
    print(f"minigemma: warning: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="minigemma", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="continue a prompt, streaming tokens")
    g.add_argument("prompt")
    _add_model_args(g)
    _add_adapter_arg(g, None)
    _add_speed_args(g)
    _add_sampling_args(g, 64)
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("chat", help="talk to an instruction-tuned model in Gemma's chat format")
    c.add_argument("--system", default=None, help="folded into the first user turn (Gemma has no system role)")
    _add_model_args(c)
    _add_adapter_arg(c, "auto")
    _add_speed_args(c)
    _add_sampling_args(c, 256)
    c.set_defaults(func=cmd_chat)
    t = sub.add_parser("tune", help="instruction-tune the embedded gemma3-270m with LoRA, once (minutes on a CPU), "
                                    "so that chat answers")
    t.set_defaults(func=cmd_tune)
    i = sub.add_parser("info", help="describe a model")
    _add_model_args(i)
    i.set_defaults(func=cmd_info)
    k = sub.add_parser("cache", help="show (info), check (verify) or empty (clear) the cache of converted models")
    k.add_argument("action", nargs="?", choices=["info", "verify", "clear"], default="info")
    k.set_defaults(func=cmd_cache)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            args.func(args)
        sys.stdout.flush()  # a closed pipe shows here at the latest, where it can still be caught
    except (MinigemmaError, ValueError, FileNotFoundError) as err:  # a user's mistake, not a bug
        _error(err)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: stop quietly
        return 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
    except BrokenPipeError:
        # The reader went away (`minigemma generate ... | head -c5`). The recipe of Python's docs
        # (signal module, "Note on SIGPIPE"): point stdout at /dev/null, so that the flush at exit
        # cannot fail a second time, and leave quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for `yes` in `yes | head`
    return 0


if __name__ == "__main__":
    sys.exit(main())

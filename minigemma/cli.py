"""`minigemma generate | chat | info` in a terminal (also `python -m minigemma`)."""

from __future__ import annotations

import argparse
import sys

import torch

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


FAST = ("fp32", "bf16", "int8", "int4", "int8-dynamic")


def _add_fast_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fast", choices=FAST, default=None, metavar="{" + ",".join(FAST) + "}",
                   help="decode with the fast path (minigemma.fast) and weights in this precision; "
                        "int8-dynamic: int8 weights, and the output projection through PyTorch's int8 x int8 "
                        "kernel (fastest on a CPU; benchmarks/RESULTS.md)")


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def _load(args):
    import minigemma

    dtype = DTYPES[args.dtype] if args.dtype else None
    model, tok = minigemma.load(args.model, device=args.device, dtype=dtype, tokenizer=args.tokenizer)
    if getattr(args, "fast", None):
        from .fast import prepare_for_decode

        if args.fast == "int8-dynamic":
            model = prepare_for_decode(model, "int8", embedding="int8-dynamic")
        else:
            model = prepare_for_decode(model, args.fast)
    return model, tok


def _stream(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def cmd_generate(args) -> None:
    import minigemma

    model, tok = _load(args)
    sys.stdout.write(args.prompt)
    minigemma.generate(model, tok, args.prompt, stream=_stream, **_sampling(args))
    sys.stdout.write("\n")


def cmd_chat(args) -> None:
    from .chat import Chat

    model, tok = _load(args)
    chat = Chat(model, tok, system=args.system)
    print(f"Chatting with {model.config.name}. Empty line or Ctrl-D to quit, /reset to start over.")
    while True:
        try:
            message = input("you> ")
        except EOFError:
            break
        if not message.strip():
            break
        if message.strip() == "/reset":
            chat.reset()
            continue
        sys.stdout.write("model> ")
        chat.say(message, stream=_stream, **_sampling(args))
        sys.stdout.write("\n")


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
    print(f"weights      {model.embed.weight.dtype} on {model.embed.weight.device}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minigemma", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="continue a prompt, streaming tokens")
    g.add_argument("prompt")
    _add_model_args(g)
    _add_fast_arg(g)
    _add_sampling_args(g, 64)
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("chat", help="talk to an instruction-tuned model in Gemma's chat format")
    c.add_argument("--system", default=None, help="folded into the first user turn (Gemma has no system role)")
    _add_model_args(c)
    _add_fast_arg(c)
    _add_sampling_args(c, 256)
    c.set_defaults(func=cmd_chat)
    i = sub.add_parser("info", help="describe a model")
    _add_model_args(i)
    i.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # our errors already say what is wrong and what to do
        print(f"minigemma: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

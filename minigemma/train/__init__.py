"""Train it yourself: the loss, the data, the loop, and preference tuning (DPO), for the one model.

Above `decoding` in the layering: it uses the model, the tokenizer and the chat template, and
nothing below imports it. Typical use, fine-tuning the 270M on chat examples:

    model, tok = minigemma.load("gemma3-270m")
    model.requires_grad_(True)              # load freezes every weight; or add LoRA adapters
    examples = sft_examples(tok, read_jsonl("assets/instructions.jsonl", split="train"))
    history = train(model, batches(examples, 8, pad_id=tok.pad_id), steps=200, lr=1e-5, warmup=20)
"""

from .data import batches, pad, read_jsonl, sft_example, sft_examples, text_batches
from .dpo import dpo_batches, dpo_loss, dpo_loss_fn, preference_margin, preference_pairs
from .loop import History, lr_at, train
from .loss import IGNORE, lm_loss, sequence_logprob
from .chat_tuning import Recipe, answers, make_chat_adapter, merged, tune_chat

__all__ = ["IGNORE", "History", "batches", "dpo_batches", "dpo_loss", "dpo_loss_fn", "lm_loss", "lr_at", "pad",
           "preference_margin", "preference_pairs", "read_jsonl", "sequence_logprob", "sft_example",
           "sft_examples", "text_batches", "train", "Recipe", "answers", "make_chat_adapter", "merged", "tune_chat"]

"""The solutions to notebook 01's exercises (notebooks/solutions/01_tokenizer.py) work."""

import importlib
import sys
from pathlib import Path

import pytest

from minigemma.tokenizer import load_tokenizer, modelproto_from_gguf_vocab

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
sol = importlib.import_module("solutions.01_tokenizer")  # file names start with a digit
TEXT = (ROOT / "assets" / "tokenizer_training_text.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module", params=["sentencepiece", "python"])
def tok(request, tmp_path_factory):
    """A small vocabulary from sentencepiece's trainer, Gemma's settings, ids in Gemma's layout."""
    import sentencepiece as spm

    directory = tmp_path_factory.mktemp("ex01")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.splitlines()), model_prefix=str(directory / "tok"), model_type="bpe",
        vocab_size=700, hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True, split_digits=True,
        add_dummy_prefix=False, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n", "\u2581\u2581"],
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", minloglevel=2, num_threads=1)
    return load_tokenizer(directory / "tok.model", request.param)


def test_bytes_per_token(tok):
    assert sol.bytes_per_token(tok, "2024") == 1.0  # split digits: one byte per token
    assert sol.bytes_per_token(tok, " the model") > 3  # common words are single pieces
    assert sol.bytes_per_token(tok, "🦙") == 1.0  # unknown character: byte fallback
    with pytest.raises(ValueError, match="empty"):
        sol.bytes_per_token(tok, "")


def test_chat_prompt_ids_equal_encoding_the_formatted_string(tok):
    turns = [("user", "What is a token?"), ("model", "A piece of text."), ("user", "And  an id?")]
    formatted = "".join(f"<start_of_turn>{role}\n{text}<end_of_turn>\n" for role, text in turns)
    formatted += "<start_of_turn>model\n"
    ids = sol.chat_prompt_ids(tok, turns)
    assert ids == tok.encode(formatted, add_bos=True)
    assert ids[:2] == [tok.bos_id, tok.start_of_turn_id]
    assert tok.decode(ids) == formatted  # <bos> prints nothing
    with pytest.raises(ValueError, match="no.*system|system text in the first user turn"):
        sol.chat_prompt_ids(tok, [("system", "Be brief.")])


def test_longest_match_round_trips_but_is_not_bpe(tok):
    words = sorted(set(TEXT.split()))
    differ = 0
    for word in words:
        text = " " + word
        ids = sol.longest_match_tokenize(tok, text)
        assert tok.decode(ids) == text
        differ += ids != tok.encode(text)
    assert 0 < differ < len(words)  # mostly the same pieces, but not always
    assert sol.longest_match_tokenize(tok, "<start_of_turn>\n") == [tok.start_of_turn_id, *tok.encode("\n")]
    assert tok.bos_id not in sol.longest_match_tokenize(tok, "<bos>")  # control pieces never match text


def test_with_a_vocabulary_built_from_gguf_metadata(tmp_path):
    """The solution uses only the Tokenizer protocol: it works on a GGUF-derived vocabulary too,
    whose chat markers start out typed control (see minigemma.tokenizer)."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n"]
    types = [3, 3, 3, 3, 3, 3, 4]
    tokens += [f"<0x{b:02X}>" for b in range(256)] + ["u", "s", "e", "r", "m", "o", "d", "l", "h", "i", "us", "er"]
    types += [6] * 256 + [1] * 12
    scores = [0.0] * (7 + 256) + [-float(i) for i in range(12)]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(modelproto_from_gguf_vocab(tokens, scores, types, bos_id=2, eos_id=1, unk_id=3, pad_id=0))
    for backend in ("sentencepiece", "python"):
        gemma = load_tokenizer(path, backend)
        ids = sol.chat_prompt_ids(gemma, [("user", "hi")])
        assert ids == gemma.encode("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", add_bos=True)
        assert ids[:2] == [2, 4]

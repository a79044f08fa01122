"""The pure-Python BPE (minigemma.tokenizer.bpe) gives the same ids as the `sentencepiece` library.

On the real 262k Gemma 3 vocabulary (varied text and random strings), on vocabularies trained
by sentencepiece's own trainer (Gemma's settings and a few others, to exercise every code
path), and on the vocabulary trained by minigemma.tokenizer.bpe_train.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigemma.tokenizer.bpe import (
    NORMAL,
    UNUSED,
    BPETokenizer,
    SentencePieceModel,
    decode_utf8_like_sentencepiece,
)
from minigemma.tokenizer.bpe_train import split_words, train_bpe

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "assets" / "tokenizer_training_text.txt").read_text(encoding="utf-8")
SPACE = "\u2581"

# Text for the round-trip properties leaves out U+2581 ("▁"): SentencePiece writes every space
# as that character, so a literal "▁" in the input decodes back as a space. No SentencePiece
# tokenizer can round-trip it (the library and transformers agree); ids must still match.
no_surrogates = st.characters(blacklist_categories=("Cs",))  # lone surrogates are not UTF-8
roundtrip_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters=SPACE)
# Mix in the characters that matter most for this tokenizer so short strings hit them often.
special_bits = st.sampled_from([" ", "  ", "\n", "\t", "\n\n", "<start_of_turn>", "<end_of_turn>", "<bos>", "7", "é", "🦙"])


def texts(*parts: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    """Strings glued from characters and multi-character bits (st.text wants single characters)."""
    return st.lists(st.one_of(*parts), max_size=max_size).map("".join)


slow = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def corpus(seed: int = 0, n: int = 400) -> list[str]:
    """Lines of the training text, the whole text, and random mixes of words and odd characters."""
    rng = random.Random(seed)
    words = TEXT.split()
    out = TEXT.splitlines() + [TEXT]
    bits = [" ", "  ", "   ", "\n", "\t", "\n\n", " \n ", "<start_of_turn>", "<end_of_turn>", "<bos>", "<unk>", SPACE, "\0"]
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.5:
                parts.append(rng.choice(words))
            elif r < 0.7:
                parts.append(rng.choice(bits))
            elif r < 0.85:
                parts.append(chr(rng.randint(0x20, 0x3000)))
            else:
                parts.append(chr(rng.randint(0, 0x10FFFF)))
        out.append("".join(c for c in "".join(parts) if not 0xD800 <= ord(c) <= 0xDFFF))
    return out


# ----- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma3_model_bytes(tmp_path_factory) -> bytes:
    """tokenizer.model built from the embedded GGUF's metadata: the file `minigemma.load` uses.

    It comes from minigemma's one-time conversion cache (built by `modelproto_from_gguf_vocab`),
    so the slow GGUF parse is shared with every other test and notebook.
    """
    from minigemma.loading import embedded_gguf_path
    from minigemma.loading.cache import converted_gguf_dir

    path = converted_gguf_dir(embedded_gguf_path(), progress=False) / "tokenizer.model"
    return path.read_bytes()


@pytest.fixture(scope="module")
def gemma3(gemma3_model_bytes) -> tuple[spm.SentencePieceProcessor, BPETokenizer]:
    return spm.SentencePieceProcessor(model_proto=gemma3_model_bytes), BPETokenizer(gemma3_model_bytes)


GEMMA1_SETTINGS = dict(
    model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
    normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n", "\n\n", SPACE * 2, SPACE * 3, "\t"],
    pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
    character_coverage=1.0, max_sentencepiece_length=16,
)
# Other settings reach the code paths Gemma does not use: the dummy prefix and space trimming
# (Llama-style), unknown characters without byte fallback (runs of them become one <unk>).
VARIANTS = {
    "gemma1": {},
    "dummy_prefix_and_trimming": dict(add_dummy_prefix=True, remove_extra_whitespaces=True, user_defined_symbols=["<start_of_turn>"]),
    "no_byte_fallback": dict(byte_fallback=False),
}


def train_with_sentencepiece(directory: Path, name: str, **overrides) -> bytes:
    options = {**GEMMA1_SETTINGS, **overrides}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.splitlines()), model_prefix=str(directory / name), vocab_size=700,
        hard_vocab_limit=False, minloglevel=2, num_threads=1, **options)
    return (directory / f"{name}.model").read_bytes()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request, tmp_path_factory) -> tuple[spm.SentencePieceProcessor, BPETokenizer]:
    data = train_with_sentencepiece(tmp_path_factory.mktemp("spm"), request.param, **VARIANTS[request.param])
    return spm.SentencePieceProcessor(model_proto=data), BPETokenizer(data)


# ----- the real Gemma 3 vocabulary ----------------------------------------------------------------


def test_real_vocabulary_varied_corpus(gemma3):
    sp, py = gemma3
    multilingual = [
        "日本語のテキストです。中文文本，还有标点。한국어 텍스트입니다.",
        "مرحبا بالعالم، هذا نص عربي. नमस्ते दुनिया, यह हिंदी पाठ है। তোমার নাম কি? ১৯৭১",
        "Emoji: 🦙🤖👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️ and math ∀x∈ℝ: x²≥0",
        "def f(x):\n    return x ** 2\n\n\n\tif x:\n\t\t\tpass\r\n" + " " * 45 + "deep",
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n<table><td>1</td></table>[multimodal]",
        "<bos><eos><pad><unk><mask><unused0><start_of_image>",
        "x" * 300 + " " + "ab" * 150,
    ]
    for text in multilingual + corpus(seed=1):
        ids = sp.encode(text)
        assert py.encode(text) == ids, text
        if SPACE not in text:
            assert py.decode(ids) == text == sp.decode(ids)


@slow
@given(text=texts(no_surrogates, special_bits, max_size=40))
def test_real_vocabulary_random_text(gemma3, text):
    sp, py = gemma3
    assert py.encode(text) == sp.encode(text)


@slow
@given(text=texts(roundtrip_chars, special_bits, max_size=40))
def test_real_vocabulary_round_trip(gemma3, text):
    _, py = gemma3
    assert py.decode(py.encode(text)) == text


@slow
@given(ids=st.lists(st.one_of(st.integers(0, 700), st.integers(238, 493), st.integers(0, 262143)), max_size=12))
def test_real_vocabulary_decode_any_ids(gemma3, ids):
    # Includes byte pieces that do not form valid UTF-8, control pieces, <unk>.
    sp, py = gemma3
    assert py.decode(ids) == sp.decode(ids)


def test_invalid_utf8_bytes_decode_like_sentencepiece(gemma3):
    sp, py = gemma3
    e2, x82 = py.piece_to_id("<0xE2>"), py.piece_to_id("<0x82>")
    # A truncated 3-byte character: one U+FFFD per byte (Python's "replace" would give one).
    assert py.decode([e2, x82]) == sp.decode([e2, x82]) == "\ufffd\ufffd"
    assert bytes([0xE2, 0x82]).decode("utf-8", errors="replace") == "\ufffd"
    assert decode_utf8_like_sentencepiece(b"a\xed\xa0\x80b\xf0\x9f\xa6\x99") == "a\ufffd\ufffd\ufffdb🦙"


def test_real_vocabulary_pieces_and_ids(gemma3):
    sp, py = gemma3
    assert py.vocab_size == sp.get_piece_size() == 262144
    assert (py.bos_id, py.eos_id, py.pad_id, py.unk_id) == (sp.bos_id(), sp.eos_id(), sp.pad_id(), sp.unk_id())
    assert (py.start_of_turn_id, py.end_of_turn_id) == (105, 106)
    for i in [0, 1, 2, 3, 105, 106, 107, 138, 238, 494, 1000, 236743, 255968, 262143]:
        assert py.id_to_piece(i) == sp.id_to_piece(i)
        assert py.piece_to_id(py.id_to_piece(i)) == sp.piece_to_id(sp.id_to_piece(i)) == i
    assert py.piece_to_id("not a piece") == sp.piece_to_id("not a piece") == 3


# ----- vocabularies trained by sentencepiece's own trainer -----------------------------------------


def test_trained_vocabularies_corpus(trained):
    sp, py = trained
    for text in corpus(seed=2):
        ids = sp.encode(text)
        assert py.encode(text) == ids, text
        assert py.decode(ids) == sp.decode(ids)


@slow
@given(text=texts(no_surrogates, special_bits, st.sampled_from(TEXT.split()), max_size=30))
def test_trained_vocabularies_random_text(trained, text):
    sp, py = trained
    ids = sp.encode(text)
    assert py.encode(text) == ids
    assert py.decode(ids) == sp.decode(ids)


@slow
@given(data=st.data())
def test_trained_vocabularies_decode_any_ids(trained, data):
    sp, py = trained
    ids = data.draw(st.lists(st.integers(0, sp.get_piece_size() - 1), max_size=10))
    assert py.decode(ids) == sp.decode(ids)


def test_unused_pieces_are_split_back(tmp_path):
    """Pieces typed UNUSED may be formed while merging but are never emitted: the library
    splits them back into the halves they were made from. Mark a third of a trained vocabulary
    unused and check we follow it."""
    original = train_with_sentencepiece(tmp_path, "gemma1")
    model = SentencePieceModel.from_bytes(original)
    rng = random.Random(0)
    for i, (piece, kind) in enumerate(zip(model.pieces, model.types)):
        if kind == NORMAL and len(piece) > 1 and rng.random() < 0.3:
            model.types[i] = UNUSED
    data = model.to_bytes()
    sp, py, before = spm.SentencePieceProcessor(model_proto=data), BPETokenizer(data), BPETokenizer(original)
    changed = 0
    for text in corpus(seed=3, n=200):
        ids = sp.encode(text)
        assert py.encode(text) == ids, text
        assert not any(model.types[i] == UNUSED for i in ids)  # never emitted...
        changed += ids != before.encode(text)
    assert changed > 100  # ...and the marking really changed the segmentation


# ----- minigemma's own trainer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def our_vocab() -> SentencePieceModel:
    return train_bpe(TEXT, 700, user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "\n", "  ", "   "])


def test_bpe_train_model_runs_in_sentencepiece_too(our_vocab):
    sp, py = spm.SentencePieceProcessor(model_proto=our_vocab.to_bytes()), BPETokenizer(our_vocab)
    assert len(our_vocab.pieces) == sp.get_piece_size() == 700
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    for text in corpus(seed=4, n=200):
        ids = sp.encode(text)
        assert py.encode(text) == ids, text
        if SPACE not in text:
            assert py.decode(ids) == text


def test_bpe_train_learns_gemma_like_pieces(our_vocab):
    pieces = set(our_vocab.pieces)
    assert {"\u2581the", "\u2581model", "ing"} <= pieces  # frequent words and endings
    learned = [p for p, k in zip(our_vocab.pieces, our_vocab.types) if k == NORMAL]
    assert not any(len(p) > 1 and any(c in "0123456789" for c in p) for p in learned)  # split digits
    assert {"<start_of_turn>", "\n", SPACE * 2, "<0x00>", "<0xFF>"} <= pieces
    assert train_bpe(TEXT, 700).pieces == train_bpe(TEXT, 700).pieces  # deterministic
    tok = BPETokenizer(our_vocab)
    assert [tok.id_to_piece(i) for i in tok.encode(" 2024")] == [SPACE, "2", "0", "2", "4"]


def test_bpe_train_overlaps_sentencepiece_trainer(our_vocab, tmp_path):
    """Not equal (see bpe_train's docstring), but most learned pieces agree."""
    theirs = SentencePieceModel.from_bytes(train_with_sentencepiece(tmp_path, "ref"))
    ours = {p for p, k in zip(our_vocab.pieces, our_vocab.types) if k == NORMAL and len(p) > 1}
    shared = ours & set(theirs.pieces)
    assert len(shared) / len(ours) > 0.6


def test_split_words():
    assert split_words(f"{SPACE}{SPACE}x{SPACE}={SPACE}42.") == [f"{SPACE}{SPACE}x", f"{SPACE}=", SPACE, "4", "2", "."]


def test_bpe_train_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size=300 is too small.*use at least"):
        train_bpe(TEXT, 300)


# ----- the .model reader and writer ----------------------------------------------------------------


def test_model_proto_round_trip(trained):
    sp, py = trained
    model = py.model
    assert SentencePieceModel.from_bytes(model.to_bytes()) == model
    assert model.pieces == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert model.scores == [sp.get_score(i) for i in range(sp.get_piece_size())]


def test_bad_model_files(tmp_path):
    with pytest.raises(ValueError, match="not a SentencePiece model file.*tokenizer.model"):
        BPETokenizer(b"\x0a\x85")  # a length that runs past the end
    with pytest.raises(ValueError, match="no pieces"):
        BPETokenizer(b"")
    model = train_bpe(TEXT, 700)
    model.types[model.pieces.index("<unk>")] = NORMAL
    with pytest.raises(ValueError, match="exactly one piece of type UNKNOWN"):
        BPETokenizer(model)
    model = train_bpe(TEXT, 700)
    model.normalizer_name, model.precompiled_charsmap = "nmt_nfkc", b"\x01\x02"
    with pytest.raises(ValueError, match="nmt_nfkc.*identity normalization.*backend=\"sentencepiece\""):
        BPETokenizer(model)


def test_no_sentencepiece_on_the_import_path():
    """The pure-Python backend must work where `sentencepiece` is not installed."""
    code = (
        "import sys; sys.modules['sentencepiece'] = None\n"  # any import of it now fails
        "from minigemma.tokenizer.bpe import BPETokenizer\n"
        "from minigemma.tokenizer.bpe_train import train_bpe\n"
        "tok = BPETokenizer(train_bpe(open(sys.argv[1], encoding='utf-8').read(), 600))\n"
        "assert tok.decode(tok.encode('hello  world 42')) == 'hello  world 42'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT / "assets" / "tokenizer_training_text.txt")],
                   check=True, cwd=ROOT)

"""The tokenizer built from the embedded GGUF against an independent reference (transformers),
plus the interface, the GGUF -> ModelProto conversion and the error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from minigemma.tokenizer.bpe import BPETokenizer
from minigemma.tokenizer import (
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    modelproto_from_gguf_vocab,
)

ROOT = Path(__file__).resolve().parents[1]
TRAINING_TEXT = ROOT / "assets" / "tokenizer_training_text.txt"

# Varied text, each kind on purpose: whitespace runs (user-defined pieces up to 31 spaces), tabs
# and newlines, digits (split one by one), scripts with and without spaces between words,
# emoji outside the vocabulary (byte fallback), code, and the chat markers.
VARIED = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "def square(x: int) -> int:\n    return x ** 2  # comment\n\tif x > 10:\n\t\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "Pi is 3.14159265358979; 2024-06-01 12:30:45; $1,234,567.89; 007",
    "a    b     c\n\n\n\nd\r\ne",
    " " * 31 + "thirty-one spaces, the longest whitespace piece",
    "\t\t\ttabs\tand\t\t\ttabs",
    "   leading and trailing   ",
    "日本語のテキストです。中文文本，还有标点。",
    "한국어 텍스트입니다.",
    "مرحبا بالعالم، هذا نص عربي.",
    "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "Ünïcödé: façade naïve Straße ΑΒΓ αβγ Привет мир",
    "Emoji: 🦙🤖👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nWrite a poem about tokens.<end_of_turn>\n<start_of_turn>model\nPieces, ids...<end_of_turn>\n",
    "<table><tr><td>x</td></tr></table> <h1>Title</h1>",
    "https://example.com/path?q=1&r=2#frag",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "x\u0000y\u0007z",  # control characters are not in the vocabulary: bytes
    "",
]


@pytest.fixture(scope="module")
def gemma3_model_file(tmp_path_factory) -> Path:
    """tokenizer.model built from the embedded GGUF's metadata: the file `minigemma.load` uses.

    It comes from minigemma's one-time conversion cache (built by `modelproto_from_gguf_vocab`),
    so the slow GGUF parse is shared with every other test and notebook.
    """
    from minigemma.loading import embedded_gguf_path
    from minigemma.loading.cache import converted_gguf_dir

    path = converted_gguf_dir(embedded_gguf_path(), progress=False) / "tokenizer.model"
    return path


@pytest.fixture(scope="module")
def sp_tok(gemma3_model_file) -> SentencePieceTokenizer:
    return load_tokenizer(gemma3_model_file)


@pytest.fixture(scope="module")
def hf_tok():
    """transformers' own GGUF tokenizer: an independent reading of the same metadata (slow)."""
    transformers = pytest.importorskip("transformers")
    from minigemma.loading import embedded_gguf_path

    path = embedded_gguf_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    """A 600-piece vocabulary from sentencepiece's trainer with Gemma 1's settings (fast)."""
    import sentencepiece as spm

    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.read_text(encoding="utf-8").splitlines()),
        model_prefix=str(directory / "tiny"), model_type="bpe", vocab_size=600, character_coverage=1.0,
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", minloglevel=2, num_threads=1,
    )
    return directory / "tiny.model"


# ----- the real vocabulary against transformers ----------------------------------------------


@pytest.mark.parametrize("text", VARIED)
def test_same_ids_as_transformers_gguf_tokenizer(sp_tok, hf_tok, text):
    # transformers adds <bos> by default: compare without special tokens.
    assert sp_tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)
    assert sp_tok.decode(sp_tok.encode(text)) == text


def test_bos_like_transformers_default(sp_tok, hf_tok):
    text = "<start_of_turn>user\nhi<end_of_turn>\n"
    assert sp_tok.encode(text, add_bos=True) == hf_tok(text).input_ids
    assert sp_tok.encode(text, add_bos=True)[:3] == [2, 105, 2364]


def test_gemma3_special_ids(sp_tok):
    assert sp_tok.vocab_size == 262144
    assert (sp_tok.pad_id, sp_tok.eos_id, sp_tok.bos_id, sp_tok.unk_id) == (0, 1, 2, 3)
    assert (sp_tok.start_of_turn_id, sp_tok.end_of_turn_id) == (105, 106)
    assert [sp_tok.id_to_piece(i) for i in (0, 1, 2, 3, 105, 106)] == [
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    assert sp_tok.piece_to_id("\u2581the") == sp_tok.encode(" the")[0]
    assert sp_tok.piece_to_id("no such piece here") == sp_tok.unk_id  # as sentencepiece does


def test_chat_markers_are_single_tokens_and_control_pieces_print_nothing(sp_tok):
    ids = sp_tok.encode("<start_of_turn>user\nhi<end_of_turn>\n")
    assert ids == [105, 2364, 107, 2202, 106, 107]  # 107 is the user-defined "\n"
    assert sp_tok.decode([2, *ids, 1, 0]) == "<start_of_turn>user\nhi<end_of_turn>\n"  # bos/eos/pad: ""


def test_digits_split_and_byte_fallback(sp_tok):
    assert [sp_tok.id_to_piece(i) for i in sp_tok.encode("2024")] == ["2", "0", "2", "4"]
    llama = sp_tok.encode("🦙")  # not in the vocabulary: its four UTF-8 bytes
    assert [sp_tok.id_to_piece(i) for i in llama] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    assert sp_tok.decode(llama) == "🦙"


def test_where_we_differ_from_transformers_on_purpose(sp_tok, hf_tok):
    """Two documented differences; in both we keep SentencePiece's behaviour (Gemma's own tokenizer).

    1. Control pieces typed into text: transformers matches "<bos>" as a special token; the
       SentencePiece library never produces control pieces from text.
    2. Runs of 32+ spaces: user-defined pieces are matched longest-first (31 spaces, then the
       rest); transformers rebuilds space runs as BPE merges and splits them differently.
    """
    assert hf_tok.encode("<bos>", add_special_tokens=False) == [2]
    assert 2 not in sp_tok.encode("<bos>")
    forty = " " * 40 + "x"
    pieces = [sp_tok.id_to_piece(i) for i in sp_tok.encode(forty)]
    assert pieces == ["\u2581" * 31, "\u2581" * 9, "x"]
    assert hf_tok.encode(forty, add_special_tokens=False) != sp_tok.encode(forty)


def test_python_backend_through_load_tokenizer(gemma3_model_file, sp_tok):
    py_tok = load_tokenizer(gemma3_model_file, backend="python")
    assert isinstance(py_tok, BPETokenizer)
    for text in VARIED:
        assert py_tok.encode(text) == sp_tok.encode(text)


# ----- the GGUF -> ModelProto conversion, on a small synthetic vocabulary ------------------------


def _gguf_like_vocab() -> dict:
    """The shape of Gemma's GGUF metadata, in miniature, including the three quirks."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<mask>", "\n", "  ", "   "]
    types = [3, 3, 3, 3, 3, 3, 3, 4, 4, 4]  # <unk> and the chat markers typed control, as in the GGUF
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    normal = ["\u2581t", "he", "\u2581the", "\u2581", "t", "h", "e", "a", "b", "1", "2"]
    tokens += normal
    types += [1] * len(normal)
    scores = [-1000.0] * 10 + [0.0] * 256 + [-float(i) for i in range(len(normal))]
    return dict(tokens=tokens, scores=scores, token_types=types, bos_id=2, eos_id=1, unk_id=3, pad_id=0)


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_gguf_vocab_quirks_are_undone(tmp_path, backend):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(modelproto_from_gguf_vocab(**_gguf_like_vocab()))
    tok = load_tokenizer(path, backend)
    piece = lambda ids: [tok.id_to_piece(i) for i in ids]  # noqa: E731
    # literal-space user-defined pieces became "▁▁" and match spaces in text
    assert piece(tok.encode("a  b   the")) == ["a", "\u2581\u2581", "b", "\u2581\u2581\u2581", "t", "he"]
    # the chat markers are found whole in text; <mask> (still control) is not
    assert tok.encode("<start_of_turn>\n<end_of_turn>") == [4, 7, 5]
    assert 6 not in tok.encode("<mask>")
    # <unk> is the unknown piece; 12 splits into digits; "z" falls back to its byte
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (3, 2, 1, 0)
    assert piece(tok.encode("12 z")) == ["1", "2", "\u2581", "<0x7A>"]
    assert tok.decode(tok.encode("the  12\n z")) == "the  12\n z"


def test_gguf_vocab_inconsistent_lengths():
    vocab = _gguf_like_vocab()
    vocab["scores"] = vocab["scores"][:-1]
    with pytest.raises(ValueError, match="inconsistent.*truncated"):
        modelproto_from_gguf_vocab(**vocab)
    vocab = _gguf_like_vocab()
    vocab["bos_id"] = 10**6
    with pytest.raises(ValueError, match="bos id 1000000 is outside the vocabulary"):
        modelproto_from_gguf_vocab(**vocab)


# ----- interface and errors --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_both_backends_satisfy_the_protocol(tiny_model_file, backend):
    tok = load_tokenizer(tiny_model_file, backend)
    assert isinstance(tok, Tokenizer)
    assert tok.encode("hi", add_bos=True)[0] == tok.bos_id == 2
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (4, 5)


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_decode_rejects_ids_out_of_range(tiny_model_file, backend):
    tok = load_tokenizer(tiny_model_file, backend)
    with pytest.raises(ValueError, match=r"token id 600 is out of range.*0\.\.599.*different tokenizer"):
        tok.decode([5, 600])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="out of range"):
        tok.id_to_piece(10**9)


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_decode_accepts_tensors_and_numpy_ints(tiny_model_file, backend):
    np = pytest.importorskip("numpy")
    tok = load_tokenizer(tiny_model_file, backend)
    ids = tok.encode("tokens, pieces, ids")
    assert tok.decode(np.array(ids)) == "tokens, pieces, ids"
    torch = pytest.importorskip("torch")
    assert tok.decode(torch.tensor(ids)) == "tokens, pieces, ids"


def test_unknown_backend_lists_the_choices(tiny_model_file):
    with pytest.raises(ValueError, match="unknown tokenizer backend 'rust'.*'sentencepiece'.*'python'"):
        load_tokenizer(tiny_model_file, backend="rust")


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_corrupt_model_file(tmp_path, backend):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\x0a\xff\xff\xff\x0fnot a protobuf at all")
    with pytest.raises(ValueError, match="not a SentencePiece model file.*tokenizer.model"):
        load_tokenizer(path, backend)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="no pieces"):
        load_tokenizer(path, backend)


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
def test_unigram_model_is_refused(tmp_path, backend):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.read_text(encoding="utf-8").splitlines()),
        model_prefix=str(tmp_path / "uni"), model_type="unigram", vocab_size=300, minloglevel=2, num_threads=1)
    with pytest.raises(ValueError, match="UNIGRAM model; minigemma's tokenizers implement BPE.*Gemma"):
        load_tokenizer(tmp_path / "uni.model", backend)


def test_gguf_file_instead_of_tokenizer_model(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(ValueError, match="GGUF checkpoint, not a tokenizer.model.*tokenizer_model_from_gguf"):
        load_tokenizer(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer model at"):
        load_tokenizer(tmp_path / "nope.model")


def test_vocabulary_without_chat_markers(tmp_path):
    vocab = _gguf_like_vocab()
    vocab["tokens"][4:6] = ["<x1>", "<x2>"]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(modelproto_from_gguf_vocab(**vocab))
    for backend in ("sentencepiece", "python"):
        tok = load_tokenizer(path, backend)
        with pytest.raises(ValueError, match="no <start_of_turn> piece"):
            tok.start_of_turn_id
        assert getattr(tok, "end_of_turn_id", None) is None  # the error is an AttributeError too
        isinstance(tok, Tokenizer)  # answers (False on Python 3.11, True on 3.12+) instead of raising


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
@pytest.mark.parametrize("text", ["caf\udce9", "\ud800x"])  # an undecodable byte kept by surrogateescape; half a pair
def test_encode_refuses_text_that_is_not_utf8(tiny_model_file, backend, text):
    """Before: sentencepiece's C++ raised a cryptic cast error (the Python backend a UnicodeEncodeError)."""
    from minigemma.errors import ArgumentError

    tok = load_tokenizer(tiny_model_file, backend)
    with pytest.raises(ArgumentError, match="the text to encode is not valid text: character"):
        tok.encode(text)


@pytest.mark.parametrize("backend", ["sentencepiece", "python"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_tokenizer_model_is_a_checkpoint_error(tiny_model_file, tmp_path, backend, damage):
    """Before: sentencepiece's own RuntimeError/ValueError, naming no file and no fix."""
    from minigemma.errors import CheckpointError

    data = tiny_model_file.read_bytes()
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": bytes(range(256)) * 8}[damage])
    with pytest.raises(CheckpointError, match="is not a readable SentencePiece tokenizer.model"):
        load_tokenizer(bad, backend)


def test_unknown_backend_fails_before_any_weights_are_read():
    import minigemma
    from minigemma.errors import ArgumentError

    with pytest.raises(ArgumentError, match="unknown tokenizer backend 'rust'"):
        minigemma.load("gemma3-270m", tokenizer="rust")

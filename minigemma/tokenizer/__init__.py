"""Text <-> token ids: the interface, and the implementation backed by the `sentencepiece` library.

Gemma tokenizes with SentencePiece (Kudo and Richardson, 2018) in its BPE mode. The Gemma report
(pre-training section) lists the choices that matter here: split digits, preserved whitespace
and byte-level fallback for unknown characters; Gemma 1 uses 256k entries (a large vocabulary
because the tokenizer serves many languages), Gemma 3 262k (Gemini 2.0's tokenizer).

Two implementations follow one `Tokenizer` protocol:

- `SentencePieceTokenizer` (this file): Google's C++ library; the reference and the fast path.
- `minigemma.tokenizer.bpe.BPETokenizer`: the same algorithm written out in Python to be read; same ids.

Both read a SentencePiece `tokenizer.model` file, the single entry point (`load_tokenizer`).
Checkpoints in the GGUF format carry no such file, only the vocabulary as metadata:
`modelproto_from_gguf_vocab` turns that metadata back into a model file.

Nothing here imports `sentencepiece` at module level, so `minigemma.tokenizer.bpe` and everything else
work on machines without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

# Piece types (GGUF's `tokenizer.ggml.token_type` uses SentencePiece's numbers), the "▁", and
# what both tokenizers share.
# minigemma.tokenizer.bpe is pure Python: importing from it does not pull in sentencepiece.
from .bpe import BYTE, SPACE, UNKNOWN, USER_DEFINED, TurnMarkers, check_bpe_kind, not_a_model_file
from ..errors import ArgumentError, CheckpointError, ModelNotFoundError

BACKENDS = ("sentencepiece", "python")

# Pieces that Gemma's GGUF files type as "control" (llama.cpp's converter marks every special
# token so) although the original tokenizer finds them in text: the chat turn markers. They must
# be user-defined, or "<start_of_turn>" typed in a prompt would be cut into "<", "start", ...
CHAT_PIECES = ("<start_of_turn>", "<end_of_turn>")


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of minigemma needs from a tokenizer.

    `encode` never adds BOS unless asked (`generate` adds it: Gemma needs it). `decode` follows
    SentencePiece: control tokens (<bos>, <eos>, <pad>, <mask>, <unusedN>) print nothing,
    user-defined ones (<start_of_turn>, runs of spaces) print their text, <unk> prints " ⁇ ".
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def id_to_piece(self, i: int) -> str: ...

    def piece_to_id(self, p: str) -> int: ...

    @property
    def start_of_turn_id(self) -> int: ...  # 106 in Gemma 1, 105 in Gemma 3

    @property
    def end_of_turn_id(self) -> int: ...  # 107 in Gemma 1, 106 in Gemma 3

    # Both raise MissingPieceError (a ValueError and an AttributeError) if the vocabulary has
    # no such piece, so getattr(tok, "end_of_turn_id", None) gives None for non-chat vocabularies.


def check_text(text: str, what: str = "the prompt") -> None:
    """Raise ArgumentError unless `text` is a str that can be written as UTF-8.

    Python keeps bytes it could not decode (a prompt typed in a Latin-1 terminal, say) as lone
    "surrogate" characters, U+DC80 to U+DCFF; no tokenizer can encode them. We refuse them
    rather than guess which characters were meant.
    """
    if not isinstance(text, str):
        raise ArgumentError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        if 0xDC80 <= bad <= 0xDCFF:
            found = f"the byte 0x{bad - 0xDC00:02x}, which is not UTF-8"
        else:
            found = f"U+{bad:04X}, half of a UTF-16 surrogate pair"
        raise ArgumentError(f"{what} is not valid text: character {err.start} is {found}; "
                            "send UTF-8 (check the terminal's or the file's encoding)") from None


class SentencePieceTokenizer(TurnMarkers):
    """`Tokenizer` on top of `sentencepiece.SentencePieceProcessor` (a `.model` path or its bytes)."""

    def __init__(self, model: str | Path | bytes) -> None:
        import sentencepiece  # imported here so that the rest of minigemma does not need it

        data, source = (model, "the given bytes") if isinstance(model, bytes) else (Path(model).read_bytes(), str(model))
        _check_bpe_model(data, source)
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=data)
        except RuntimeError as err:  # the library reports broken vocabularies this way
            raise ValueError(f"sentencepiece cannot load {source}: {err}. Rebuild the model file.") from None
        self.vocab_size: int = self._sp.get_piece_size()
        self.bos_id: int = self._sp.bos_id()
        self.eos_id: int = self._sp.eos_id()
        self.pad_id: int = self._sp.pad_id()
        self.unk_id: int = self._sp.unk_id()

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        check_text(text, "the text to encode")  # sentencepiece's C++ would fail with a cryptic cast error
        ids = self._sp.encode(text)
        return [self.bos_id, *ids] if add_bos else ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(_checked_ids(ids, self.vocab_size))

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(_checked_ids([i], self.vocab_size)[0])

    def piece_to_id(self, p: str) -> int:
        return self._sp.piece_to_id(p)  # unknown strings give unk_id, as in the library

    def _find_piece(self, piece: str) -> int | None:
        i = self._sp.piece_to_id(piece)
        return i if self._sp.id_to_piece(i) == piece else None  # the library answers unk_id for missing pieces

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def load_tokenizer(model_file: str | Path, backend: str = "sentencepiece") -> Tokenizer:
    """Open a SentencePiece `tokenizer.model` with the chosen backend.

    backend: "sentencepiece" (the C++ library, fast) or "python" (`minigemma.tokenizer.bpe`, pure Python,
    the same ids; slower, but every step can be read and stepped through).
    """
    if backend not in BACKENDS:
        raise ArgumentError(
            f"unknown tokenizer backend {backend!r}; choose 'sentencepiece' (the C++ library) "
            "or 'python' (minigemma.tokenizer.bpe, pure Python, same ids)"
        )
    path = Path(model_file)
    if not path.is_file():
        raise ModelNotFoundError(f"no tokenizer model at {path}; expected a SentencePiece tokenizer.model file")
    with path.open("rb") as f:
        if f.read(4) == b"GGUF":
            raise CheckpointError(
                f"{path} is a GGUF checkpoint, not a tokenizer.model. Build one from it with "
                "minigemma.tokenizer.tokenizer_model_from_gguf(path) (minigemma.load does this for you)."
            )
    try:
        if backend == "python":
            from .bpe import BPETokenizer

            return BPETokenizer(path)
        return SentencePieceTokenizer(path)
    except (RuntimeError, ValueError, OSError, IndexError, KeyError) as e:  # the library's and our parser's
        raise CheckpointError(f"{path} is not a readable SentencePiece tokenizer.model ({type(e).__name__}: {e}); "
                              "the file is truncated or corrupt: copy the tokenizer.model that came with the "
                              "weights again") from e


# --------------------------------------------------------------------------------------------
# GGUF metadata -> SentencePiece model file
# --------------------------------------------------------------------------------------------


def modelproto_from_gguf_vocab(
    tokens: Sequence[str],
    scores: Sequence[float],
    token_types: Sequence[int],
    *,
    bos_id: int,
    eos_id: int,
    unk_id: int,
    pad_id: int,
    add_dummy_prefix: bool = False,
    chat_pieces: Sequence[str] = CHAT_PIECES,
) -> bytes:
    """Rebuild a SentencePiece BPE ModelProto (serialized) from a GGUF's tokenizer metadata.

    The GGUF keeps every piece, score and type, but three details were changed on the way in
    by llama.cpp's converter and are undone here so that `sentencepiece` tokenizes like Gemma:

    1. user-defined pieces had their "▁" written back as plain spaces ("  " for the two-space
       piece); the library matches pieces *after* turning spaces into "▁", so we write "▁" again;
    2. the chat markers `chat_pieces` were typed control, which the library never matches in
       text; they become user-defined, as in Gemma's own tokenizer;
    3. `<unk>` was typed control too; the library requires exactly one piece typed unknown.

    The normalizer is Gemma's: no Unicode normalization ("identity"), spaces kept and escaped
    as "▁", no extra space in front (`add_dummy_prefix`, GGUF's `add_space_prefix`).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb  # the official schema

    if not len(tokens) == len(scores) == len(token_types):
        raise ValueError(
            f"GGUF tokenizer metadata is inconsistent: {len(tokens)} tokens, {len(scores)} scores, "
            f"{len(token_types)} types; the file may be truncated"
        )
    for name, i in (("bos", bos_id), ("eos", eos_id), ("unk", unk_id), ("pad", pad_id)):
        if not 0 <= i < len(tokens):
            raise ValueError(f"GGUF {name} id {i} is outside the vocabulary (0..{len(tokens) - 1})")

    proto = pb.ModelProto()
    for i, (token, score, kind) in enumerate(zip(tokens, scores, token_types)):
        kind = int(kind)
        if i == unk_id:
            kind = UNKNOWN
        elif token in chat_pieces:
            kind = USER_DEFINED
        if kind == USER_DEFINED:
            token = token.replace(" ", SPACE)
        proto.pieces.add(piece=token, score=float(score), type=kind)

    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = BYTE in token_types
    # Training-time settings: encoding never reads them, they document how Gemma was trained.
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = unk_id, bos_id, eos_id, pad_id
    # The library finds bos/eos/pad/unk ids by these names (its defaults are "<s>", "</s>"...).
    spec.unk_piece, spec.bos_piece = tokens[unk_id], tokens[bos_id]
    spec.eos_piece, spec.pad_piece = tokens[eos_id], tokens[pad_id]

    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = add_dummy_prefix
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto.SerializeToString()


def tokenizer_model_from_gguf(gguf_path: str | Path) -> bytes:
    """Read a GGUF file's tokenizer metadata and return an equivalent `tokenizer.model` (bytes).

    Opening a GGUF with `gguf.GGUFReader` parses all of its metadata in Python, which takes
    seconds for a 262k vocabulary: callers should cache the result (minigemma.load does).
    """
    from gguf import GGUFReader

    return tokenizer_model_from_gguf_fields(GGUFReader(str(gguf_path)).fields, str(gguf_path))


def tokenizer_model_from_gguf_fields(fields: dict, source: str = "the GGUF file") -> bytes:
    """The same, from the metadata of an already opened `GGUFReader` (`reader.fields`)."""

    def value(key: str) -> object:
        if key not in fields:
            raise ValueError(f"{source} has no {key} metadata; it carries no SentencePiece vocabulary")
        return fields[key].contents()

    kind = value("tokenizer.ggml.model")
    if kind != "llama":  # llama.cpp's name for a SentencePiece vocabulary
        raise ValueError(f"{source} holds a {kind!r} tokenizer; only SentencePiece ('llama') ones are supported")
    add_prefix = fields["tokenizer.ggml.add_space_prefix"].contents() if "tokenizer.ggml.add_space_prefix" in fields else False
    return modelproto_from_gguf_vocab(
        value("tokenizer.ggml.tokens"),
        value("tokenizer.ggml.scores"),
        value("tokenizer.ggml.token_type"),
        bos_id=value("tokenizer.ggml.bos_token_id"),
        eos_id=value("tokenizer.ggml.eos_token_id"),
        unk_id=value("tokenizer.ggml.unknown_token_id"),
        pad_id=value("tokenizer.ggml.padding_token_id"),
        add_dummy_prefix=bool(add_prefix),
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _checked_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """Plain ints (numpy/torch scalars welcome), all in range, or a ValueError that says why."""
    out = [int(i) for i in ids]
    for i in out:
        if not 0 <= i < vocab_size:
            raise ValueError(
                f"token id {i} is out of range: this vocabulary has ids 0..{vocab_size - 1}. "
                "Were the ids made by a different tokenizer or model (e.g. logits over a padded vocabulary)?"
            )
    return out


def _check_bpe_model(data: bytes, source: str) -> None:
    """A clear error for files that are not SentencePiece BPE models (before the library's)."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as pb

    try:
        proto = pb.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise not_a_model_file(source, err) from None
    check_bpe_kind(source, len(proto.pieces), pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type))

"""A from-scratch, pure-Python SentencePiece BPE tokenizer (Gemma's kind).

Gemma's tokenizer is a SentencePiece model (Kudo and Richardson, 2018) of type BPE, taken from
Gemini's, with digits split, whitespace preserved and byte-level fallback for unknown
characters (Gemma report, pre-training section). This module re-implements exactly what the
`sentencepiece` library does with such a model, so that both give identical ids, in four steps:

1. read the `.model` file: a protobuf message, parsed here by hand (the wire format is tiny);
2. normalize: spaces become "▁" (U+2581), nothing else changes for Gemma;
3. split: user-defined pieces (`<start_of_turn>`, runs of spaces or newlines, ...) are cut out
   first, whole, by longest match; everything else starts as one symbol per character;
4. merge: repeatedly join the adjacent pair whose joined string is the vocabulary piece with the
   highest score (ties: the leftmost pair), with a heap and a linked list of symbols;
   characters left that are not in the vocabulary fall back to their UTF-8 bytes `<0x..>`.

Nothing here imports `sentencepiece`: the library is only used by the tests, as the referee.
`BPETokenizer` satisfies `minigemma.tokenizer.Tokenizer` structurally (a Protocol), so this module
does not even import that one.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------------
# 1. The .model file: protobuf wire format, by hand
# --------------------------------------------------------------------------------------------
# A protobuf message is a flat list of (key, value) records. The key is a varint holding
# `field_number << 3 | wire_type`. We need three wire types: 0 = varint (ints, bools, enums),
# 2 = length-delimited (strings, bytes, nested messages), 5 = 4-byte little-endian (float).
# Field numbers below come from sentencepiece's `sentencepiece_model.proto` (ModelProto).

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# Piece types (ModelProto.SentencePiece.Type). GGUF files use the very same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Model types (TrainerSpec.ModelType).
MODEL_TYPES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}
BPE = 2

SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside pieces


class MissingPieceError(ValueError, AttributeError):
    """The vocabulary lacks a piece asked for by name (e.g. <start_of_turn> in a non-chat one).

    Also an AttributeError so that `getattr(tok, "start_of_turn_id", None)` and `hasattr` work,
    and so that `isinstance(tok, Tokenizer)` answers instead of raising on Python 3.11.
    """


class TurnMarkers:
    """The chat turn markers' ids, for a tokenizer whose `_find_piece` gives a piece's id or None.

    Here rather than in tokenizer.py, which imports this module, so both tokenizers share it.
    """

    @property
    def start_of_turn_id(self) -> int:
        return self._required_piece("<start_of_turn>")

    @property
    def end_of_turn_id(self) -> int:
        return self._required_piece("<end_of_turn>")

    def _required_piece(self, piece: str) -> int:
        i = self._find_piece(piece)
        if i is None:
            raise MissingPieceError(f"this vocabulary has no {piece} piece; chat formatting needs a Gemma vocabulary")
        return i


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`: 7 bits per byte, low bits first, high bit = 'more'."""
    byte = buf[pos]
    if byte < 0x80:  # fast path: most keys, lengths and enums fit in one byte
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field_number, wire_type, value) for every record of one message."""
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = _read_varint(buf, pos)
            wire = key & 7
            if wire == _VARINT:
                value, pos = _read_varint(buf, pos)
            elif wire == _LEN:
                size, pos = _read_varint(buf, pos)
                value, pos = buf[pos : pos + size], pos + size
            elif wire == _FIXED32:
                value, pos = buf[pos : pos + 4], pos + 4
            elif wire == _FIXED64:
                value, pos = buf[pos : pos + 8], pos + 8
            else:  # 3 and 4 are the long-deprecated "groups"; anything else is garbage
                raise ValueError(f"unsupported wire type {wire}")
            if pos > end:
                raise ValueError("truncated field")
            yield key >> 3, wire, value
    except IndexError:  # a varint ran past the end of the buffer
        raise ValueError("truncated varint") from None


def _write_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _write_field(number: int, value: int | float | str | bytes | bool) -> bytes:
    """One record; the Python type picks the wire type (float -> 4-byte float)."""
    if isinstance(value, float):
        return _write_varint(number << 3 | _FIXED32) + struct.pack("<f", value)
    if isinstance(value, (bool, int)):
        return _write_varint(number << 3 | _VARINT) + _write_varint(int(value))
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _write_varint(number << 3 | _LEN) + _write_varint(len(data)) + data


@dataclass
class SentencePieceModel:
    """The parts of a SentencePiece ModelProto that encoding and decoding depend on.

    Defaults are protobuf's defaults for the fields (so a file that leaves a field out reads
    the way the library reads it); Gemma's files override most of them.
    """

    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: int = 1  # UNIGRAM is the proto default; Gemma is BPE (2)
    byte_fallback: bool = False
    split_digits: bool = False  # a training option: encoding never looks at it (see merge)
    allow_whitespace_only_pieces: bool = False  # also training only
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    unk_surface: str = " \u2047 "  # what decode prints for <unk>: " ⁇ "
    treat_whitespace_as_suffix: bool = False
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    denormalizer_charsmap: bytes = b""

    @classmethod
    def from_bytes(cls, data: bytes) -> SentencePieceModel:
        """Parse a serialized ModelProto (the content of a `tokenizer.model` file)."""
        model = cls(pieces=[], scores=[], types=[])
        for number, wire, value in _fields(data):
            if number == 1 and wire == _LEN:  # repeated SentencePiece pieces
                piece, score, kind = "", 0.0, NORMAL
                for n, w, v in _fields(value):
                    if n == 1 and w == _LEN:
                        piece = v.decode("utf-8")
                    elif n == 2 and w == _FIXED32:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3 and w == _VARINT:
                        kind = v
                model.pieces.append(piece)
                model.scores.append(score)
                model.types.append(kind)
            elif number == 2 and wire == _LEN:  # TrainerSpec
                model._read_trainer_spec(value)
            elif number == 3 and wire == _LEN:  # NormalizerSpec
                model._read_normalizer_spec(value)
            elif number == 5 and wire == _LEN:  # denormalizer NormalizerSpec
                for n, w, v in _fields(value):
                    if n == 2 and w == _LEN:
                        model.denormalizer_charsmap = v
        return model

    def _read_trainer_spec(self, data: bytes) -> None:
        for n, w, v in _fields(data):
            if w == _VARINT:
                if n == 3:
                    self.model_type = v
                elif n == 35:
                    self.byte_fallback = bool(v)
                elif n == 25:
                    self.split_digits = bool(v)
                elif n == 26:
                    self.allow_whitespace_only_pieces = bool(v)
                elif n == 24:
                    self.treat_whitespace_as_suffix = bool(v)
            elif w == _LEN and n in (44, 45, 46, 47, 48):
                text = v.decode("utf-8")
                if n == 44:
                    self.unk_surface = text
                elif text:  # an empty *_piece means "use the default name"
                    name = {45: "unk_piece", 46: "bos_piece", 47: "eos_piece", 48: "pad_piece"}[n]
                    setattr(self, name, text)

    def _read_normalizer_spec(self, data: bytes) -> None:
        for n, w, v in _fields(data):
            if n == 1 and w == _LEN:
                self.normalizer_name = v.decode("utf-8")
            elif n == 2 and w == _LEN:
                self.precompiled_charsmap = v
            elif n == 3 and w == _VARINT:
                self.add_dummy_prefix = bool(v)
            elif n == 4 and w == _VARINT:
                self.remove_extra_whitespaces = bool(v)
            elif n == 5 and w == _VARINT:
                self.escape_whitespaces = bool(v)

    def to_bytes(self) -> bytes:
        """Serialize to a ModelProto that `sentencepiece` loads (used by `bpe_train`)."""
        out = bytearray()
        for piece, score, kind in zip(self.pieces, self.scores, self.types, strict=True):
            body = _write_field(1, piece) + _write_field(2, float(score)) + _write_field(3, kind)
            out += _write_field(1, body)

        def index(name: str) -> int:
            return self.pieces.index(name) if name in self.pieces else -1

        trainer = b"".join(
            [
                _write_field(3, self.model_type),
                _write_field(4, len(self.pieces)),  # vocab_size
                _write_field(35, self.byte_fallback),
                _write_field(25, self.split_digits),
                _write_field(26, self.allow_whitespace_only_pieces),
                _write_field(24, self.treat_whitespace_as_suffix),
                _write_field(44, self.unk_surface),
                _write_field(45, self.unk_piece),
                _write_field(46, self.bos_piece),
                _write_field(47, self.eos_piece),
                _write_field(48, self.pad_piece),
                # The *_id fields only matter to the trainer, but tools print them: keep them true.
                _write_field(40, index(self.unk_piece)),
                _write_field(41, index(self.bos_piece)),
                _write_field(42, index(self.eos_piece)),
                _write_field(43, index(self.pad_piece)),
            ]
        )
        normalizer = b"".join(
            [
                _write_field(1, self.normalizer_name),
                _write_field(2, self.precompiled_charsmap),
                _write_field(3, self.add_dummy_prefix),
                _write_field(4, self.remove_extra_whitespaces),
                _write_field(5, self.escape_whitespaces),
            ]
        )
        out += _write_field(2, trainer) + _write_field(3, normalizer)
        return bytes(out)


def byte_piece(b: int) -> str:
    """The piece that stands for one raw byte under byte fallback: 0x41 -> "<0x41>"."""
    return f"<0x{b:02X}>"


_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")


def decode_utf8_like_sentencepiece(data: bytes) -> str:
    """Bytes -> text the way SentencePiece decodes a run of byte pieces.

    Valid UTF-8 characters are kept; every byte that does not start a valid character becomes
    one U+FFFD. (Python's `errors="replace"` differs: it folds a truncated multi-byte sequence
    such as b"\\xe2\\x82" into a single U+FFFD, where SentencePiece writes one per byte.)
    """
    try:
        return data.decode("utf-8")  # the common case: nothing invalid
    except UnicodeDecodeError:
        pass
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        # The lead byte announces the length: 0xxxxxxx 1, 110xxxxx 2, 1110xxxx 3, 11110xxx 4.
        size = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4 if lead >> 3 == 30 else 0
        if size:
            try:  # strict decoding also rejects overlong forms, surrogates and > U+10FFFF
                out.append(data[i : i + size].decode("utf-8"))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# 2-4. The tokenizer
# --------------------------------------------------------------------------------------------


class BPETokenizer(TurnMarkers):
    """SentencePiece-BPE encode/decode in pure Python, id-for-id equal to the library.

    Build it from a `.model` path, its bytes, or a `SentencePieceModel` (e.g. from `bpe_train`).
    `cache_size`: how many words' ids to remember (0: none, to time the bare merge loop).
    """

    def __init__(self, model: str | Path | bytes | SentencePieceModel, cache_size: int = 100_000) -> None:
        if isinstance(model, SentencePieceModel):
            spec, source = model, "the given SentencePieceModel"
        else:
            data, source = (model, "the given bytes") if isinstance(model, bytes) else (Path(model).read_bytes(), str(model))
            try:
                spec = SentencePieceModel.from_bytes(data)
            except (ValueError, UnicodeDecodeError, struct.error) as err:
                raise not_a_model_file(source, err) from None
        _validate(spec, source)
        self.model = spec
        self._pieces = spec.pieces
        self._scores = spec.scores
        self._types = spec.types
        # Two lookup tables, as in the library: pieces a merge may produce (normal, user-defined,
        # unused) and "reserved" ones (control, unknown, byte) that only an id can name.
        mergeable_types = {NORMAL, USER_DEFINED, UNUSED}
        numbered = list(enumerate(zip(spec.pieces, spec.types)))
        self._mergeable = {piece: i for i, (piece, kind) in numbered if kind in mergeable_types}
        self._reserved = {piece: i for i, (piece, kind) in numbered if kind not in mergeable_types}
        self.unk_id: int = spec.types.index(UNKNOWN)
        self.vocab_size: int = len(spec.pieces)
        # bos/eos/pad are found by their names in the TrainerSpec, and count only if typed
        # control (the library returns -1 otherwise): Gemma's are <bos>, <eos>, <pad>.
        self.bos_id: int = self._control_id(spec.bos_piece)
        self.eos_id: int = self._control_id(spec.eos_piece)
        self.pad_id: int = self._control_id(spec.pad_piece)
        self._byte_ids = [self._reserved.get(byte_piece(b), -1) for b in range(256)]
        self._has_unused = UNUSED in spec.types

        # User-defined pieces are matched before BPE, longest first. A regex alternation tries
        # its branches in order, so sorting them longest-first makes it a longest-match.
        user_defined = sorted((p for p, k in zip(spec.pieces, spec.types) if k == USER_DEFINED), key=len, reverse=True)
        self._user_defined_re = re.compile("|".join(map(re.escape, user_defined))) if user_defined else None

        # Word cache. A merge can only cross the boundary between characters a|b if some
        # mergeable piece contains "ab". In Gemma's vocabulary "▁" (a space) appears inside a
        # piece only after ">" (in ">▁</"), so cutting the text before every "▁" that does not
        # follow one of those characters never separates anything BPE would join: each "word"
        # can be encoded alone, and its ids cached. We compute that set for any vocabulary.
        glue = {p[i - 1] for p in self._mergeable if p.find(SPACE, 1) > 0 for i in range(1, len(p)) if p[i] == SPACE}
        lookbehind = "(?<![" + "".join(re.escape(c) for c in sorted(glue)) + "])" if glue else ""
        self._word_start_re = re.compile(lookbehind + SPACE)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size

    # ----- the Tokenizer protocol ------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> ids, exactly as `sentencepiece.SentencePieceProcessor.encode`. No BOS unless asked."""
        from . import check_text  # (tokenizer.py imports this module)

        check_text(text, "the text to encode")  # the same clear error as the library backend
        ids = [self.bos_id] if add_bos else []
        normalized = self.normalize(text)
        if self._has_unused:
            # Unused pieces are split back after merging using a table that every pair
            # *considered* during the whole text may overwrite; to reproduce that exactly we
            # run one merge loop over the whole text (no word cache).
            symbols: list[str] = []
            frozen: list[bool] = []
            for segment, is_user_defined in self.segments(normalized):
                chars = [segment] if is_user_defined else list(segment)
                symbols += chars
                frozen += [is_user_defined] * len(chars)
            ids += self._pieces_to_ids(self.merge(symbols, frozen))
        else:
            for segment, is_user_defined in self.segments(normalized):
                if is_user_defined:
                    ids.append(self._mergeable[segment])
                    continue
                for word in self._words(segment):
                    cached = self._cache.get(word)
                    if cached is None:
                        cached = tuple(self._pieces_to_ids(self.merge(list(word))))
                        if self._cache_size:
                            if len(self._cache) >= self._cache_size:  # bound memory on endless streams
                                self._cache.clear()
                            self._cache[word] = cached
                    ids += cached
        if not self.model.byte_fallback:
            # Without byte fallback the library reports a run of unknown characters as one <unk>.
            ids = [i for n, i in enumerate(ids) if not (i == self.unk_id and n and ids[n - 1] == self.unk_id)]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, exactly as `sentencepiece.SentencePieceProcessor.decode`.

        Control pieces (<bos>, <eos>, <pad>, <mask>, <unusedN>...) print nothing; user-defined
        ones (<start_of_turn>, runs of spaces...) print their text; <unk> prints " ⁇ "; a run of
        byte pieces is joined and read as UTF-8, each invalid byte becoming U+FFFD.
        """
        out: list[str] = []
        pending = bytearray()  # consecutive byte pieces, decoded together at the next text piece
        # A leading "▁" is dropped from the first text piece only when encoding may have added
        # it (dummy prefix) or collapsed spaces; never for Gemma. The bookkeeping mirrors the
        # library: the hunt stops once some text was printed or a "▁" was dropped.
        strip_prefix = self.model.add_dummy_prefix or self.model.remove_extra_whitespaces
        at_start, dropped_space, has_text = True, False, False
        for i in ids:
            i = int(i)  # accept numpy / torch integers too
            self._check_id(i)
            kind = self._types[i]
            if kind == BYTE:
                pending.append(int(self._pieces[i][3:5], 16))  # "<0x41>" -> 0x41
                continue
            if pending:
                out.append(decode_utf8_like_sentencepiece(bytes(pending)))
                pending.clear()
                has_text = True
            if dropped_space or has_text:
                at_start = False
            dropped_space = False
            if kind == CONTROL:
                text = ""
            elif kind == UNKNOWN:
                text = self.model.unk_surface
            else:
                piece = self._pieces[i]
                if at_start and strip_prefix and piece.startswith(SPACE):
                    piece = piece[1:]
                    dropped_space = not self.model.remove_extra_whitespaces
                text = piece.replace(SPACE, " ")
            out.append(text)
            has_text = has_text or bool(text)
        if pending:
            out.append(decode_utf8_like_sentencepiece(bytes(pending)))
        return "".join(out)

    def id_to_piece(self, i: int) -> str:
        self._check_id(i)
        return self._pieces[i]

    def piece_to_id(self, p: str) -> int:
        """Like the library: reserved pieces first, then the rest, unknown strings -> unk_id."""
        return self._reserved.get(p, self._mergeable.get(p, self.unk_id))

    # ----- step 2: normalization -------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """Gemma: only " " -> "▁". Other models may also trim spaces or add a leading "▁"."""
        spec = self.model
        if spec.remove_extra_whitespaces:  # strip both ends, collapse inner runs of " "
            text = " ".join(part for part in text.split(" ") if part)
        if not text:
            return ""
        if spec.escape_whitespaces:
            text = text.replace(" ", SPACE)
        if spec.add_dummy_prefix:  # so "world" alone and in "hello world" look alike: "▁world"
            text = (SPACE if spec.escape_whitespaces else " ") + text
        if spec.remove_extra_whitespaces:
            text = text.rstrip(SPACE if spec.escape_whitespaces else " ")
        return text

    # ----- step 3: user-defined pieces first, then words ---------------------------------------

    def segments(self, text: str) -> Iterator[tuple[str, bool]]:
        """Yield (text, is_user_defined) in order: user-defined pieces whole, the gaps between them."""
        pos = 0
        if self._user_defined_re is not None:
            for match in self._user_defined_re.finditer(text):
                if match.start() > pos:
                    yield text[pos : match.start()], False
                yield match.group(), True
                pos = match.end()
        if pos < len(text):
            yield text[pos:], False

    def _words(self, text: str) -> list[str]:
        """Cut before each "▁" where no piece could glue across (see the word cache note)."""
        starts = [0, *(m.start() for m in self._word_start_re.finditer(text) if m.start() > 0), len(text)]
        return [text[a:b] for a, b in zip(starts, starts[1:])]

    # ----- step 4: the merge loop -----------------------------------------------------------

    def merge(
        self, symbols: list[str], frozen: list[bool] | None = None, trace: list[tuple[str, str, float]] | None = None
    ) -> list[str]:
        """BPE as the library runs it: best-scoring adjacent pair first, leftmost on ties.

        Symbols live in a doubly linked list (`prev`/`nxt` indices) so a merge costs O(log n)
        instead of rebuilding the list; candidate pairs wait in a heap keyed by
        (-score, left index). A merged pair keeps the left slot and empties the right one.
        (Rescanning all pairs after each merge would be O(n^2); the SentencePiece paper,
        section 3.2, describes this heap-based O(n log n) version.)
        Note there is no separate "merge rules" table: a pair may join if and only if the
        joined string is itself a normal, user-defined or unused piece, and its score decides
        when. (Digits come out one by one simply because the vocabulary has no multi-digit
        ASCII pieces: `split_digits` was applied when the vocabulary was *trained*.)
        `frozen` marks user-defined pieces (never merged); `trace`, if given, receives every
        merge as (left, right, score), in order.
        """
        n = len(symbols)
        frozen = frozen or [False] * n
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        symbols = list(symbols)  # merged in place: leave the caller's list alone
        heap: list[tuple[float, int, int, str]] = []
        rev_merge: dict[str, tuple[str, str]] = {}  # unused piece -> the two halves it came from
        mergeable, scores, types = self._mergeable, self._scores, self._types

        def consider(left: int, right: int) -> None:
            if left < 0 or right < 0 or frozen[left] or frozen[right]:
                return  # user-defined pieces never merge with their neighbours
            joined = symbols[left] + symbols[right]
            piece_id = mergeable.get(joined)
            if piece_id is None:
                return
            heapq.heappush(heap, (-scores[piece_id], left, right, joined))
            if types[piece_id] == UNUSED:
                rev_merge[joined] = (symbols[left], symbols[right])

        for i in range(n - 1):
            consider(i, i + 1)
        while heap:
            score, left, right, joined = heapq.heappop(heap)
            # Stale entry? Symbols only grow (left slot) or empty out (right slot), so the pair
            # is still current exactly when both are non-empty and still add up to `joined`.
            a, b = symbols[left], symbols[right]
            if not a or not b or len(a) + len(b) != len(joined):
                continue
            if trace is not None:
                trace.append((a, b, -score))
            symbols[left], symbols[right] = joined, ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            consider(prev[left], left)
            consider(left, nxt[left])

        result: list[str] = []
        i = 0 if n else -1
        while i >= 0:
            self._resegment(symbols[i], rev_merge, result)
            i = nxt[i]
        return result

    def _resegment(self, piece: str, rev_merge: dict[str, tuple[str, str]], out: list[str]) -> None:
        """An *unused* piece may be built while merging but is never emitted: split it back."""
        if piece in rev_merge and self._types[self.piece_to_id(piece)] == UNUSED:
            left, right = rev_merge[piece]
            self._resegment(left, rev_merge, out)
            self._resegment(right, rev_merge, out)
        else:
            out.append(piece)

    def _pieces_to_ids(self, pieces: list[str]) -> list[int]:
        """Pieces -> ids; with byte fallback an unknown character becomes its UTF-8 bytes."""
        ids = []
        for piece in pieces:
            i = self.piece_to_id(piece)
            if i == self.unk_id and self.model.byte_fallback:
                ids += [self._byte_ids[b] for b in piece.encode("utf-8")]
            else:
                ids.append(i)
        return ids

    # ----- helpers ----------------------------------------------------------------------------

    def _check_id(self, i: int) -> None:
        if not 0 <= i < self.vocab_size:
            raise ValueError(
                f"token id {i} is out of range: this vocabulary has ids 0..{self.vocab_size - 1}. "
                "Were the ids made by a different tokenizer or model (e.g. logits over a padded vocabulary)?"
            )

    def _control_id(self, piece: str) -> int:
        i = self._reserved.get(piece, -1)
        return i if i >= 0 and self._types[i] == CONTROL else -1

    def _find_piece(self, piece: str) -> int | None:
        return self._mergeable.get(piece, self._reserved.get(piece))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def not_a_model_file(source: str, err: Exception) -> ValueError:
    return ValueError(f"{source} is not a SentencePiece model file ({err}). Pass a `tokenizer.model` "
                      "(a serialized sentencepiece ModelProto), e.g. the one minigemma writes from a GGUF.")


def check_bpe_kind(source: str, pieces: int, kind: str) -> None:
    """What both tokenizers refuse first: a model without pieces, or of a type (`kind`) other than BPE."""
    if not pieces:
        raise ValueError(f"{source} has no pieces: the file is empty or not a SentencePiece model.")
    if kind != MODEL_TYPES[BPE]:
        raise ValueError(
            f"{source} is a SentencePiece {kind} model; minigemma's tokenizers implement BPE, "
            "the type Gemma uses. Use a Gemma tokenizer.model (or run this one with the "
            "`sentencepiece` package directly)."
        )


def _validate(spec: SentencePieceModel, source: str) -> None:
    """Refuse what we cannot reproduce exactly, with the reason and the way out."""
    check_bpe_kind(source, len(spec.pieces), MODEL_TYPES.get(spec.model_type, str(spec.model_type)))
    if len(set(spec.pieces)) != len(spec.pieces) or "" in spec.pieces:
        raise ValueError(f"{source} has empty or duplicated pieces; rebuild the model file.")
    if spec.types.count(UNKNOWN) != 1:
        raise ValueError(f"{source} must have exactly one piece of type UNKNOWN; rebuild the model file.")
    byte_pieces = {p for p, k in zip(spec.pieces, spec.types) if k == BYTE}
    if not all(_BYTE_PIECE.fullmatch(p) for p in byte_pieces):
        raise ValueError(f"{source} has byte pieces not spelled <0x00>..<0xFF>; rebuild the model file.")
    if spec.byte_fallback and len(byte_pieces) != 256:
        raise ValueError(f"{source} enables byte fallback but lacks some of the 256 pieces <0x00>..<0xFF>.")
    if not spec.byte_fallback and byte_pieces:
        raise ValueError(f"{source} has byte pieces although byte_fallback is off; rebuild the model file.")
    if spec.precompiled_charsmap or spec.denormalizer_charsmap or spec.treat_whitespace_as_suffix:
        raise ValueError(
            f"{source} normalizes text (rule {spec.normalizer_name!r}) or puts whitespace at the end of "
            "pieces; the pure-Python tokenizer only supports identity normalization, as Gemma uses. "
            'Use backend="sentencepiece" for this model.'
        )

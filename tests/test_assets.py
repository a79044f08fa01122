"""The project's own instruction set and preference set (assets/*.jsonl) keep their stated shape.

assets/README.md describes both files: instructions.jsonl (240 prompt/response pairs, 200 train and
40 held out) for instruction-tuning, and preferences.jsonl (48 prompt/chosen/rejected triples, 36 train
and 12 held out) for DPO. The checks here are cheap and need no model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"

INSTRUCTIONS = ASSETS / "instructions.jsonl"
PREFERENCES = ASSETS / "preferences.jsonl"

INSTRUCTION_FIELDS = {"prompt", "response", "split"}
PREFERENCE_FIELDS = {"prompt", "chosen", "rejected", "kind", "split"}
KINDS = {"wrong", "rambling", "unhelpful"}
CHAT_MARKERS = ("<start_of_turn>", "<end_of_turn>")
MAX_WORDS = 60


def _load(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{path.name}:{number} is blank"
        record = json.loads(line)
        assert isinstance(record, dict), f"{path.name}:{number} is not a JSON object"
        records.append(record)
    return records


def _key(prompt: str) -> str:
    """Prompts compare case- and whitespace-insensitively."""
    return " ".join(prompt.lower().split())


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    return _load(INSTRUCTIONS)


@pytest.fixture(scope="module")
def preferences() -> list[dict]:
    return _load(PREFERENCES)


@pytest.mark.parametrize(("name", "fields", "answers"), [
    ("instructions", INSTRUCTION_FIELDS, ("response",)),
    ("preferences", PREFERENCE_FIELDS, ("chosen", "rejected")),
])
def test_fields_are_exact_and_non_empty(name, fields, answers, request):
    for number, record in enumerate(request.getfixturevalue(name), start=1):
        assert set(record) == fields, f"{name}.jsonl:{number} has fields {sorted(record)}"
        for field in fields:
            value = record[field]
            assert isinstance(value, str) and value.strip(), f"{name}.jsonl:{number} {field} is empty"
        for field in answers:
            assert len(record[field].split()) <= MAX_WORDS, (
                f"{name}.jsonl:{number} {field} has more than {MAX_WORDS} words")


def test_split_counts(instructions, preferences):
    assert Counter(r["split"] for r in instructions) == {"train": 200, "heldout": 40}
    assert Counter(r["split"] for r in preferences) == {"train": 36, "heldout": 12}


def test_kinds(preferences):
    kinds = Counter(r["kind"] for r in preferences)
    assert set(kinds) <= KINDS, f"unknown kinds {set(kinds) - KINDS}"
    assert set(kinds) == KINDS, "every kind of rejected answer should appear"
    for record in preferences:
        assert record["chosen"] != record["rejected"], record["prompt"]


def test_no_duplicate_prompts(instructions, preferences):
    keys = [_key(r["prompt"]) for r in instructions + preferences]
    duplicated = sorted(k for k, n in Counter(keys).items() if n > 1)
    assert not duplicated, f"prompts used more than once: {duplicated}"


def test_no_chat_markers(instructions, preferences):
    for record in instructions + preferences:
        for value in record.values():
            for marker in CHAT_MARKERS:
                assert marker not in value, f"{marker} in {record['prompt']!r}"

"""The terminal commands and the chat format."""

import copy
import subprocess
import sys

import pytest

import minigemma
from minigemma.decoding.chat import Chat, format_chat
from minigemma.cli import main


def test_generate_command_streams_the_same_text_as_the_api(gemma3_270m, capsys):
    model, tok = gemma3_270m
    prompt = "The capital of France is"
    assert main(["generate", prompt, "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out == prompt + minigemma.generate(model, tok, prompt, max_new_tokens=12) + "\n"


def test_generate_command_quantized(gemma3_270m, capsys):
    """--quantize int8 is load(..., quantize="int8"): the same text as the API on the same weights."""
    from minigemma.quantize import quantize

    model, tok = gemma3_270m
    prompt = "The capital of France is"
    assert main(["generate", prompt, "--max-new-tokens", "8", "--quantize", "int8"]) == 0
    expected = minigemma.generate(quantize(copy.deepcopy(model), bits=8), tok, prompt, max_new_tokens=8)
    assert capsys.readouterr().out == prompt + expected + "\n"


def test_cli_reports_bad_sampling_parameters(capsys):
    assert main(["generate", "hi", "--temperature", "-1"]) == 2
    assert "temperature must be >= 0" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "minigemma", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "generate" in result.stdout and "chat" in result.stdout


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m" in out and "15 local layers (window 512), 3 global" in out


def test_chat_format_folds_the_system_prompt_into_the_first_user_turn():
    text = format_chat([
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi"},
        {"role": "model", "content": "Hello!"},
        {"role": "user", "content": "Name a color."},
    ])
    assert text == ("<start_of_turn>user\nAnswer briefly.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n"
                    "<start_of_turn>user\nName a color.<end_of_turn>\n"
                    "<start_of_turn>model\n")


def test_chat_format_errors():
    with pytest.raises(ValueError, match="alternate"):
        format_chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="unknown chat role 'bot'"):
        format_chat([{"role": "bot", "content": "a"}])


def test_chat_template_tokens_are_single_control_ids(gemma3_270m):
    _, tok = gemma3_270m
    ids = tok.encode(format_chat([{"role": "user", "content": "Hi"}]), add_bos=True)
    assert ids[:2] == [tok.bos_id, tok.start_of_turn_id]
    assert tok.end_of_turn_id in ids


def test_chat_keeps_the_conversation(gemma3_270m):
    model, tok = gemma3_270m
    chat = Chat(model, tok)
    reply = chat.say("What is 2 + 2?", max_new_tokens=8)
    assert chat.history == [{"role": "user", "content": "What is 2 + 2?"},
                            {"role": "model", "content": reply.strip()}]
    chat.say("And 3 + 3?", max_new_tokens=8)
    assert len(chat.history) == 4

"""A user's mistake in the terminal gets one line `minigemma: error: ...` and exit status 2, never a traceback.

Bad settings are refused before the model loads, so most tests here load nothing. The
subprocess tests run the real command (and the embedded 270M) where only a real process
shows the behaviour: a closed pipe, Ctrl-C, bytes that are not UTF-8 on stdin.
"""

import os
import signal
import subprocess
import sys

import pytest

import minigemma
from minigemma.cli import main

from reference import random_model

BAD_SETTINGS = [
    (["--temperature", "inf"], "temperature must be finite"),
    (["--temperature", "nan"], "temperature must be >= 0"),
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-k", "0"], "top_k must be a whole number >= 1"),
    (["--top-p", "1.5"], r"top_p must be in (0, 1]"),
    (["--max-new-tokens", "-1"], "max_new_tokens must be a whole number >= 0"),
    (["--seed", str(2**64)], "seed must be a whole number from 0 to 2**64 - 1"),
    (["--seed", "-1"], "seed must be a whole number from 0 to 2**64 - 1"),
    (["--device", "tpu"], "unknown device 'tpu'; use 'cpu' or 'cuda'"),
]


def one_error_line(err: str, expected: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("minigemma: error: "), err
    assert expected in lines[0]


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the command loads a model; --device, which load checks first, still is."""
    from minigemma.loading import resolve_device

    def load(name="gemma3-270m", *, device="cpu", **kwargs):
        resolve_device(device)
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(minigemma, "load", load)


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("flags, message", BAD_SETTINGS)
def test_bad_settings_are_one_line_before_loading(command, flags, message, no_loading, capsys):
    args = [command, "hello", *flags] if command == "generate" else [command, *flags]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""  # not even the prompt's echo
    one_error_line(err, message)


def test_a_prompt_that_is_not_utf8(no_loading, capsys):
    assert main(["generate", "caf\udce9"]) == 2  # how Python hands over the bytes b"caf\xe9"
    one_error_line(capsys.readouterr().err, "character 3 is the byte 0xe9, which is not UTF-8")
    assert main(["chat", "--system", "\udcff"]) == 2
    one_error_line(capsys.readouterr().err, "--system is not valid text")


def test_max_new_tokens_past_the_context_is_refused_before_the_echo(monkeypatch, tiny_tokenizer, capsys):
    monkeypatch.setattr("minigemma.cli._load", lambda args: (random_model("tiny-gemma"), tiny_tokenizer))
    assert main(["generate", "hello", "--max-new-tokens", "1000"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    one_error_line(err, "exceeds the model's context of 128 tokens; lower max_new_tokens to at most")


def test_a_warning_is_one_line(monkeypatch, tiny_tokenizer, capsys):
    """A warning while loading (e.g. the block kernel cannot be built) reaches a terminal as one
    line, without the source line Python's default format adds."""
    import warnings

    def load(args):
        warnings.warn("minigemma's block int8 kernel is unavailable: no compiler", RuntimeWarning)
        return random_model("tiny-gemma"), tiny_tokenizer

    monkeypatch.setattr("minigemma.cli._load", load)
    assert main(["generate", "hello", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert err == "minigemma: warning: minigemma's block int8 kernel is unavailable: no compiler\n"


def test_a_tiny_temperature_generates_the_greedy_text(monkeypatch, tiny_tokenizer, capsys):
    monkeypatch.setattr("minigemma.cli._load", lambda args: (random_model("tiny-gemma"), tiny_tokenizer))
    assert main(["generate", "def load", "--max-new-tokens", "12"]) == 0
    greedy = capsys.readouterr().out
    assert main(["generate", "def load", "--max-new-tokens", "12", "--temperature", "1e-40", "--seed", "1"]) == 0
    assert capsys.readouterr().out == greedy
    assert main(["generate", "def load", "--max-new-tokens", "12", "--temperature", "5", "--top-k", "1"]) == 0
    assert capsys.readouterr().out == greedy


# ---------------------------------------------------------------- real processes

def minigemma_process(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minigemma", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def read_until(stream, end: bytes) -> bytes:
    seen = b""
    while not seen.endswith(end):
        byte = stream.read(1)
        assert byte, f"the process ended before writing {end!r}; it wrote {seen!r}"
        seen += byte
    return seen


def test_a_closed_pipe_ends_quietly():
    # `minigemma generate ... | head -c5`: the reader is gone before the next write. Closing our
    # end of the pipe before the process writes anything makes that certain: reading 5 bytes and
    # then closing raced with a reply that may end (at <eos>) and be buffered before the close.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.Popen([sys.executable, "-m", "minigemma", "generate", "The capital of France is",
                              "--max-new-tokens", "5"], stdin=subprocess.DEVNULL, stdout=write_end,
                             stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 141  # 128 + SIGPIPE, as the shell reports for `yes` in `yes | head`
    assert b"Traceback" not in err and b"Broken pipe" not in err and b"Exception ignored" not in err


def test_ctrl_c_ends_quietly():
    p = minigemma_process("chat")
    read_until(p.stdout, b"you> ")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130  # 128 + SIGINT
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


def test_chat_survives_bytes_that_are_not_utf8_on_stdin():
    p = minigemma_process("chat", "--max-new-tokens", "4")
    out, err = p.communicate(b"caf\xe9?\nThe capital of France is\n\n", timeout=300)
    assert p.returncode == 0, err
    err = err.decode()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("minigemma: error:")]
    assert len(errors) == 1 and "the byte 0xe9, which is not UTF-8" in errors[0]
    assert out.decode().count("model> ") == 2  # the second message was answered


def test_python_dash_m_help_still_works():
    result = subprocess.run([sys.executable, "-m", "minigemma", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "generate" in result.stdout and "chat" in result.stdout

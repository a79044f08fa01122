"""The attention explorer in a real browser (Playwright + Debian's Chromium + JupyterLab).

The test itself is tests/browser/explorer.spec.ts; this wrapper runs it so `pytest` covers it.
It needs, once per machine (see tests/browser/README.md):
    apt-get install -y chromium
    cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci
and skips, saying which is missing, when either is not there. Screenshots land in artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROWSER_TESTS = ROOT / "tests" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = BROWSER_TESTS / "node_modules" / ".bin" / "playwright"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_tools() -> str | None:
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium: `apt-get install -y chromium` (or `make setup-browser`) to run the browser test"
    if shutil.which("node") is None:
        return "no node on PATH: install Node.js to run the browser test"
    if not PLAYWRIGHT.exists():
        return ("no tests/browser/node_modules: `make setup-browser` "
                "(PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci in tests/browser) to run the browser test")
    return None


def test_attention_explorer_in_chromium():
    missing = missing_tools()
    if missing:
        if os.environ.get("CI"):  # CI installs them (make setup-browser): missing there is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    screenshot = ROOT / "artifacts" / "attention_explorer.png"
    screenshot.unlink(missing_ok=True)
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "MINIGEMMA_PYTHON": sys.executable,
           "MINIGEMMA_LAB_PORT": str(free_port()), "CHROMIUM": str(CHROMIUM)}
    env.pop("CI", None)  # galata's base config would switch to the GitHub reporter
    result = subprocess.run([str(PLAYWRIGHT), "test"], cwd=BROWSER_TESTS, env=env, capture_output=True,
                            text=True, timeout=420)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"playwright failed:\n{output[-6000:]}"
    assert "1 passed" in output
    assert screenshot.exists() and screenshot.stat().st_size > 10_000

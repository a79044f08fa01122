# The two commands of the README. Everything lives in ./.venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= The three primary colors are

.PHONY: demo test setup setup-test setup-browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned on purpose: an unpinned `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks]"

demo: setup
	$(BIN)/minigemma generate "$(PROMPT)" --max-new-tokens 40

# The real-browser test needs Debian's Chromium and galata's npm packages (never a downloaded
# browser). Installed when possible; without them that one test is skipped (it fails under CI=true).
setup-browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no /usr/bin/chromium (apt-get install chromium); the browser test will be skipped"; fi; \
	fi
	@if command -v npm >/dev/null; then \
	  if [ ! -x tests/browser/node_modules/.bin/playwright ]; then \
	    cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; fi; \
	else echo "note: no npm (Node.js); the browser test will be skipped"; fi

# Saved notebook outputs and real-model expectations must hold on any CPU, not only on the one that
# wrote them. So everything marked `numerics` (every notebook cell, each test that runs the real
# 270M: see the conftest.py files) runs a second time, on another CPU code path of the same machine
# (tests/cpu_path.py: AVX2 code on an AVX-512 machine, generic and SSE4 code elsewhere).
test: setup-test setup-browser
	$(BIN)/python -m pytest -q
	@other=$$($(BIN)/python tests/cpu_path.py) && echo "== again, on another CPU code path: $$other" && \
	  env $$other $(BIN)/python -m pytest -q -m numerics

clean:
	rm -rf $(VENV)

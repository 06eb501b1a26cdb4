# Two commands do everything on a fresh machine: `make demo` and `make test`. Both are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL := models/smollm2-135m-instruct/config.json
# The benchmark data lives beside the checkout (../shared/data); override for your own copy.
export CODEALIGN_DATA ?= $(abspath ../shared/data)
# Ray 2.60 turns on token auth for local clusters; a single-user local run does not need it.
export RAY_AUTH_MODE ?= disabled

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP) $(MODEL)

$(STAMP): pyproject.toml
	# the sandbox's seccomp filter needs the system's libseccomp (present on Debian; installed where it is not)
	ldconfig -p | grep -q libseccomp.so.2 || (apt-get update && apt-get install -y libseccomp2)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[cpu,dev]"
	# PyPI's torchvision is a CUDA build that breaks `import transformers` beside the CPU torch; vLLM runs without it.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

$(MODEL): | $(STAMP)
	$(BIN)/python launch.py prepare-model

demo: setup
	$(BIN)/python launch.py run --config configs/local.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra --durations=40 tests

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow" tests

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/sandbox_throughput.py

clean:
	rm -rf runs .pytest_cache

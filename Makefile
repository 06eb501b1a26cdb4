# Two commands do everything on a fresh machine: `make demo` and `make test`. Both are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A local copy of the published benchmark files, copied (checksums checked) into the per-user data directory.
DATA_FROM ?= ../shared/data
# Ray 2.60 turns on token auth for local clusters; a single-user local run does not need it.
export RAY_AUTH_MODE ?= disabled

.PHONY: setup data model demo test test-fast lint bench clean

# data and model go to per-user directories (~/.cache/codealign), where jobs find them too; both are idempotent
setup: $(STAMP) data model

$(STAMP): pyproject.toml
	# the sandbox's seccomp filter needs the system's libseccomp (present on Debian; installed where it is not)
	ldconfig -p | grep -q libseccomp.so.2 || (apt-get update && apt-get install -y libseccomp2)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[cpu,dev]"
	# PyPI's torchvision is a CUDA build that breaks `import transformers` beside the CPU torch; vLLM runs without it.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $(STAMP)

data: | $(STAMP)
	$(BIN)/python launch.py prepare-data --from $(DATA_FROM)

model: | $(STAMP)
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

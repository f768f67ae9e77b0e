# vllm-watchdog — the two commands of the README contract, plus lint and bench.
#   make demo  — live demonstration against the emulated vLLM (no GPU, no Docker)
#   make test  — install what the tests need and pass them (CI: .ci/run calls exactly this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv clean gpu-check docs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/vllm-watchdog demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/sim
	# the 24-hour simulation in a fresh interpreter: after ~1,800 tests in one process it runs several times slower
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/sim

lint: $(STAMP)
	$(BIN)/ruff check watchdog tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: $(STAMP)
	$(BIN)/python -m watchdog.config.docs > docs/configuration.md

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

gpu-check: $(STAMP)
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) .demo build *.egg-info

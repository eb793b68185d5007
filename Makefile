# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the releases on this workplace's disk (a CPU-capable build).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# `make test` skips the tests marked slow; `make test PYTEST_FLAGS=` (what .ci/run does) runs all.
PYTEST_FLAGS ?= -m "not slow"

.PHONY: venv test lint bench demo clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[dev,viz]' $(TORCH_PINS)
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_FLAGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python -m pip install --quiet grad-cam torchcam captum $(TORCH_PINS)
	$(BIN)/python benchmarks/bench_speed.py --output benchmarks/RESULTS.md

demo: venv
	$(BIN)/camlens demo --out demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info

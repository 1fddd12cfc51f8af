# Two entry points, each creates .venv on first use:
#   make demo   - set up and run the end-to-end demo on the built-in dataset
#   make test   - set up and run lint + the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact pair that installs from this machine's disk (no multi-GB download); pyproject keeps lower bounds.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/scaledet demo $(DEMO_ARGS)

lint: setup
	$(PY) -m ruff check scaledet tests benchmarks

test: lint
	$(PY) -m pytest -q -p no:cacheprovider $(TEST_ARGS)

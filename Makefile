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
	@echo "== 1/5 The D2L tour: the book's worked examples, computed and checked"
	$(PY) examples/d2l_tour.py
	@echo; echo "== 2/5 Where's Waldo: normalised cross-correlation against OpenCV"
	$(PY) examples/waldo.py
	@echo; echo "== 3/5 LeNet on the sklearn digits: Corr2d against nn.Conv2d"
	$(PY) examples/lenet.py --epochs 10
	@echo; echo "== 4/5 LeNet under DistributedDataParallel: 2 processes against 1"
	$(PY) examples/ddp_lenet.py
	@echo; echo "== 5/5 A short benchmark against torch's F.conv2d"
	$(PY) bench/bench_cpu.py --quick
	@echo; echo "Demo done: every example passed. Figures: examples/output/waldo.png, examples/output/lenet.png"

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

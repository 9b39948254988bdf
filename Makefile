# make demo: set up .venv, build, run the D2L examples and a short benchmark against torch.
# make test: set up .venv, build, run the test suite.
# make bench: the full CPU benchmarks, layer shapes and whole models (bench/results/).
# make fuzz: the property tests with a long search; make wheel: a wheel in dist/.
# make test-oldest: the test suite against the oldest supported torch, in .venv-oldest with Python's own
#   setuptools, built from a copy of the sources in build/oldest (the two builds would share torchcorr/_C*.so).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# No GPU to detect here: build the CUDA kernels for Hopper unless told otherwise.
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= $(shell nproc)

SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu csrc/*/*.cuh)

# The oldest torch the README promises; `make test` covers the newest (requirements.txt).
OLDEST_TORCH := 2.11.0
OLDEST_TORCHVISION := 0.26.0
OLDEST_VENV := .venv-oldest
OLDEST_TREE := build/oldest

.PHONY: demo test test-oldest fuzz wheel bench build clean

demo: $(VENV)/.built
	@echo "== 1/6 The D2L tour: the book's worked examples, computed and checked"
	$(PY) examples/d2l_tour.py
	@echo; echo "== 2/6 Where's Waldo: normalised cross-correlation against OpenCV"
	$(PY) examples/waldo.py
	@echo; echo "== 3/6 LeNet on the sklearn digits: Corr2d against nn.Conv2d"
	$(PY) examples/lenet.py --epochs 10
	@echo; echo "== 4/6 LeNet under DistributedDataParallel: 2 processes against 1"
	$(PY) examples/ddp_lenet.py
	@echo; echo "== 5/6 Per-sample gradients with torch.func: vmap(grad(...)) against a loop and nn.Conv2d"
	$(PY) examples/per_sample_grads.py
	@echo; echo "== 6/6 A short benchmark against torch's F.conv2d"
	$(PY) bench/bench_cpu.py --quick
	@echo; echo "Demo done: every example passed. Figures: examples/output/waldo.png, examples/output/lenet.png"

test: $(VENV)/.built
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The property tests searching 20,000 examples instead of `make test`'s fixed few hundred.
fuzz: $(VENV)/.built
	$(PY) -m pytest tests/test_properties.py --hypothesis-profile=fuzz --hypothesis-show-statistics $(PYTEST_ARGS)

# A wheel in dist/, built against the pinned torch, for every CPU of its architecture (run-time ISA dispatch).
wheel: $(VENV)/.installed
	rm -rf dist && $(PY) -m pip wheel --quiet --no-build-isolation --no-deps -w dist .

# CPU kernels only: the CUDA sources are compiled once, by `make test`, against the newest torch.
test-oldest: $(OLDEST_VENV)/.installed
	rm -rf $(OLDEST_TREE) && mkdir -p $(OLDEST_TREE)
	cp -r setup.py pyproject.toml README.md csrc torchcorr tests bench examples $(OLDEST_TREE)/
	rm -f $(OLDEST_TREE)/torchcorr/_C*.so $(OLDEST_TREE)/torchcorr/_build.json
	cd $(OLDEST_TREE) && TORCHCORR_CUDA=0 ../../$(OLDEST_VENV)/bin/python -m pip install --quiet \
		--no-build-isolation --no-deps -e .
	cd $(OLDEST_TREE) && ../../$(OLDEST_VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

# requirements.txt with the oldest torch and its torchvision, without the setuptools pin: the venv keeps
# the setuptools Python ships.
$(OLDEST_VENV)/.installed: requirements.txt Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	sed -e 's/^torch==.*/torch==$(OLDEST_TORCH)/' -e 's/^torchvision==.*/torchvision==$(OLDEST_TORCHVISION)/' \
		-e '/^setuptools==/d' requirements.txt > $(OLDEST_VENV)/requirements.txt
	$(OLDEST_VENV)/bin/python -m pip install --quiet -r $(OLDEST_VENV)/requirements.txt
	touch $@

bench: $(VENV)/.built
	$(PY) bench/bench_cpu.py
	$(PY) bench/bench_models.py

build: $(VENV)/.built

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.installed $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build dist *.egg-info torchcorr/_C*.so torchcorr/_build.json $(VENV)/.built $(OLDEST_VENV)/.installed

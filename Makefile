# make test: set up a virtual environment (CPU torch first), build the extension, compile-check the CUDA
#            sources, run the test suite with Triton in its CPU interpreter.
# make demo: set up and run the main job.
# make reproduce: SimVAE vs VAE vs SimCLR on FashionMNIST and MNIST, 3 seeds, content and style (70 min on
#            2 cores); writes benchmarks/results/reproduction.{md,png} and reproduction_runs.csv.
# make kernel-check: compile every Triton kernel the launchers launch and every csrc/cuda/*.cu for sm_90 (no GPU
#            needed), read their SASS, write benchmarks/results/sass.md; fails on spills, > 227 KB of shared
#            memory, or a half-precision InfoNCE matrix product without tensor cores (benchmarks/kernel_check.py).
# make gpu-check: the short run on the GPU machine (benchmarks/gpu_check.sh); GPU_CHECK_ARGS=--dry-run walks it
#            on the CPU with tiny shapes (tests/test_gpu_check.py does that in `make test`).
# TORCH=torch==2.14.1 selects the CUDA build of torch (then the CUDA kernels are built too).
VENV    ?= .venv
TORCH   ?= torch==2.13.0
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
NVCC    ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*) setup.py pyproject.toml

.PHONY: test demo reproduce bench setup nvcc-check kernel-check gpu-check sanitize clean

$(VENV)/.deps: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q $(TORCH) "triton>=3.6" numpy ninja setuptools wheel
	$(PIP) install -q pytest pytest-benchmark hypothesis expecttest matplotlib tqdm kornia pillow
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PIP) install -q --no-build-isolation -e .
	touch $@

setup: $(VENV)/.built

# The .cu files include no torch header (raw pointers and a cudaStream_t), so plain nvcc checks them here.
nvcc-check:
	@if ! ls csrc/cuda/*.cu >/dev/null 2>&1; then echo "nvcc-check: no .cu files"; \
	elif [ ! -x "$(NVCC)" ]; then echo "nvcc-check: nvcc not found"; [ "$${CI:-}" != "true" ]; \
	else for f in csrc/cuda/*.cu; do echo "nvcc -c $$f"; \
	  "$(NVCC)" -c -std=c++17 -O1 -arch=sm_90 -Icsrc -o /tmp/simvae_fast_nvcc_check.o $$f || exit 1; done; fi

test: setup nvcc-check
	TRITON_INTERPRET=1 $(VENV)/bin/pytest tests -q -p no:cacheprovider

kernel-check: setup
	NVCC="$(NVCC)" $(PY) benchmarks/kernel_check.py $(KERNEL_CHECK_ARGS)

# On the GPU machine there is no venv (its python has torch and triton): PYTHON=python3 make gpu-check works too.
gpu-check:
	PYTHON="$(if $(wildcard $(PY)),$(CURDIR)/$(PY),python3)" bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

# The C++ CPU kernels built with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan (beside, not over,
# the normal build), then the CPU-backend tests run against that copy; any sanitizer report fails the run.
# libstdc++ is preloaded beside libasan so that ASan's __cxa_throw interceptor finds the real one (torch's
# TORCH_CHECK throws C++ exceptions; without it ASan aborts on the first one).
ASAN_LIB        = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libstdc++.so.6)
SANITIZE_TESTS ?= tests/test_latent.py tests/test_info_nce.py
SANITIZE_K     ?= cpu and not triton and not compile and not opcheck
sanitize: $(VENV)/.deps
	rm -rf build/asan && mkdir -p build/asan/simvae_fast
	SIMVAE_FAST_SANITIZE=1 SIMVAE_FAST_CUDA=0 $(PY) setup.py -q build_ext --build-temp build/asan-tmp --build-lib build/asan
	cp -r simvae_fast/*.py simvae_fast/ops build/asan/simvae_fast/ && cp -r kernels build/asan/simvae_fast/kernels
	cd build/asan && LD_PRELOAD="$(ASAN_LIB)" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH=$(CURDIR)/build/asan TRITON_INTERPRET=1 \
	  $(CURDIR)/$(VENV)/bin/pytest -q -p no:cacheprovider --rootdir=$(CURDIR) -k "$(SANITIZE_K)" \
	  $(addprefix $(CURDIR)/,$(SANITIZE_TESTS))

bench: setup
	cd benchmarks && ../$(PY) run.py --plot

# The main job: get FashionMNIST from Debian's package (no web download), train SimVAE with the fused kernels
# for the default budget, then print the probe accuracies (runs/demo/results.json, loss and reconstruction PNGs).
demo: setup
	$(PY) -m simvae_fast data fetch fashion-mnist
	$(PY) -m simvae_fast train --overwrite --out runs/demo

reproduce: setup
	$(PY) -m simvae_fast data fetch fashion-mnist
	$(PY) -m simvae_fast data fetch mnist
	$(PY) benchmarks/reproduce.py

clean:
	rm -rf build $(VENV) simvae_fast/*.so simvae_fast/_build_info.json

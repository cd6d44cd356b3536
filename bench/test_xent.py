"""pytest-benchmark view of the benchmark report's workloads and peers (xentc/bench.py).

    pytest bench/ --benchmark-only                       # time everything importable
    pytest bench/ --benchmark-only --benchmark-autosave   # save a run; later --benchmark-compare
    XENTC_BENCH_QUICK=1 pytest bench/ --benchmark-disable # CI's smoke pass: tiny sizes, one call

Each group is one workload and pass; xentc and the peers share it. Run from outside the checkout
(as `make bench-pytest` does) so that the installed xentc is imported. The report with bandwidth
ratios is `python -m xentc.bench`.
"""

import functools
import os

import numpy as np
import pytest

import xentc
from xentc._validate import check_n_threads
from xentc.bench import (
    IMPLEMENTATIONS,
    PASSES,
    STANDARD_WORKLOADS,
    available_implementations,
    loss_check,
    make_inputs,
    quick,
)

QUICK = os.environ.get("XENTC_BENCH_QUICK") == "1"
WORKLOADS = [quick(w) for w in STANDARD_WORKLOADS] if QUICK else STANDARD_WORKLOADS
AVAILABLE = available_implementations()
N_THREADS = check_n_threads(None)


@functools.lru_cache(maxsize=1)  # one workload's arrays alive at a time
def inputs(workload):
    logits, target = make_inputs(workload)
    return logits, target, xentc.cross_entropy(logits, target)


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.label.replace(" ", "-"))
@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_xent(benchmark, workload, pass_name, impl):
    if impl not in AVAILABLE:
        pytest.skip(f"{impl} is not importable here")
    logits, target, expected = inputs(workload)
    call = IMPLEMENTATIONS[impl][1](logits, target, N_THREADS)[pass_name]
    benchmark.group = f"{pass_name} {workload.label}"
    passes_over_logits = 1 if pass_name == "forward" else 2  # read; or read + write the gradient
    benchmark.extra_info["bytes_moved"] = workload.logits_bytes * passes_over_logits
    benchmark.extra_info["n_threads"] = N_THREADS
    loss = benchmark.pedantic(call, rounds=5, warmup_rounds=1)
    assert loss_check(loss, expected, workload.dtype) == "ok", (
        f"{impl} {pass_name} {workload.label}: loss {loss} vs xentc {expected}"
    )
    assert np.isfinite(loss)

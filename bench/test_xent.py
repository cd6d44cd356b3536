"""pytest-benchmark suite: `pytest bench/ --benchmark-only` (compare runs with --benchmark-autosave
then --benchmark-compare). xentc and a vectorised NumPy float32 peer share each group.

The benchmark report with bandwidth ratios and more peers is the benchmark issue's
`python -m xentc.bench`; this file stays a pytest view of the same kind of workloads.
"""

import numpy as np
import pytest

import xentc

WORKLOADS = [(512, 32000), (4096, 1000)]


def make_inputs(n_rows, n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_rows, n_classes), dtype=np.float64).astype(dtype)
    return logits, rng.integers(0, n_classes, size=n_rows)


def numpy_loss_and_grad(logits, target):
    """The fastest plain-NumPy version we know: float32 throughout, in-place where possible."""
    rows = np.arange(len(target))
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted, out=shifted)
    sums = probs.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(sums[:, 0]) - np.log(probs[rows, target]))
    probs /= sums
    probs[rows, target] -= 1.0
    probs /= len(target)
    return loss, probs


@pytest.mark.parametrize("n_rows,n_classes", WORKLOADS, ids=[f"N{n}-C{c}" for n, c in WORKLOADS])
@pytest.mark.parametrize("impl", ["xentc", "numpy"])
def test_loss_and_grad(benchmark, impl, n_rows, n_classes):
    logits, target = make_inputs(n_rows, n_classes, np.float32)
    benchmark.group = f"loss+grad N={n_rows} C={n_classes} float32"
    benchmark.extra_info["bytes_moved"] = 2 * logits.nbytes  # read logits once, write grad once
    if impl == "xentc":
        grad = np.empty_like(logits)
        loss, _ = benchmark(xentc.cross_entropy_with_grad, logits, target, out=grad)
    else:
        loss, _ = benchmark(numpy_loss_and_grad, logits, target)
    assert loss == pytest.approx(xentc.cross_entropy(logits, target), rel=1e-4)

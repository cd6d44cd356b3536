"""Arrays past 2**31 elements (64-bit indexing throughout): (70000, 32000) float32 (9 GB) and one
row of 2**31 + 7 classes (8.6 GB). Loss, log-sum-exp and gradient are checked against a float64
reference computed a block of rows (or a chunk of the row) at a time, within the spec's float32
tolerance. The gradient is taken in place (out=logits), so each test holds one copy of the
logits and peaks at about 10 GB; the reference regenerates the original logits block by block
from their seeds. Marked slow: minutes each, so CI skips them; run with `make test-slow`
(pytest -m slow -s prints the timings).
"""

import math
import time

import numpy as np
import pytest

import xentc

pytestmark = pytest.mark.slow

# float32 (shared/spec/api.md): loss within rtol 1e-5, atol 1e-6 of float64; gradient within
# atol 1e-6 once scaled to a unit-size loss (times the 'mean' denominator).
RTOL, ATOL, GRAD_ATOL = 1e-5, 1e-6, 1e-6
BLOCK_ROWS = 1024
CHUNK = 1 << 26


def _report(what, seconds):
    print(f"\n  {what}: {seconds:.2f} s", end="")


def _rows(seed, r0, shape):
    """Rows r0 .. r0 + shape[0] of the big matrix: each block of rows from its own seed, so the
    reference can rebuild any block after the gradient has overwritten it."""
    return np.random.default_rng([seed, r0]).standard_normal(shape, dtype=np.float32) * 3


def _chunk(seed, i0, size):
    return np.random.default_rng([seed, i0]).standard_normal(size, dtype=np.float32) * 3


def test_rows_past_2_31_elements():
    n_rows, n_classes, seed = 70_000, 32_000, 1
    assert n_rows * n_classes > 2**31
    logits = np.empty((n_rows, n_classes), dtype=np.float32)
    for r in range(0, n_rows, BLOCK_ROWS):
        logits[r : r + BLOCK_ROWS] = _rows(seed, r, logits[r : r + BLOCK_ROWS].shape)
    rng = np.random.default_rng(seed)
    target = rng.integers(0, n_classes, size=n_rows)
    target[::97] = -100  # ignored rows, the last ones among them, past 2**31 elements
    counted = target != -100

    start = time.perf_counter()
    losses, lse = xentc.cross_entropy(logits, target, reduction="none", return_lse=True)
    _report("(70000, 32000) float32 loss 'none' + lse", time.perf_counter() - start)
    start = time.perf_counter()
    mean = xentc.cross_entropy(logits, target)
    _report("(70000, 32000) float32 loss 'mean'", time.perf_counter() - start)

    # the float64 reference, a block of rows at a time
    ref_lse = np.empty(n_rows)
    ref_loss = np.zeros(n_rows)
    for r in range(0, n_rows, BLOCK_ROWS):
        z = logits[r : r + BLOCK_ROWS].astype(np.float64)
        peak = z.max(axis=1)
        ref_lse[r : r + len(z)] = peak + np.log(np.exp(z - peak[:, None]).sum(axis=1))
        y = target[r : r + len(z)]
        hit = y != -100
        rows = np.flatnonzero(hit)
        ref_loss[r + rows] = ref_lse[r + rows] - z[rows, y[hit]]
    np.testing.assert_allclose(lse.astype(np.float64), ref_lse, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(losses.astype(np.float64), ref_loss, rtol=RTOL, atol=ATOL)
    assert np.all(losses[~counted] == 0)
    denominator = int(counted.sum())
    ref_mean = math.fsum(ref_loss) / denominator
    assert mean == pytest.approx(ref_mean, rel=RTOL, abs=ATOL)

    start = time.perf_counter()
    loss, grad = xentc.cross_entropy_with_grad(logits, target, out=logits)
    _report("(70000, 32000) float32 loss + gradient in place", time.perf_counter() - start)
    assert grad is logits or np.shares_memory(grad, logits)
    assert loss == pytest.approx(ref_mean, rel=RTOL, abs=ATOL)
    worst = 0.0
    for r in range(0, n_rows, BLOCK_ROWS):
        z = _rows(seed, r, logits[r : r + BLOCK_ROWS].shape).astype(np.float64)
        want = np.exp(z - ref_lse[r : r + len(z), None])
        y = target[r : r + len(z)]
        hit = y != -100
        want[np.flatnonzero(hit), y[hit]] -= 1.0
        want[~hit] = 0.0
        # scaled to a unit-size loss: times the mean's denominator
        err = np.abs(grad[r : r + len(z)].astype(np.float64) - want / denominator) * denominator
        worst = max(worst, float(err.max()))
    assert worst <= GRAD_ATOL, f"gradient error {worst} (scaled to a unit-size loss)"


def test_one_row_past_2_31_classes():
    n_classes, seed = 2**31 + 7, 2
    logits = np.empty((1, n_classes), dtype=np.float32)
    for i in range(0, n_classes, CHUNK):
        part = logits[0, i : i + CHUNK]
        part[:] = _chunk(seed, i, part.size)
    y = n_classes - 1  # the last class: its offset needs more than 31 bits
    logits[0, y] = 30.0  # far above the others (|z| < 20 here): the target holds most of the mass
    target = np.array([y])

    start = time.perf_counter()
    loss, lse = xentc.cross_entropy(logits, target, return_lse=True)
    _report("1 x (2**31 + 7) float32 loss + lse", time.perf_counter() - start)
    peak = max(float(logits[0, i : i + CHUNK].max()) for i in range(0, n_classes, CHUNK))
    total = math.fsum(
        float(np.exp(logits[0, i : i + CHUNK].astype(np.float64) - peak).sum())
        for i in range(0, n_classes, CHUNK)
    )
    ref_lse = peak + math.log(total)
    assert loss == pytest.approx(ref_lse - 30.0, rel=RTOL, abs=ATOL)
    assert float(lse[0]) == pytest.approx(ref_lse, rel=RTOL, abs=ATOL)

    start = time.perf_counter()
    loss2, grad = xentc.cross_entropy_with_grad(logits, target, out=logits)
    _report("1 x (2**31 + 7) float32 loss + gradient in place", time.perf_counter() - start)
    assert loss2 == pytest.approx(ref_lse - 30.0, rel=RTOL, abs=ATOL)
    worst = 0.0
    for i in range(0, n_classes, CHUNK):
        size = min(CHUNK, n_classes - i)
        z = _chunk(seed, i, size).astype(np.float64)
        if i + size == n_classes:
            z[-1] = 30.0
        want = np.exp(z - ref_lse)
        if i + size == n_classes:
            want[-1] -= 1.0
        worst = max(worst, float(np.abs(grad[0, i : i + size].astype(np.float64) - want).max()))
    assert worst <= GRAD_ATOL, f"gradient error {worst}"

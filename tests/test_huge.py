"""Arrays past 2**31 elements (64-bit indexing throughout). Marked slow: each needs ~9 GB and
tens of seconds, so CI skips them; run with `make test-slow` (pytest -m slow)."""

import math

import numpy as np
import pytest

import xentc

pytestmark = pytest.mark.slow

CHUNK = 1 << 26


def chunked_lse(row):
    """float64 log-sum-exp of a huge row, a chunk at a time (no float64 copy of the row)."""
    peak = max(float(row[i:i + CHUNK].max()) for i in range(0, row.size, CHUNK))
    total = math.fsum(float(np.exp(row[i:i + CHUNK].astype(np.float64) - peak).sum())
                      for i in range(0, row.size, CHUNK))
    return peak + math.log(total)


def test_one_row_past_2_31_classes():
    n_classes = 2**31 + 7
    logits = np.empty((1, n_classes), dtype=np.float32)
    rng = np.random.default_rng(0)
    for i in range(0, n_classes, CHUNK):
        part = logits[0, i:i + CHUNK]
        part[:] = rng.standard_normal(part.size, dtype=np.float32)
    target = np.array([n_classes - 1])  # the last class: its offset needs more than 31 bits
    logits[0, -1] = 5.0
    expected_lse = chunked_lse(logits[0])
    expected = expected_lse - 5.0
    loss, lse = xentc.cross_entropy(logits, target, return_lse=True)
    assert loss == pytest.approx(expected, rel=1e-5), f"C = 2**31 + 7: loss {loss} vs {expected}"
    assert float(lse[0]) == pytest.approx(expected_lse, rel=1e-6)
    # The gradient in place (no second 8 GiB array): the target class gets p_y - 1.
    p_y = math.exp(5.0 - expected_lse)
    _, grad = xentc.cross_entropy_with_grad(logits, target, out=logits)
    assert float(grad[0, -1]) == pytest.approx(p_y - 1.0, abs=1e-6)
    assert float(grad[0, 0]) >= 0.0


def test_rows_past_2_31_elements():
    n_rows, n_classes = 67_200, 32_000  # 2.15e9 elements: the last rows start past 2**31
    logits = np.empty((n_rows, n_classes), dtype=np.float32)
    rng = np.random.default_rng(1)
    for r in range(0, n_rows, 2048):
        logits[r:r + 2048] = rng.standard_normal((min(2048, n_rows - r), n_classes),
                                                 dtype=np.float32)
    target = rng.integers(0, n_classes, size=n_rows)
    losses, lse = xentc.cross_entropy(logits, target, reduction="none", return_lse=True)
    for r in (0, n_rows // 2, n_rows - 1):
        row_lse = chunked_lse(logits[r])
        assert float(lse[r]) == pytest.approx(row_lse, rel=1e-6), f"row {r}"
        assert float(losses[r]) == pytest.approx(row_lse - float(logits[r, target[r]]), rel=1e-5)
    mean = xentc.cross_entropy(logits, target)
    assert mean == pytest.approx(float(losses.astype(np.float64).mean()), rel=1e-6)

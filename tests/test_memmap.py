"""Memory-mapped logits (np.memmap, np.load(mmap_mode=...)) with the core API, as they are.

Read-only maps need no out=; nothing is copied whole: tracemalloc, which sees NumPy's data
allocations, must report a peak far below the file's size (and does report a copy, checked
first, so that a silent tracemalloc cannot pass these tests). The gradient can be written into
a map opened for writing, through out=, and reaches the file.
"""

import tracemalloc

import numpy as np
import pytest

import xentc

N, C = 1024, 1000  # 4 MB of float32 logits: a copy would stand far above the allowed peak
LIMIT = N * C * 4 // 16


@pytest.fixture
def npy(tmp_path, rng):
    logits = (rng.standard_normal((N, C)) * 4).astype(np.float32)
    target = rng.integers(0, C, N)
    target[::9] = -100
    path = tmp_path / "logits.npy"
    np.save(path, logits)
    return path, logits, target


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tracemalloc_sees_a_copy(npy):
    path, _, _ = npy
    mapped = np.load(path, mmap_mode="r")
    _, peak = _peak(lambda: np.array(mapped))
    assert peak >= N * C * 4


@pytest.mark.parametrize("opener", ["np.load-r", "np.memmap-r", "np.load-c", "strided-view"])
def test_read_only_map_loss(npy, tmp_path, opener):
    path, logits, target = npy
    if opener == "np.load-r":
        mapped = np.load(path, mmap_mode="r")
    elif opener == "np.load-c":
        mapped = np.load(path, mmap_mode="c")  # copy-on-write: still no copy to read it
    elif opener == "np.memmap-r":
        raw = tmp_path / "logits.f32"
        logits.tofile(raw)
        mapped = np.memmap(raw, dtype=np.float32, mode="r", shape=(N, C))
    else:
        mapped = np.load(path, mmap_mode="r")[::3, 1:]
        logits, target = logits[::3, 1:], target[::3].copy()
        target[target == C - 1] = 0  # a class the view leaves out
    assert isinstance(mapped, np.memmap)
    if opener != "np.load-c":
        assert not mapped.flags.writeable
    for reduction in ("mean", "sum"):
        want = xentc.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
        got, peak = _peak(
            lambda r=reduction: xentc.cross_entropy(
                mapped, target, reduction=r, label_smoothing=0.1
            )
        )
        assert peak < LIMIT, f"{peak} bytes allocated for {mapped.nbytes} bytes of logits"
        np.testing.assert_allclose(got, want, rtol=1e-6)
    (loss, lse), peak = _peak(
        lambda: xentc.cross_entropy(mapped, target, reduction="none", return_lse=True)
    )
    assert peak < LIMIT  # two N-sized results, no N x C copy
    want_loss, want_lse = xentc.cross_entropy(logits, target, reduction="none", return_lse=True)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6)


def test_read_only_map_with_fresh_grad(npy):
    path, logits, target = npy
    mapped = np.load(path, mmap_mode="r")
    loss, grad = xentc.cross_entropy_with_grad(mapped, target)
    want_loss, want_grad = xentc.cross_entropy_with_grad(logits, target)
    assert grad.flags.writeable and not isinstance(grad, np.memmap)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-9)
    # The map is read-only, so it cannot take its own gradient.
    with pytest.raises(ValueError, match="out must be writeable"):
        xentc.cross_entropy_with_grad(mapped, target, out=mapped)


def test_grad_into_map_opened_for_writing(npy, tmp_path):
    path, logits, target = npy
    mapped = np.load(path, mmap_mode="r")
    grad_path = tmp_path / "grad.npy"
    out = np.lib.format.open_memmap(grad_path, mode="w+", dtype=np.float32, shape=(N, C))
    (loss, grad), peak = _peak(
        lambda: xentc.cross_entropy_with_grad(mapped, target, z_loss=1e-4, out=out)
    )
    assert peak < LIMIT
    assert grad is out or np.shares_memory(grad, out)
    out.flush()
    want_loss, want_grad = xentc.cross_entropy_with_grad(logits, target, z_loss=1e-4)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(np.load(grad_path), want_grad, rtol=1e-5, atol=1e-9)


def test_grad_over_the_logits_file_in_place(npy):
    # out=logits on a map opened "r+": the gradient replaces the logits in the file.
    path, logits, target = npy
    mapped = np.load(path, mmap_mode="r+")
    (loss, lse, grad), peak = _peak(
        lambda: xentc.cross_entropy_with_grad(mapped, target, return_lse=True, out=mapped)
    )
    assert peak < LIMIT and np.shares_memory(grad, mapped)
    mapped.flush()
    want_loss, want_lse, want_grad = xentc.cross_entropy_with_grad(logits, target, return_lse=True)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6)  # the logits' lse, read before
    np.testing.assert_allclose(np.load(path), want_grad, rtol=1e-5, atol=1e-9)

"""xentc._dask_shards.cross_entropy_blocks (dask arrays chunked along the classes) against the
core API on the same data: class chunks, class + row chunks, every option; bitwise the same on
the synchronous, threaded and process schedulers; no task reads more than one block of logits.
The 2-worker dask.distributed LocalCluster runs are xentc.dask's tests (tests/test_dask.py)."""

import math
import threading

import numpy as np
import pytest
from conftest import TOL
from reference import check_grad, unit_grad_scale

da = pytest.importorskip("dask.array", reason="dask is an optional extra (pip install xentc[dask])")
import dask

import xentc
from xentc._dask_shards import cross_entropy_blocks

CHUNKINGS = {
    "classes": ((12,), (10, 25, 15)),
    "classes+rows": ((5, 7), (1, 24, 25)),
    "one-class-blocks": ((12,), (1,) * 50),
}


def make_problem(kind, dtype, rng, shape=(12, 50)):
    logits = (rng.normal(size=shape) * 3).astype(dtype)
    if kind == "index":
        target = rng.integers(0, shape[-1], shape[:-1])
        target.flat[::5] = 4  # some rows ignored (ignore_index=4 below)
    else:
        target = rng.uniform(size=shape) ** 3
        target = (target / target.sum(axis=-1, keepdims=True)).astype(dtype)
    return logits, target


OPTIONS = [
    {"reduction": "mean"},
    {"reduction": "sum", "label_smoothing": 0.1, "z_loss": 1e-3, "weight": True},
    {"reduction": "none", "sample_weight": True, "grad_output": "rows"},
    {
        "reduction": "mean",
        "sample_weight": True,
        "weight": True,
        "ignore_index": 4,
        "label_smoothing": 0.2,
        "z_loss": 1e-2,
        "grad_output": 0.5,
    },
]


def concrete(options, rng, lead_shape, n_classes):
    out = dict(options)
    if out.pop("weight", False):
        out["weight"] = rng.uniform(0.5, 2.0, n_classes)
    if out.pop("sample_weight", False):
        s = rng.uniform(0.0, 2.0, lead_shape)
        s.flat[1] = 0.0
        out["sample_weight"] = s
    if out.get("grad_output") == "rows":
        out["grad_output"] = rng.normal(size=lead_shape)
    return out


def blocks_call(logits, target, chunks, options, *, dask_inputs=False):
    darr = da.from_array(logits, chunks=chunks)
    kwargs = dict(options)
    if dask_inputs:
        target = da.from_array(target)
        for name in ("sample_weight", "grad_output"):
            if isinstance(kwargs.get(name), np.ndarray):
                kwargs[name] = da.from_array(kwargs[name], chunks=3)
    return cross_entropy_blocks(darr, target, with_grad=True, return_lse=True, **kwargs)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(sorted(o)))
def test_matches_the_core_api(kind, chunking, options, dtype, rng):
    logits, target = make_problem(kind, dtype, rng)
    opts = concrete(options, rng, logits.shape[:-1], logits.shape[-1])
    if kind == "prob":
        opts.pop("ignore_index", None)
    loss, lse, grad = blocks_call(
        logits, target, CHUNKINGS[chunking], opts, dask_inputs=chunking == "classes+rows"
    )
    assert grad.chunks == da.from_array(logits, chunks=CHUNKINGS[chunking]).chunks
    loss_v, lse_v, grad_v = dask.compute(loss, lse, grad, scheduler="threads")
    core_loss, core_lse, core_grad = xentc.cross_entropy_with_grad(
        logits, target, return_lse=True, **opts
    )
    tol = TOL[dtype]
    if opts["reduction"] == "none":
        assert loss_v.dtype == dtype and loss_v.shape == core_loss.shape
    else:
        assert loss.shape == () and np.ndim(loss_v) == 0
    np.testing.assert_allclose(
        np.asarray(loss_v, np.float64), core_loss, rtol=tol["rtol"], atol=tol["atol"]
    )
    assert lse_v.dtype == dtype
    np.testing.assert_allclose(lse_v, core_lse, rtol=tol["rtol"], atol=tol["atol"])
    assert grad_v.dtype == dtype
    scale = unit_grad_scale(
        logits, target, opts, opts.get("grad_output"), core_lse.astype(np.float64)
    )
    check_grad(grad_v, core_grad.astype(np.float64), dtype, scale, chunking)


def test_three_dimensional_rows_and_loss_only(rng):
    logits = rng.normal(size=(2, 6, 30)).astype(np.float32)
    target = rng.integers(0, 30, (2, 6))
    darr = da.from_array(logits, chunks=(1, 4, 12))
    for reduction in ("none", "mean", "sum"):
        loss = cross_entropy_blocks(darr, target, reduction=reduction, label_smoothing=0.1)
        expected = xentc.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
        np.testing.assert_allclose(loss.compute(scheduler="threads"), expected, rtol=1e-5)
    loss, grad = cross_entropy_blocks(darr, target, with_grad=True, reduction="sum")
    _, expected = xentc.cross_entropy_with_grad(logits, target, reduction="sum")
    np.testing.assert_allclose(grad.compute(scheduler="threads"), expected, atol=1e-6)


def test_dask_weight_and_scalar_grad_output_stay_lazy(rng):
    # a class weight chunked unlike the logits' classes and a 0-d dask grad_output: both are
    # rechunked or broadcast inside the graph, none computed while it is built
    logits = rng.normal(size=(9, 40))
    target = rng.integers(0, 40, 9)
    weight = rng.uniform(0.5, 2.0, 40)
    opts = dict(label_smoothing=0.1, z_loss=1e-3)
    for reduction in ("mean", "sum"):
        loss, grad = cross_entropy_blocks(
            da.from_array(logits, chunks=(4, 15)),
            da.from_array(target, chunks=5),
            with_grad=True,
            weight=da.from_array(weight, chunks=7),
            grad_output=da.from_array(np.float64(-2.5)),
            reduction=reduction,
            **opts,
        )
        want_loss, want_grad = xentc.cross_entropy_with_grad(
            logits, target, weight=weight, grad_output=-2.5, reduction=reduction, **opts
        )
        loss_v, grad_v = dask.compute(loss, grad, scheduler="sync")
        np.testing.assert_allclose(float(loss_v), want_loss, rtol=1e-12)
        np.testing.assert_allclose(grad_v, want_grad, rtol=1e-12, atol=1e-15)


def test_mean_of_fully_ignored_row_blocks(rng):
    logits = rng.normal(size=(8, 20))
    target = rng.integers(0, 20, 8)
    target[:4] = -100  # the first block of rows has nothing that counts
    loss, grad = cross_entropy_blocks(da.from_array(logits, chunks=(4, 5)), target, with_grad=True)
    expected_loss, expected_grad = xentc.cross_entropy_with_grad(logits, target)
    np.testing.assert_allclose(float(loss.compute()), expected_loss, rtol=1e-12)
    np.testing.assert_allclose(grad.compute(), expected_grad, atol=1e-12)
    # all rows ignored: nan, and an all-zero gradient
    loss, grad = cross_entropy_blocks(
        da.from_array(logits, chunks=(4, 5)), np.full(8, -100), with_grad=True
    )
    assert math.isnan(float(loss.compute())) and not grad.compute().any()


def test_bitwise_identical_across_schedulers(rng):
    logits, target = make_problem("index", np.float32, rng, shape=(40, 300))
    options = {
        "reduction": "mean",
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "weight": rng.uniform(0.5, 2.0, 300),
        "sample_weight": rng.uniform(size=40),
    }
    darr = da.from_array(logits, chunks=(9, 70))
    results = cross_entropy_blocks(darr, target, with_grad=True, return_lse=True, **options)
    sync = dask.compute(*results, scheduler="synchronous")
    for workers in (2, 4):
        threaded = dask.compute(*results, scheduler="threads", num_workers=workers)
        for a, b in zip(sync, threaded):
            np.testing.assert_array_equal(a, b)


def test_bitwise_identical_in_worker_processes(rng):
    # tasks and their results (ShardStats, ShardTotals) travel between processes pickled
    logits, target = make_problem("prob", np.float64, rng, shape=(20, 90))
    darr = da.from_array(logits, chunks=(10, 30))
    results = cross_entropy_blocks(
        darr, target, with_grad=True, return_lse=True, reduction="mean", label_smoothing=0.1
    )
    sync = dask.compute(*results, scheduler="synchronous")
    spawned = dask.compute(*results, scheduler="processes", num_workers=2)
    for a, b in zip(sync, spawned):
        np.testing.assert_array_equal(a, b)


class CountingArray:
    """An array-like for da.from_array that records the size of every read."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads = []
        self.lock = threading.Lock()

    def __getitem__(self, index):
        block = self.array[index]
        with self.lock:
            self.reads.append(block.size)
        return block


def test_no_task_reads_more_than_one_block(rng):
    logits = rng.normal(size=(16, 60))
    source = CountingArray(logits)
    darr = da.from_array(source, chunks=(8, 20), asarray=True)
    loss, grad = cross_entropy_blocks(darr, rng.integers(0, 60, 16), with_grad=True)
    dask.compute(loss, grad, scheduler="threads")
    # each of the 6 blocks read once for the statistics and once more for the gradient
    assert sorted(r for r in source.reads if r) == [8 * 20] * 12

"""xentc.dask against the core API on the same data, for arrays chunked by rows.

Every layout (blocks of one row, uneven blocks, (batch, seq, vocab) logits chunked on both
leading axes) runs every option through the threaded scheduler and is compared with the single
NumPy call: within the spec's tolerance (the blocks' sums are added in another order than the
single call adds its rows). The same graphs then run on a 2-worker dask.distributed LocalCluster
(worker processes, on loopback), on dask's multiprocessing and synchronous schedulers, and must
give bitwise the same arrays as on threads. Errors: the core API's, at graph build for kinds,
dtypes and shapes (the inputs are poisoned so that computing them fails the test), at compute for
values.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip(
    "dask.array", reason="xentc.dask needs the optional dask extra: pip install 'xentc[dask]'"
)

from conftest import TOL
from reference import unit_grad_scale
from test_errors import COMMON, GRAD_OUTPUT

import xentc
import xentc.dask as xd

# (id, logits shape, row chunks, class chunk). Row chunks cover the leading axes; a class chunk
# of -1 keeps each row's classes in one block, any other splits them (vocabulary shards, handed
# to xentc._dask_shards).
LAYOUTS = [
    ("rows-even", (64, 37), (16,), -1),
    ("one-row-blocks", (7, 300), (1,), -1),
    ("uneven", (50, 130), ((5, 20, 1, 24),), -1),
    ("bsv-3d", (4, 9, 50), ((1, 3), (4, 5)), -1),
]
CLASS_LAYOUTS = [
    ("class-chunks", (24, 40), (24,), 13),
    ("rows-and-classes-3d", (4, 6, 30), ((1, 3), (4, 2)), 7),
]
# 29 blocks: the tree over blocks has two levels (16 blocks a node).
MANY_BLOCKS = ("many-blocks", (200, 9), (7,), -1)


def _layout_params():
    return [pytest.param(*lay, id=lay[0]) for lay in LAYOUTS] + [
        pytest.param(*lay, id=lay[0]) for lay in CLASS_LAYOUTS
    ]


# (id, target kind, options). "ignore_block" ignores every row of the first block.
OPTIONS = [
    ("plain", "index", {}),
    (
        "weight-ignored-block-smoothing",
        "index",
        {"weight": True, "ignore_block": True, "label_smoothing": 0.1},
    ),
    (
        "sample_weight-zloss-custom-ignore",
        "index",
        {"sample_weight": True, "z_loss": 1e-3, "ignore_index": 3, "some_ignored": True},
    ),
    (
        "probs-weight-sample_weight",
        "prob",
        {"weight": True, "sample_weight": True, "label_smoothing": 0.05},
    ),
    ("all-ignored", "index", {"all_ignored": True, "weight": True}),
]


def _data(rng, shape, dtype, kind, spec, row_chunks=None):
    """NumPy inputs for one case: (logits, target, keyword options)."""
    lead, n_classes = shape[:-1], shape[-1]
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    kw = {k: v for k, v in spec.items() if k in ("label_smoothing", "z_loss", "ignore_index")}
    ignore = spec.get("ignore_index", -100)
    if kind == "index":
        target = rng.integers(0, n_classes, lead)
        if spec.get("some_ignored"):
            target[rng.random(lead) < 0.2] = ignore
        if spec.get("ignore_block"):  # every row of the first block of rows
            chunks = da.core.normalize_chunks(row_chunks or (-1,) * len(lead), lead)
            target[tuple(slice(0, c[0]) for c in chunks)] = ignore
        if spec.get("all_ignored"):
            target[...] = ignore
    else:
        target = rng.random(shape)
        target /= target.sum(axis=-1, keepdims=True)
    if spec.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2.0, n_classes)
    if spec.get("sample_weight"):
        s = rng.uniform(0.0, 2.0, lead)
        s[rng.random(lead) < 0.1] = 0.0
        kw["sample_weight"] = s
    return logits, target, kw


def _chunked(logits, target, kw, row_chunks, grad_output=None, class_chunk=-1):
    """Dask versions of the inputs: logits chunked by rows (and classes), target as a dask array
    of the same blocks, sample_weight left as NumPy (xentc.dask rechunks it), weight as a dask
    array."""
    chunks = (*row_chunks, class_chunk)
    dl = da.from_array(logits, chunks=chunks)
    dt = da.from_array(target, chunks=chunks if target.ndim == logits.ndim else row_chunks)
    dkw = dict(kw)
    if "weight" in kw:
        dkw["weight"] = da.from_array(kw["weight"], chunks=-1)
    if isinstance(grad_output, np.ndarray):
        dkw["grad_output"] = da.from_array(grad_output, chunks=row_chunks)
    elif grad_output is not None:
        dkw["grad_output"] = grad_output
    return dl, dt, dkw


def _grad_outputs(reduction, lead, rng):
    if reduction == "none":
        return [None, 0.5, rng.uniform(-2.0, 2.0, lead)]
    return [None, -1.5]


def _close_loss(got, want, dtype, msg):
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(
        np.asarray(got, np.float64),
        np.asarray(want, np.float64),
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=msg,
    )


def _close_grad(got, want, logits, target, kw, grad_output, lse, dtype, msg):
    assert got.shape == want.shape and got.dtype == want.dtype, msg
    scale = unit_grad_scale(logits, target, kw, grad_output, lse.astype(np.float64))
    np.testing.assert_allclose(
        got.astype(np.float64) * scale,
        want.astype(np.float64) * scale,
        rtol=0,
        atol=TOL[np.dtype(dtype)]["grad_atol"],
        equal_nan=True,
        err_msg=msg,
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("opt_id, kind, spec", OPTIONS, ids=[o[0] for o in OPTIONS])
@pytest.mark.parametrize("layout_id, shape, row_chunks, class_chunk", _layout_params())
def test_matches_core_api(
    layout_id, shape, row_chunks, class_chunk, opt_id, kind, spec, reduction, rng
):
    dtype = np.float32 if layout_id != "uneven" else np.float64
    logits, target, kw = _data(rng, shape, dtype, kind, spec, row_chunks)
    kw["reduction"] = reduction

    want_loss, want_lse = xentc.cross_entropy(logits, target, return_lse=True, **kw)
    dl, dt, dkw = _chunked(logits, target, kw, row_chunks, class_chunk=class_chunk)
    loss, lse = xd.cross_entropy(dl, dt, return_lse=True, **dkw)
    assert isinstance(loss, da.Array) and isinstance(lse, da.Array)
    assert lse.chunks == dl.chunks[:-1] and lse.dtype == dtype
    if reduction == "none":
        assert loss.chunks == dl.chunks[:-1] and loss.dtype == dtype
    else:
        assert loss.shape == ()
    got_loss, got_lse = da.compute(loss, lse, scheduler="threads")
    _close_loss(got_loss, want_loss, dtype, f"loss, {layout_id} {opt_id} {reduction}")
    _close_loss(got_lse, want_lse, dtype, f"lse, {layout_id} {opt_id}")
    if opt_id == "all-ignored" and reduction == "mean":
        assert math.isnan(got_loss)
    # Without return_lse: the bare loss, the same value.
    assert np.array_equal(
        xd.cross_entropy(dl, dt, **dkw).compute(scheduler="threads"), got_loss, equal_nan=True
    )

    for grad_output in _grad_outputs(reduction, shape[:-1], rng):
        want = xentc.cross_entropy_with_grad(logits, target, grad_output=grad_output, **kw)
        dl, dt, dkw = _chunked(logits, target, kw, row_chunks, grad_output, class_chunk)
        loss, lse, grad = xd.cross_entropy_with_grad(dl, dt, return_lse=True, **dkw)
        assert grad.chunks == dl.chunks and grad.dtype == dtype
        got = da.compute(loss, lse, grad, scheduler="threads")
        msg = f"{layout_id} {opt_id} {reduction} grad_output={type(grad_output).__name__}"
        _close_loss(got[0], want[0], dtype, "loss with grad, " + msg)
        # The loss is never scaled by grad_output, and the fused pass gives the same lse.
        _close_loss(got[0], want_loss, dtype, "loss with grad vs without, " + msg)
        assert np.array_equal(got[1], got_lse, equal_nan=True), msg
        _close_grad(
            got[2], want[1], logits, target, kw, grad_output, want_lse, dtype, "grad, " + msg
        )
        if opt_id == "all-ignored":
            assert not got[2].any(), msg


def test_dask_is_imported_by_xentc_dask_only():
    code = (
        "import sys, xentc; assert 'dask' not in sys.modules, 'import xentc imported dask'; "
        "import xentc.dask; assert 'dask.array' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numpy_inputs_mixed_in(rng):
    # NumPy logits are cut into blocks of rows; dask and NumPy targets, weights, grad_output mix.
    logits, target, kw = _data(
        rng, (40, 25), np.float32, "index", {"weight": True, "sample_weight": True}
    )
    go = rng.uniform(0.5, 1.5, 40)
    want = xentc.cross_entropy_with_grad(logits, target, reduction="none", grad_output=go, **kw)
    # Dask rows arrays chunked unlike the logits are rechunked to the logits' blocks of rows.
    misaligned = dict(kw, sample_weight=da.from_array(kw["sample_weight"], chunks=11))
    for args, options, g in [
        ((logits, da.from_array(target, chunks=7)), kw, go),
        ((da.from_array(logits, chunks=(13, 25)), target), kw, go),
        (
            (da.from_array(logits, chunks=(13, 25)), da.from_array(target, chunks=7)),
            misaligned,
            da.from_array(go, chunks=9),
        ),
    ]:
        loss, grad = xd.cross_entropy_with_grad(*args, reduction="none", grad_output=g, **options)
        if isinstance(args[0], da.Array):
            assert grad.chunks == args[0].chunks and loss.chunks == args[0].chunks[:1]
        got = da.compute(loss, grad)
        _close_loss(got[0], want[0], np.float32, "loss")
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


def test_one_row_and_no_rows(rng):
    logits = rng.standard_normal(11).astype(np.float32)
    dl = da.from_array(logits, chunks=-1)
    for reduction in ("none", "mean", "sum"):
        want = xentc.cross_entropy_with_grad(
            logits, np.int64(4), reduction=reduction, return_lse=True
        )
        got = da.compute(
            *xd.cross_entropy_with_grad(dl, np.int64(4), reduction=reduction, return_lse=True)
        )
        for g, w in zip(got, want):
            assert np.shape(g) == np.shape(w)
            np.testing.assert_allclose(g, w, rtol=1e-6)
    empty = da.zeros((0, 5), dtype=np.float64, chunks=(4, 5))
    no_target = np.zeros(0, np.int64)
    assert math.isnan(xd.cross_entropy(empty, no_target).compute())
    assert xd.cross_entropy(empty, no_target, reduction="sum").compute() == 0.0
    loss, grad = xd.cross_entropy_with_grad(empty, no_target, reduction="none")
    assert loss.compute().shape == (0,) and grad.compute().shape == (0, 5)


def test_mean_grad_uses_global_denominator(rng):
    # Blocks whose own denominators differ widely: a per-block mean would be visibly wrong.
    logits, target, kw = _data(rng, (30, 6), np.float64, "index", {"weight": True})
    target[:10] = -100
    target[10:12] = 0
    kw["weight"][0] = 50.0
    want_loss, want_grad = xentc.cross_entropy_with_grad(logits, target, **kw)
    dl = da.from_array(logits, chunks=(10, 6))
    loss, grad = da.compute(*xd.cross_entropy_with_grad(dl, target, **kw))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)


def test_dask_scalar_grad_output(rng):
    logits, target, _ = _data(rng, (20, 8), np.float64, "index", {})
    want = xentc.cross_entropy_with_grad(logits, target, grad_output=0.25)
    go = da.from_array(np.array(0.25))
    got = da.compute(
        *xd.cross_entropy_with_grad(da.from_array(logits, chunks=(6, 8)), target, grad_output=go)
    )
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-16)


def test_tree_order_is_fixed(rng):
    # The same chunking, built twice and run with different numbers of threads, gives the same
    # bits; with many blocks the tree has several levels (16 per node).
    logits, target, kw = _data(rng, (600, 5), np.float32, "index", {"sample_weight": True})
    dl = da.from_array(logits, chunks=(3, 5))
    results = set()
    for workers in (1, 2, 5):
        loss, grad = xd.cross_entropy_with_grad(dl, target, **kw)
        value, g = da.compute(loss, grad, scheduler="threads", num_workers=workers)
        results.add((float(value), g.tobytes()))
    assert len(results) == 1


# ---- the same graphs on other schedulers: bitwise --------------------------------------------


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip(
        "distributed", reason="the LocalCluster tests need distributed (the dask extra)"
    )
    # Worker processes on loopback only; no dashboard. Started and closed by this fixture.
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


# (layout, option set, reduction) run on the other schedulers: each layout and option set and
# every reduction at least once (a distributed task costs milliseconds here, so not every one).
OTHER_SCHEDULERS = [
    ("rows-even", "weight-ignored-block-smoothing", "mean"),
    ("one-row-blocks", "sample_weight-zloss-custom-ignore", "none"),
    ("uneven", "probs-weight-sample_weight", "sum"),
    ("bsv-3d", "plain", "mean"),
    ("bsv-3d", "sample_weight-zloss-custom-ignore", "none"),
    ("many-blocks", "probs-weight-sample_weight", "mean"),
    ("rows-even", "all-ignored", "mean"),
]
OTHER_SCHEDULERS += [
    ("class-chunks", "weight-ignored-block-smoothing", "mean"),
    ("rows-and-classes-3d", "probs-weight-sample_weight", "none"),
    ("rows-and-classes-3d", "sample_weight-zloss-custom-ignore", "sum"),
]


def _graphs(rng):
    """(id, lazy loss + lse + grad) for each case of OTHER_SCHEDULERS."""
    layouts = {lay[0]: lay for lay in [*LAYOUTS, *CLASS_LAYOUTS, MANY_BLOCKS]}
    options = {opt[0]: opt for opt in OPTIONS}
    out = []
    for layout_id, opt_id, reduction in OTHER_SCHEDULERS:
        _, shape, row_chunks, class_chunk = layouts[layout_id]
        _, kind, spec = options[opt_id]
        logits, target, kw = _data(rng, shape, np.float32, kind, spec, row_chunks)
        go = rng.uniform(-1, 1, shape[:-1]) if reduction == "none" else 0.75
        dl, dt, dkw = _chunked(logits, target, kw, row_chunks, go, class_chunk)
        lazy = xd.cross_entropy_with_grad(dl, dt, reduction=reduction, return_lse=True, **dkw)
        out.append((f"{layout_id}/{opt_id}/{reduction}", lazy))
    return out


def _bits(arrays):
    return [np.asarray(a).tobytes() for a in arrays]


def test_bitwise_on_local_cluster(cluster_client, rng):
    graphs = _graphs(rng)
    on_threads = da.compute(*[g for _, g in graphs], scheduler="threads")
    on_cluster = cluster_client.gather(cluster_client.compute([g for _, g in graphs]))
    for (case, _), here, there in zip(graphs, on_threads, on_cluster):
        assert _bits(here) == _bits(there), case


def test_bitwise_on_processes_and_sync(rng):
    graphs = _graphs(rng)
    on_threads = da.compute(*[g for _, g in graphs], scheduler="threads")
    for scheduler in ("sync", "processes"):
        other = da.compute(*[g for _, g in graphs], scheduler=scheduler, num_workers=2)
        for (case, _), here, there in zip(graphs, on_threads, other):
            assert _bits(here) == _bits(there), f"{case} on {scheduler}"


def test_value_error_raised_on_cluster(cluster_client, rng):
    logits, target, _ = _data(rng, (40, 6), np.float32, "index", {})
    target[33] = 6
    loss = xd.cross_entropy(da.from_array(logits, chunks=(10, 6)), target)
    with pytest.raises(ValueError, match=r"target[\s\S]*(?<!\d)6(?!\d)"):
        cluster_client.compute(loss).result()


# ---- .npy files on disk -----------------------------------------------------------------------


def test_npy_file_round_trip(tmp_path, cluster_client, rng):
    logits, target, _ = _data(rng, (96, 40), np.float32, "index", {"some_ignored": True})
    path = tmp_path / "logits.npy"
    np.save(path, logits)
    want_loss, want_grad = xentc.cross_entropy_with_grad(logits, target)

    dl = xd.from_npy(path, chunks=(25, 40))
    assert dl.chunks == ((25, 25, 25, 21), (40,)) and dl.dtype == np.float32
    assert xd.from_npy(path).chunks[-1] == (40,)  # default: the classes in one block
    # The graph holds the path, not the data.
    assert len(__import__("pickle").dumps(dict(dl.__dask_graph__()))) < logits.nbytes / 4
    for run in ("threads", "cluster"):
        loss, grad = xd.cross_entropy_with_grad(dl, target)
        out = tmp_path / f"grad-{run}.npy"
        if run == "threads":
            xd.to_npy(grad, out, scheduler="threads")
            value = loss.compute(scheduler="threads")
        else:
            stored = xd.to_npy(grad, out, compute=False)
            value, _ = cluster_client.compute([loss, stored], sync=True)
        np.testing.assert_allclose(value, want_loss, rtol=1e-5)
        np.testing.assert_allclose(np.load(out), want_grad, rtol=1e-5, atol=1e-7)
    assert (
        np.load(tmp_path / "grad-threads.npy").tobytes()
        == np.load(tmp_path / "grad-cluster.npy").tobytes()
    )


def test_one_pass_for_loss_lse_grad_and_store(tmp_path, monkeypatch, rng):
    # Computing the loss, the lse and the stored gradient together runs each block's kernel
    # once: the shared block layer is not duplicated into each output's graph.
    calls = []
    block_xent = xd._block_xent

    def counting(*args, **kwargs):
        calls.append(1)
        return block_xent(*args, **kwargs)

    monkeypatch.setattr(xd, "_block_xent", counting)
    logits, target, _ = _data(rng, (60, 12), np.float32, "index", {})
    path = tmp_path / "logits.npy"
    np.save(path, logits)
    dl = xd.from_npy(path, chunks=(20, 12))
    loss, lse, grad = xd.cross_entropy_with_grad(dl, target, return_lse=True)
    stored = xd.to_npy(grad, tmp_path / "grad.npy", compute=False)
    __import__("dask").compute(loss, lse, stored, scheduler="threads")
    assert len(calls) == 3
    np.testing.assert_allclose(
        np.load(tmp_path / "grad.npy"),
        xentc.cross_entropy_with_grad(logits, target)[1],
        rtol=1e-5,
        atol=1e-8,
    )


def test_npy_file_read_only(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="read-only"):
        xd.NpyFile(path)[0] = 1.0


# ---- errors -------------------------------------------------------------------------------------

# Cases of test_errors whose fault is in the values: they can only be found in the blocks.
VALUE_CASES = {
    "target-index-C",
    "target-index-negative",
    "target-index-custom-ignore",
    "target-uint16-65436",
    "target-uint64-wraps-to-minus-100",
    "target-int8-out-of-range",
    "sample_weight-negative",
    "sample_weight-nan",
}


def _poison(block):
    raise AssertionError("an input was computed while the graph was built")


def _lazy(x, poisoned):
    if not isinstance(x, np.ndarray):
        return x
    chunks = tuple(max(1, n // 2) for n in x.shape) if x.ndim else ()
    if x.ndim:
        chunks = (*chunks[:-1], -1)
    arr = da.from_array(x, chunks=chunks)
    return arr.map_blocks(_poison, dtype=x.dtype, meta=x[:0]) if poisoned else arr


@pytest.mark.parametrize("with_grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("case_id, build, exc, match", COMMON, ids=[c[0] for c in COMMON])
def test_errors_as_core_api(case_id, build, exc, match, with_grad):
    logits, target, kw = build()
    value_case = case_id in VALUE_CASES
    dkw = {k: _lazy(v, not value_case) for k, v in kw.items()}
    fn = xd.cross_entropy_with_grad if with_grad else xd.cross_entropy
    args = (_lazy(logits, not value_case), _lazy(target, not value_case))
    if not value_case:
        with pytest.raises(exc, match=match):
            fn(*args, **dkw)  # at graph build, without computing any input
        return
    result = fn(*args, **dkw)
    with pytest.raises(exc, match=match):
        da.compute(result, scheduler="sync")


@pytest.mark.parametrize("case_id, build", GRAD_OUTPUT, ids=[c[0] for c in GRAD_OUTPUT])
def test_grad_output_errors_as_core_api(case_id, build):
    logits, target, kw = build()
    dkw = {k: _lazy(v, True) for k, v in kw.items()}
    with pytest.raises(ValueError, match="grad_output"):
        xd.cross_entropy_with_grad(_lazy(logits, True), _lazy(target, True), **dkw)


def test_unknown_chunk_sizes():
    x = da.from_array(np.zeros((6, 3)), chunks=(2, 3))
    x = x[x[:, 0] == 0]
    with pytest.raises(ValueError, match="logits must have known chunk sizes"):
        xd.cross_entropy(x, np.zeros(6, np.int64))

"""Vocabulary shards (xentc.shard_stats / combine_shards / shard_grad) against the whole-array
call: every option, splits down to blocks of one class, layouts, in place, non-finite rows (on
the instruction set in use; test_isa_parity.py runs the shards on the others); the merge
bitwise stable across n_threads and the order in which shards arrive."""

import math

import numpy as np
import pytest
from conftest import TOL
from reference import check_grad, ref_cross_entropy, ref_grad, unit_grad_scale
from strategies import with_layout

import xentc


def split_classes(n_classes, sizes):
    """(offset, size) of each block; sizes sum to n_classes."""
    assert sum(sizes) == n_classes
    offsets = np.cumsum([0, *sizes])[:-1]
    return [(int(o), int(s)) for o, s in zip(offsets, sizes)]


def run_shards(
    logits,
    target,
    sizes,
    *,
    with_grad=True,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    grad_output=None,
    n_threads=None,
    order=None,
    in_place=False,
):
    """(loss, lse, grad) computed shard by shard, each call seeing one block only."""
    n_classes = logits.shape[-1]
    blocks = split_classes(n_classes, sizes)
    prob = np.asarray(target).dtype.kind == "f"

    def block_target(o, s):
        return target[..., o : o + s] if prob else target

    stats = [
        xentc.shard_stats(
            logits[..., o : o + s],
            block_target(o, s),
            class_offset=o,
            n_classes=n_classes,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            n_threads=n_threads,
        )
        for o, s in blocks
    ]
    if order is not None:
        stats = [stats[k] for k in order]
    totals = xentc.combine_shards(
        stats, sample_weight=sample_weight, reduction=reduction, z_loss=z_loss
    )
    if not with_grad:
        return totals.loss, totals.lse, None
    grad = np.empty(logits.shape, dtype=logits.dtype)
    for o, s in blocks:
        block = logits[..., o : o + s]
        out = block if in_place else None
        g = xentc.shard_grad(
            block,
            block_target(o, s),
            totals,
            class_offset=o,
            weight=weight,
            grad_output=grad_output,
            out=out,
            n_threads=n_threads,
        )
        if in_place:
            assert g is block or np.shares_memory(g, block)
        grad[..., o : o + s] = g
    return totals.loss, totals.lse, grad


def assert_matches_core(logits, target, sizes, dtype, **options):
    """Shards vs xentc.cross_entropy_with_grad on the whole array, within the spec's tolerance
    (the gradient scaled to a unit-size loss, as tests/reference.py does)."""
    tol = TOL[np.dtype(dtype)]
    options = {"reduction": "mean", **options}
    core_loss, core_lse, core_grad = xentc.cross_entropy_with_grad(
        logits, target, return_lse=True, **options
    )
    loss, lse, grad = run_shards(logits, target, sizes, **options)
    msg = f"sizes {sizes}, options {sorted(options)}"
    if options["reduction"] == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype
        assert loss.shape == core_loss.shape
    else:
        assert type(loss) is float
    np.testing.assert_allclose(
        np.asarray(loss, np.float64),
        np.asarray(core_loss, np.float64),
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=f"loss: {msg}",
    )
    assert lse.dtype == dtype and lse.shape == core_lse.shape
    np.testing.assert_allclose(
        lse.astype(np.float64),
        core_lse.astype(np.float64),
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=f"lse: {msg}",
    )
    ref_lse = core_lse.astype(np.float64)
    scale = unit_grad_scale(logits, target, options, options.get("grad_output"), ref_lse)
    check_grad(grad, core_grad.astype(np.float64), dtype, scale, msg)
    return loss, lse, grad


SPLITS_37 = [[37], [1] * 37, [10, 27], [5, 16, 16], [36, 1], [1, 35, 1]]

OPTION_SETS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": "w"},
    {"sample_weight": "s"},
    {"ignore_index": 3},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"reduction": "none", "grad_output": "rows"},
    {"grad_output": -0.5},
    {
        "weight": "w",
        "sample_weight": "s",
        "label_smoothing": 0.2,
        "z_loss": 1e-2,
        "ignore_index": 3,
        "reduction": "mean",
        "grad_output": 2.0,
    },
    {
        "weight": "w",
        "sample_weight": "s",
        "label_smoothing": 0.05,
        "z_loss": 1e-3,
        "reduction": "none",
        "grad_output": "rows",
    },
]


def make_options(options, rng, lead_shape, n_classes, dtype):
    out = dict(options)
    if out.get("weight") == "w":
        out["weight"] = rng.uniform(0.2, 2.0, n_classes).astype(dtype)
    if out.get("sample_weight") == "s":
        s = rng.uniform(0.0, 2.0, lead_shape)
        s.flat[0] = 0.0  # a row that does not count
        out["sample_weight"] = s
    if isinstance(out.get("grad_output"), str):
        out["grad_output"] = rng.normal(size=lead_shape)
    return out


def make_target(kind, rng, lead_shape, n_classes, dtype, ignore_index=-100):
    if kind == "index":
        t = rng.integers(0, n_classes, lead_shape)
        if ignore_index != -100:
            t.flat[1::4] = ignore_index  # ignored rows
        return t
    t = rng.uniform(0, 1, (*lead_shape, n_classes)) ** 4
    t /= t.sum(axis=-1, keepdims=True)
    return t.astype(dtype)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(sorted(o)) or "plain")
def test_every_option_and_split_matches_core(kind, options, dtype, rng):
    lead_shape, n_classes = (9,), 37
    logits = (rng.normal(size=(*lead_shape, n_classes)) * 3).astype(dtype)
    opts = make_options(options, rng, lead_shape, n_classes, dtype)
    if kind == "prob":
        opts.pop("ignore_index", None)
    target = make_target(kind, rng, lead_shape, n_classes, dtype, opts.get("ignore_index", -100))
    for sizes in SPLITS_37:
        assert_matches_core(logits, target, sizes, dtype, **opts)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_long_rows_and_blocks_longer_than_a_chunk(kind, rng):
    # blocks across the kernels' 512-logit blocks and 32768-logit chunks; float32, the
    # tolerance that matters
    dtype = np.dtype(np.float32)
    n_classes = 70000
    logits = (rng.normal(size=(2, n_classes)) * 4).astype(dtype)
    target = make_target(kind, rng, (2,), n_classes, dtype)
    for sizes in ([40000, 30000], [1, 511, 513, 68975]):
        assert_matches_core(logits, target, sizes, dtype, label_smoothing=0.1, z_loss=1e-4)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_confident_rows_keep_their_digits(kind, dtype, rng):
    # The target (or the largest probability) far above the rest: the loss is ~1e-12 of its
    # lse. The shards keep the split of the whole-row kernel, so its relative accuracy holds.
    n_classes = 64
    logits = rng.normal(size=(6, n_classes)).astype(dtype)
    y = np.array([0, 5, 31, 32, 63, 40])
    logits[np.arange(6), y] = 40.0
    logits[5] += 1000.0  # a large lse, a tiny loss
    if kind == "index":
        target = y
    else:
        target = np.zeros((6, n_classes), dtype=dtype)
        target[np.arange(6), y] = 1.0
    for sizes in ([64], [32, 32], [1] * 64, [5, 27, 32]):
        loss, _, grad = run_shards(logits, target, sizes, reduction="none")
        ref_loss, _ = ref_cross_entropy(logits, target, reduction="none")
        np.testing.assert_allclose(
            loss.astype(np.float64), ref_loss, rtol=TOL[dtype]["rtol"], atol=0, err_msg=f"{sizes}"
        )
        expected = ref_grad(logits, target, reduction="none")
        # the target class's p - 1, a tiny number, to its own relative accuracy
        np.testing.assert_allclose(
            grad[np.arange(6), y].astype(np.float64), expected[np.arange(6), y], rtol=1e-4, atol=0
        )


def test_against_the_reference(dtype, rng):
    # one independent check besides the core API: the float64 reference of tests/reference.py
    logits = (rng.normal(size=(5, 23)) * 2).astype(dtype)
    target = rng.integers(0, 23, 5)
    options = {
        "weight": rng.uniform(0.5, 1.5, 23),
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "reduction": "mean",
    }
    loss, lse, grad = run_shards(logits, target, [7, 1, 15], **options)
    ref_loss, ref_lse = ref_cross_entropy(logits, target, **options)
    tol = TOL[dtype]
    np.testing.assert_allclose(loss, ref_loss, rtol=tol["rtol"], atol=tol["atol"])
    np.testing.assert_allclose(lse.astype(np.float64), ref_lse, rtol=tol["rtol"], atol=tol["atol"])
    check_grad(
        grad,
        ref_grad(logits, target, **options),
        dtype,
        unit_grad_scale(logits, target, options, None, ref_lse),
        "reference",
    )


@pytest.mark.parametrize("layout", ["every-other-col", "cols-reversed", "F", "3d-strided"])
def test_layouts(layout, dtype, rng):
    n_classes = 30
    values = (rng.normal(size=(8, n_classes)) * 2).astype(dtype)
    if layout == "3d-strided":
        logits = with_layout(values.reshape(2, 4, n_classes), "strided")
    else:
        logits = with_layout(values, layout)
    lead_shape = logits.shape[:-1]
    for kind in ("index", "prob"):
        target = make_target(kind, rng, lead_shape, n_classes, dtype)
        if kind == "prob":  # strided probabilities of the other float dtype
            other = np.float32 if dtype == np.float64 else np.float64
            target = np.asfortranarray(target.astype(other))
        assert_matches_core(logits, target, [11, 19], dtype, reduction="none", label_smoothing=0.1)
        assert_matches_core(logits, target, [1, 28, 1], dtype, sample_weight=np.ones(lead_shape))


@pytest.mark.parametrize("strided", [False, True])
def test_in_place(strided, dtype, rng):
    n_classes = 40
    base = (rng.normal(size=(6, 2 * n_classes)) * 2).astype(dtype)
    target = rng.integers(0, n_classes, 6)
    logits = base[:, ::2] if strided else base[:, :n_classes].copy()
    before = base.copy()
    expected_loss, expected_grad = xentc.cross_entropy_with_grad(logits.copy(), target)
    loss, _, grad = run_shards(logits, target, [13, 27], in_place=True)
    np.testing.assert_allclose(loss, expected_loss, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(logits, expected_grad, atol=TOL[dtype]["grad_atol"])
    np.testing.assert_allclose(grad, expected_grad, atol=TOL[dtype]["grad_atol"])
    if strided:  # nothing outside the view written
        np.testing.assert_array_equal(base[:, 1::2], before[:, 1::2])


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_non_finite_rows(kind, dtype, rng):
    n_classes = 24
    logits = rng.normal(size=(8, n_classes)).astype(dtype)
    logits[0, 3] = np.nan  # NaN in the first shard
    logits[1, 20] = np.nan  # NaN in the last shard
    logits[2, 5] = np.inf  # +inf
    logits[3] = -np.inf  # every class masked
    logits[4, :12] = -np.inf  # a whole shard masked
    logits[5, 12:] = -np.inf
    logits[6, ::2] = -np.inf  # masked classes in every shard
    logits[7, :8] = np.nan  # a shard of NaN only
    target = make_target(kind, rng, (8,), n_classes, dtype)
    if kind == "index":
        target[4] = 15  # finite target, first shard masked
        target[5] = 2
        target[6] = 1  # an unmasked target
    else:
        target[6, ::2] = 0.0  # no mass on the masked classes
        target[6] /= target[6].sum()
    for sizes in ([24], [12, 12], [1] * 24, [5, 7, 12]):
        assert_matches_core(logits, target, sizes, dtype, reduction="none")
        assert_matches_core(logits, target, sizes, dtype, reduction="none", label_smoothing=0.1)
        assert_matches_core(logits, target, sizes, dtype, reduction="sum", z_loss=1e-3)


def test_masked_target_is_an_infinite_loss(dtype, rng):
    logits = rng.normal(size=(3, 10)).astype(dtype)
    logits[:, 7] = -np.inf
    loss, _, grad = run_shards(logits, np.array([7, 1, 7]), [5, 5], reduction="none")
    assert np.isposinf(loss[[0, 2]]).all() and np.isfinite(loss[1])
    # p_y = 0: the target's gradient is -1, the rest finite
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[[0, 2], 7], -1.0)


def test_ignored_and_zero_weight_rows(dtype, rng):
    logits = rng.normal(size=(6, 20)).astype(dtype)
    logits[0, 4] = np.nan  # an ignored NaN row still gets loss 0 and gradient 0
    target = np.array([-100, 3, -100, 5, 19, 0])
    sw = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 2.0])
    loss, lse, grad = run_shards(logits, target, [3, 17], reduction="none", sample_weight=sw)
    for row in (0, 1, 2, 4):
        assert loss[row] == 0 and not grad[row].any()
    assert_matches_core(logits, target, [3, 17], dtype, sample_weight=sw)
    # every row ignored: mean nan, gradient zeros, as the core API
    loss, lse, grad = run_shards(logits, np.full(6, -100), [10, 10])
    assert math.isnan(loss) and not grad.any()
    assert np.isnan(lse[0]) and np.isfinite(lse[1:]).all()
    loss, _, grad = run_shards(logits, np.full(6, -100), [10, 10], reduction="sum")
    assert loss == 0.0 and not grad.any()


def test_no_rows(dtype):
    logits = np.empty((0, 12), dtype=dtype)
    target = np.empty(0, dtype=np.int64)
    for reduction, expected in (("sum", 0.0), ("mean", math.nan)):
        loss, lse, grad = run_shards(logits, target, [4, 8], reduction=reduction)
        assert loss == expected or (math.isnan(loss) and math.isnan(expected))
        assert lse.shape == (0,) and grad.shape == (0, 12)


def test_bitwise_across_threads_and_shard_order(rng):
    logits = (rng.normal(size=(300, 500)) * 3).astype(np.float32)
    target = rng.integers(0, 500, 300)
    options = {
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "weight": rng.uniform(0.5, 2, 500),
        "reduction": "none",
    }
    sizes = [100, 1, 250, 149]
    first = run_shards(logits, target, sizes, n_threads=1, **options)
    for n_threads, order in ((2, None), (3, [3, 1, 0, 2]), (1, [2, 3, 1, 0])):
        again = run_shards(logits, target, sizes, n_threads=n_threads, order=order, **options)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)


def test_stats_describe_the_block(rng):
    logits = rng.normal(size=(4, 10))
    target = np.array([0, 6, 9, -100])
    stats = xentc.shard_stats(logits[:, 5:], target, class_offset=5, n_classes=10)
    assert isinstance(stats, xentc.ShardStats)
    np.testing.assert_array_equal(stats.pivot, [-1, 6, 9, -1])
    np.testing.assert_array_equal(stats.counted, [True, True, True, False])
    np.testing.assert_array_equal(stats.max, logits[:, 5:].max(axis=1))
    np.testing.assert_allclose(stats.target_logit[1:3], logits[[1, 2], [6, 9]])
    e = np.exp(logits[:, 5:] - logits[:, 5:].max(axis=1, keepdims=True))
    e[1, 1] = e[2, 4] = 0.0  # the target left out
    np.testing.assert_allclose(stats.sumexp, e.sum(axis=1), rtol=1e-13)


def test_block_weights_equal_sliced_full_weights(rng):
    # weight may hold all C class weights or just the block's: the same statistics and gradient
    logits = rng.normal(size=(5, 12))
    target = rng.integers(0, 12, 5)
    w = rng.uniform(0.5, 2.0, 12)
    full = [
        xentc.shard_stats(
            logits[:, o : o + 6],
            target,
            class_offset=o,
            n_classes=12,
            weight=w,
            label_smoothing=0.1,
        )
        for o in (0, 6)
    ]
    own = [
        xentc.shard_stats(
            logits[:, o : o + 6],
            target,
            class_offset=o,
            n_classes=12,
            weight=w[o : o + 6],
            label_smoothing=0.1,
        )
        for o in (0, 6)
    ]
    for a, b in zip(full, own):
        for name in ("max", "sumexp", "pivot", "pivot_weight", "weight_sum", "gap"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    totals = xentc.combine_shards(full)
    np.testing.assert_array_equal(
        xentc.shard_grad(logits[:, 6:], target, totals, class_offset=6, weight=w),
        xentc.shard_grad(logits[:, 6:], target, totals, class_offset=6, weight=w[6:]),
    )


# ---- errors ----------------------------------------------------------------------------------


def test_errors_name_the_argument(rng):
    logits = rng.normal(size=(3, 10))
    target = np.array([1, 2, 9])
    good = dict(class_offset=0, n_classes=10)
    with pytest.raises(ValueError, match="class_offset"):
        xentc.shard_stats(logits[:, :4], target, class_offset=7, n_classes=10)
    with pytest.raises(ValueError, match="class_offset"):
        xentc.shard_stats(logits[:, :4], target, class_offset=-1, n_classes=10)
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 10\)"):
        xentc.shard_stats(logits[:, :4], np.array([1, 2, 10]), **good)
    with pytest.raises(TypeError, match="logits_block"):
        xentc.shard_stats(logits.astype(np.int32), target, **good)
    with pytest.raises(ValueError, match="weight"):
        xentc.shard_stats(logits[:, :4], target, weight=np.ones(5), **good)
    with pytest.raises(ValueError, match="label_smoothing"):
        xentc.shard_stats(logits, target, label_smoothing=1.5, **good)
    with pytest.raises(ValueError, match="target"):
        xentc.shard_stats(logits[:, :4], rng.uniform(size=(3, 10)), **good)

    a = xentc.shard_stats(logits[:, :4], target, class_offset=0, n_classes=10)
    b = xentc.shard_stats(logits[:, 4:], target, class_offset=4, n_classes=10)
    c = xentc.shard_stats(logits[:, 3:], target, class_offset=3, n_classes=10)
    with pytest.raises(ValueError, match="stats must cover"):
        xentc.combine_shards([a])
    with pytest.raises(ValueError, match="stats must cover"):
        xentc.combine_shards([a, c])
    with pytest.raises(ValueError, match="stats must hold at least one"):
        xentc.combine_shards([])
    with pytest.raises(TypeError, match="stats"):
        xentc.combine_shards([a, "b"])
    smooth = xentc.shard_stats(
        logits[:, 4:], target, class_offset=4, n_classes=10, label_smoothing=0.1
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        xentc.combine_shards([a, smooth])
    other = xentc.shard_stats(logits[:, 4:], np.array([1, -100, 9]), class_offset=4, n_classes=10)
    with pytest.raises(ValueError, match="same targets"):
        xentc.combine_shards([a, other])
    with pytest.raises(ValueError, match="sample_weight"):
        xentc.combine_shards([a, b], sample_weight=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="z_loss"):
        xentc.combine_shards([a, b], z_loss=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        xentc.combine_shards([a, b], reduction="avg")

    totals = xentc.combine_shards([b, a], reduction="mean")
    out = np.full((3, 4), 7.0)
    with pytest.raises(ValueError, match="out"):
        xentc.shard_grad(logits[:, :4], target, totals, class_offset=0, out=np.empty((3, 5)))
    with pytest.raises(ValueError, match="grad_output"):
        xentc.shard_grad(
            logits[:, :4], target, totals, class_offset=0, grad_output=np.ones(3), out=out
        )
    with pytest.raises(ValueError, match="target"):
        xentc.shard_grad(logits[:, :4], rng.uniform(size=(3, 4)), totals, class_offset=0, out=out)
    with pytest.raises(ValueError, match="logits_block"):
        xentc.shard_grad(logits[:2, :4], target[:2], totals, class_offset=0, out=out[:2])
    with pytest.raises(TypeError, match="totals"):
        xentc.shard_grad(logits[:, :4], target, a, class_offset=0, out=out)
    assert (out == 7.0).all()

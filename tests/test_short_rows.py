"""The short-row kernel (index targets, C <= 128: rows go one per SIMD lane, in groups of 32
float32 / 16 float64 rows; src_c/xc_short_rows.inc, xent_short_group) against the float64 reference,
around its class limit and its group size, with every option, and its hand-over of rows with a
non-finite max to the row kernel."""

import numpy as np
import pytest
from reference import check_grad, check_loss, ref_cross_entropy, ref_grad, unit_grad_scale

import xentc

# around XC_SHORT_MAX (128); 71 rows = two full float32 groups and a tail of 7
N_ROWS = 71
CLASSES = [1, 2, 10, 31, 32, 33, 127, 128, 129]
OPTIONS = {
    "plain": {},
    "all": {"weight": "w", "sample_weight": "s", "label_smoothing": 0.1, "z_loss": 1e-3},
    "ignore": {"ignore_index": 3},
}


def make_case(seed, n_classes, dtype, options, layout):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((N_ROWS, n_classes))).astype(dtype)
    if layout == "fortran":
        logits = np.asfortranarray(logits)
    target = rng.integers(0, n_classes, N_ROWS)
    opts = dict(options)
    if opts.get("weight") == "w":
        opts["weight"] = rng.uniform(0.5, 2.0, n_classes)
    if opts.get("sample_weight") == "s":
        opts["sample_weight"] = rng.uniform(0.0, 2.0, N_ROWS)
        opts["sample_weight"][::9] = 0.0
    if "ignore_index" in opts:
        target[::5] = opts["ignore_index"]  # a class index that is also a valid class: ignored
    return logits, target, opts


@pytest.mark.parametrize("layout", ["C", "fortran"])
@pytest.mark.parametrize("option_name", list(OPTIONS))
@pytest.mark.parametrize("n_classes", CLASSES)
def test_short_rows_match_the_reference(dtype, n_classes, option_name, layout):
    logits, target, opts = make_case(n_classes, n_classes, dtype, OPTIONS[option_name], layout)
    case = f"({N_ROWS}, {n_classes}) {np.dtype(dtype).name} {layout} {option_name}"
    for reduction in ["none", "mean"]:
        loss, lse, grad = xentc.cross_entropy_with_grad(
            logits, target, reduction=reduction, return_lse=True, **opts
        )
        want_loss, want_lse = ref_cross_entropy(logits, target, reduction=reduction, **opts)
        check_loss(loss, want_loss, dtype, f"{case} {reduction}", reduction=reduction)
        check_loss(lse, want_lse, dtype, f"lse {case}", reduction="none")
        scale = unit_grad_scale(logits, target, dict(opts, reduction=reduction), None, want_lse)
        check_grad(
            grad,
            ref_grad(logits, target, reduction=reduction, **opts),
            dtype,
            scale,
            f"{case} {reduction}",
        )


@pytest.mark.parametrize("n_classes", [10, 100])
def test_non_finite_rows_leave_their_group_alone(dtype, n_classes):
    # Rows with a +inf, all -inf or a NaN among finite rows of the same lane group: each gets
    # the spec's NaN, and every other row of the group the same bits as without them.
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((40, n_classes)).astype(dtype)
    target = rng.integers(0, n_classes, 40)
    clean = xentc.cross_entropy_with_grad(logits, target, reduction="none", return_lse=True)
    bad = logits.copy()
    bad[3, 1] = np.inf
    bad[4] = -np.inf
    bad[5, 2] = np.nan
    loss, lse, grad = xentc.cross_entropy_with_grad(bad, target, reduction="none", return_lse=True)
    rows = [3, 4, 5]
    assert np.all(np.isnan(loss[rows])) and np.all(np.isnan(grad[rows])), (loss[rows], grad[rows])
    np.testing.assert_array_equal(lse[rows], [np.inf, -np.inf, np.nan])
    others = np.setdiff1d(np.arange(40), rows)
    for got, want, name in zip((loss, lse, grad), clean, ("loss", "lse", "grad")):
        np.testing.assert_array_equal(
            got[others], want[others], err_msg=f"{name} of the other rows, C={n_classes}"
        )


def test_in_place_gradient_of_short_rows(dtype):
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((45, 20)).astype(dtype)
    target = rng.integers(0, 20, 45)
    loss, grad = xentc.cross_entropy_with_grad(logits, target)
    work = logits.copy()
    loss_in_place, grad_in_place = xentc.cross_entropy_with_grad(work, target, out=work)
    assert np.shares_memory(grad_in_place, work) and loss_in_place == loss
    np.testing.assert_array_equal(work, grad, err_msg="out=logits, short rows")

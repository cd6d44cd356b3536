"""Gradients of 8 MiB or more are written with streaming stores (src_c/xc_rows.h,
XC_STREAM_MIN_BYTES). Their results must be bitwise those of the ordinary stores used for small
calls, whatever the alignment of the output rows (on the instruction set in use; test_isa_parity.py
checks the others)."""

import math

import numpy as np
import pytest
from conftest import TOL
from reference import check_grad, ref_result

import xentc

STREAM_MIN_BYTES = 8 << 20
N_CLASSES = 32771  # odd: rows start at every alignment and end in a partial vector


def chunked(logits, target, out, chunk, **options):
    """The same loss and gradient computed a few rows at a time: each call below the
    threshold."""
    losses = []
    for start in range(0, len(target), chunk):
        rows = slice(start, start + chunk)
        loss, _ = xentc.cross_entropy_with_grad(
            logits[rows], target[rows], reduction="sum", out=out[rows], **options
        )
        losses.append(loss)
    return math.fsum(losses), out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("out_kind", ["fresh", "shifted", "in-place"])
@pytest.mark.parametrize(
    "options", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}], ids=["plain", "smoothing+z_loss"]
)
def test_streamed_gradient_matches_small_calls(dtype, out_kind, options, rng):
    n_rows = STREAM_MIN_BYTES // (N_CLASSES * np.dtype(dtype).itemsize) + 3
    logits = (rng.standard_normal((n_rows, N_CLASSES)) * 2).astype(dtype)
    target = rng.integers(0, N_CLASSES, n_rows)
    target[1] = -100
    msg = f"{dtype.__name__} ({n_rows}, {N_CLASSES}) out={out_kind} {options}"
    assert logits.nbytes >= STREAM_MIN_BYTES

    expected_loss, expected = chunked(logits, target, np.empty_like(logits), 4, **options)
    if out_kind == "fresh":
        out = None
    elif out_kind == "shifted":  # rows start one element past a vector boundary
        out = np.full((n_rows, N_CLASSES + 1), np.nan, dtype=dtype)[:, 1:]
    else:
        out = logits.copy()
    source = out if out_kind == "in-place" else logits
    loss, grad = xentc.cross_entropy_with_grad(source, target, reduction="sum", out=out, **options)
    np.testing.assert_array_equal(grad, expected, err_msg=f"streamed vs small calls: {msg}")
    if out_kind == "shifted":
        assert np.shares_memory(grad, out)
    # The small calls are checked against the reference in test_reference.py; here the first
    # rows (the ignored row among them) against it too, the whole slow reference being seconds.
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(loss, expected_loss, rtol=tol["rtol"], err_msg=f"loss: {msg}")
    ref = ref_result(logits[:6], target[:6], reduction="sum", **options)
    check_grad(grad[:6], ref.grad, dtype, ref.unit, msg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "case", ["class-weight+sample-weight", "prob-target", "prob-target-other-dtype"]
)
def test_overlapped_rows_match_small_calls(dtype, case, rng):
    # A streamed gradient of whole rows is written one row late, during the next row's pass
    # (src_c/xc_whole_rows.inc, overlapped rows), from a second scratch row: with per-class
    # weights, rows that do not count (sample weight 0: their gradient is a fill of 0s), rows
    # with a NaN, an inf or only -inf (filled with NaN) and probability targets read in place,
    # the bits are still those of small calls, for every n_threads. Probabilities of the other
    # float dtype are converted into scratch, which keeps the rows in order (not overlapped):
    # the same bits too.
    n_rows = STREAM_MIN_BYTES // (N_CLASSES * np.dtype(dtype).itemsize) + 5
    logits = (rng.standard_normal((n_rows, N_CLASSES)) * 2).astype(dtype)
    options = {}
    if case == "class-weight+sample-weight":
        target = rng.integers(0, N_CLASSES, n_rows)
        options["weight"] = rng.uniform(0.5, 2.0, N_CLASSES).astype(dtype)
        sample_weight = rng.uniform(0.5, 2.0, n_rows)
        sample_weight[[0, 3, n_rows - 1]] = 0.0  # the first, a middle and the last row
        logits[5, 7] = np.nan  # rows whose max is not finite: a gradient filled with NaN
        logits[6, 9] = np.inf
        logits[7] = -np.inf
    else:
        target_dtype = (
            dtype if case == "prob-target" else np.float64 if dtype == np.float32 else np.float32
        )
        target = rng.dirichlet(np.ones(N_CLASSES) * 0.1, n_rows).astype(target_dtype)
        sample_weight = None
    losses, lses, expected = [], [], np.empty_like(logits)
    for start in range(0, n_rows, 4):
        rows = slice(start, start + 4)
        sw = None if sample_weight is None else sample_weight[rows]
        loss, lse, _ = xentc.cross_entropy_with_grad(
            logits[rows],
            target[rows],
            reduction="none",
            return_lse=True,
            out=expected[rows],
            sample_weight=sw,
            **options,
        )
        losses.append(loss)
        lses.append(lse)
    for n_threads in (1, 2):
        out = logits.copy()
        loss, lse, grad = xentc.cross_entropy_with_grad(
            out,
            target,
            reduction="none",
            return_lse=True,
            out=out,
            sample_weight=sample_weight,
            n_threads=n_threads,
            **options,
        )
        msg = f"{np.dtype(dtype).name} {case} n_threads={n_threads}"
        np.testing.assert_array_equal(grad, expected, err_msg=f"gradient: {msg}")
        np.testing.assert_array_equal(loss, np.concatenate(losses), err_msg=f"loss: {msg}")
        np.testing.assert_array_equal(lse, np.concatenate(lses), err_msg=f"lse: {msg}")
    if sample_weight is not None:
        assert not grad[[0, 3, n_rows - 1]].any(), "rows of sample weight 0 have a 0 gradient"
    ref = ref_result(
        logits[:6],
        target[:6],
        reduction="none",
        sample_weight=None if sample_weight is None else sample_weight[:6],
        **options,
    )
    check_grad(grad[:6], ref.grad, dtype, ref.unit, msg)

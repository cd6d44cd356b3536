"""Empty inputs (spec, "Since v1"): every empty shape, (0, C) and (B, 0, C) included, works with and
without out= and in place, whatever strides NumPy gives an empty array, through every public
function: the NumPy API, the vocabulary shards and xentc.dask. The results are the spec's: 'mean'
of nothing is nan, 'sum' is 0.0, 'none' and the gradient are empty arrays of the right shape.

NumPy 2.4 gives np.empty((0, 3)) the strides (0, 0); np.zeros and slices give others. Each case runs
with all three kinds of empty array, since the strides decided whether out= was refused.
"""

import math

import numpy as np
import pytest

import xentc

SHAPES = [(0, 7), (2, 0, 7), (0, 0, 7), (0, 1), (3, 0, 1)]
REDUCTIONS = ["mean", "sum", "none"]


def empty_arrays(shape, dtype):
    """Empty arrays of one shape with the strides the usual constructors give them."""
    return {
        "np.empty": np.empty(shape, dtype),
        "np.zeros": np.zeros(shape, dtype),
        # A slice of a non-empty array keeps its parent's (non-zero) strides.
        "slice": np.ones((*shape[:-1], shape[-1] + 2), dtype)[..., 1:-1][:0]
        if shape[0] == 0
        else np.ones((shape[0], 4, *shape[2:]), dtype)[:, 4:],
    }


def check_loss(loss, reduction, lead_shape, dtype, case):
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == lead_shape, case
        assert loss.dtype == dtype, case
    elif reduction == "sum":
        assert type(loss) is float and loss == 0.0, f"{case}: 'sum' of nothing is 0.0"
    else:
        assert type(loss) is float and math.isnan(loss), f"{case}: 'mean' of nothing is nan"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("soft", [False, True], ids=["index", "probs"])
def test_cross_entropy_with_grad_out_and_in_place(shape, dtype, soft):
    lead = shape[:-1]
    for maker, logits in empty_arrays(shape, dtype).items():
        assert logits.shape == shape, maker
        target = np.zeros(shape, dtype) if soft else np.zeros(lead, np.int64)
        for reduction in REDUCTIONS:
            grad_output = np.ones(lead) if reduction == "none" else 1.0
            for out_name, out in [
                ("out=None", None),
                ("out=fresh", np.empty(shape, dtype)),
                ("out=logits", logits),
            ]:
                case = (
                    f"shape={shape} {maker} strides={logits.strides} soft={soft} "
                    f"reduction={reduction} {out_name} dtype={np.dtype(dtype)}"
                )
                loss, lse, grad = xentc.cross_entropy_with_grad(
                    logits,
                    target,
                    reduction=reduction,
                    out=out,
                    return_lse=True,
                    grad_output=grad_output,
                )
                check_loss(loss, reduction, lead, dtype, case)
                assert lse.shape == lead and lse.dtype == dtype, case
                assert grad.shape == shape and grad.dtype == dtype, case
                if out is not None:
                    assert np.shares_memory(grad, out) or grad.base is out or grad is out, case
                check_loss(
                    xentc.cross_entropy(logits, target, reduction=reduction),
                    reduction,
                    lead,
                    dtype,
                    case,
                )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_row_functions_on_every_axis(shape):
    for maker, x in empty_arrays(shape, np.float64).items():
        for axis in range(-x.ndim, x.ndim):
            case = f"shape={shape} {maker} strides={x.strides} axis={axis}"
            reduced = np.delete(np.array(shape), axis % x.ndim)
            lse = xentc.logsumexp(x, axis=axis)
            # scipy.special.logsumexp: -inf over an empty axis (the sum of nothing is 0).
            assert lse.shape == tuple(reduced) and np.all(lse == -np.inf), case
            assert xentc.softmax(x, axis=axis).shape == shape, case
            assert xentc.log_softmax(x, axis=axis).shape == shape, case


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_shards_with_out_and_in_place(reduction):
    blocks_of = [4, 3]  # two vocabulary shards of a 7-class problem
    for maker, logits in empty_arrays((0, 7), np.float32).items():
        target = np.zeros(0, np.int64)
        offsets = np.cumsum([0, *blocks_of])
        blocks = [logits[:, a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        stats = [
            xentc.shard_stats(b, target, class_offset=a, n_classes=7)
            for b, a in zip(blocks, offsets)
        ]
        totals = xentc.combine_shards(stats, reduction=reduction)
        case = f"shards {maker} strides={logits.strides} reduction={reduction}"
        check_loss(totals.loss, reduction, (0,), np.float32, case)
        for block, a in zip(blocks, offsets):
            for out in (None, np.empty(block.shape, np.float32), block):
                grad = xentc.shard_grad(block, target, totals, class_offset=a, out=out)
                assert grad.shape == block.shape, case


@pytest.mark.parametrize("shape", [(0, 5), (3, 0, 5)], ids=str)
def test_dask_empty(shape):
    da = pytest.importorskip("dask.array", reason="dask is not installed (make test installs it)")
    import xentc.dask as xd

    lead = shape[:-1]
    logits = da.zeros(shape, dtype=np.float32, chunks=(2,) * (len(shape) - 1) + (5,))
    target = np.zeros(lead, np.int64)
    for reduction in REDUCTIONS:
        case = f"dask shape={shape} reduction={reduction}"
        loss, lse, grad = xd.cross_entropy_with_grad(
            logits, target, reduction=reduction, return_lse=True
        )
        loss, lse, grad = (np.asarray(v) for v in da.compute(loss, lse, grad))
        if reduction == "none":
            assert loss.shape == lead, case
        elif reduction == "sum":
            assert float(loss) == 0.0, case
        else:
            assert math.isnan(float(loss)), case
        assert lse.shape == lead and grad.shape == shape, case

"""torch.nn.functional.cross_entropy as the oracle (shared/spec/api.md: torch defines every option
it has and their interplay; classes on xentc's last axis are torch's dim 1).

(a) tests/reference.py against torch: this validates the reference itself, xentc or not.
(b) xentc against torch over every option combination: index / probability targets x class
    weight x sample_weight x ignored rows x reduction x label_smoothing x z_loss x dtype x
    (N, C) / (B, T, C), the loss and the autograd gradient with a grad_output.
Options torch lacks are emulated from semantics.md: sample_weight through reduction='none' and the
spec's denominator, z_loss as z * lse**2 terms. The deliberate deviations of semantics.md (soft
target t' == 0 on a masked class; ignored or zero-weight rows holding NaN / inf) are NOT compared
here; test_reference.py checks them against the reference.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="torch is the oracle for cross_entropy semantics; install it (CI uses the CPU "
    "wheel torch==2.13.0) to run the parity tests",
)
import torch.nn.functional as F
from conftest import TOL
from reference import (
    check_grad,
    check_loss,
    ref_cross_entropy,
    ref_grad,
    unit_grad_scale,
)
from strategies import layout_of, pairwise, with_layout

try:
    import xentc

    XENTC_MISSING = ""
except ImportError as exc:
    xentc = None
    XENTC_MISSING = f"xentc is not importable ({exc}); build and install it first"


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    # The oracle's tensors are tiny; torch's intra-op pool only adds wake-up latency (measured:
    # 0.5 ms per call with one thread, 4 ms mean and 30 ms spikes with two on a busy 2-core box).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


IMPLS = [
    "reference",
    pytest.param("xentc", marks=pytest.mark.skipif(xentc is None, reason=XENTC_MISSING)),
]
REDUCTIONS = ["none", "mean", "sum"]


def torch_cross_entropy(
    logits,
    target,
    *,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    grad_output=None,
):
    """-> (loss, lse, grad) from torch in float64 on xentc's layout (classes last).

    Torch computes the cross-entropy (its own reduction where it has the option); sample weights
    and the z-loss follow semantics.md: loss_i = s_i * (torch's row loss + zl * [w_y] * lse_i**2),
    'mean' divides by D = sum s_i * w[y_i] over non-ignored rows (index) or sum s_i (probabilities).
    """
    x = torch.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    soft = np.asarray(target).dtype.kind == "f"
    t = torch.tensor(np.asarray(target, dtype=np.float64 if soft else np.int64))
    inp = x.movedim(-1, 1) if x.ndim > 2 else x  # torch wants classes on dim 1
    if soft and t.ndim > 2:
        t = t.movedim(-1, 1)
    w = None if weight is None else torch.tensor(np.asarray(weight, dtype=np.float64))
    kwargs = {"weight": w, "label_smoothing": label_smoothing}
    if not soft:  # torch rejects ignore_index for probabilities, where it plays no part anyway
        kwargs["ignore_index"] = ignore_index

    lse = torch.logsumexp(x, dim=-1)
    batch = lse.shape
    if soft:  # ignore_index and the class weight of the target play no part
        counted = torch.ones(batch, dtype=torch.float64)
        w_y = torch.ones(batch, dtype=torch.float64)
    else:
        tb = torch.tensor(np.asarray(target, dtype=np.int64))  # on xentc's batch layout
        counted = (tb != ignore_index).to(torch.float64)
        w_y = (
            torch.ones(batch, dtype=torch.float64)
            if w is None
            else w[tb.clamp(0, x.shape[-1] - 1)] * counted
        )
    s = (
        torch.ones(batch, dtype=torch.float64)
        if sample_weight is None
        else torch.tensor(np.asarray(sample_weight, dtype=np.float64))
    )
    z_term = z_loss * lse.square() * w_y * counted
    den = float((s * w_y * counted).sum()) if not soft else float(s.sum())

    if sample_weight is None and reduction != "none":
        loss = F.cross_entropy(inp, t, reduction=reduction, **kwargs)  # torch's own reduction
        if z_loss:
            loss = loss + (z_term.sum() / den if reduction == "mean" else z_term.sum())
    else:
        rows = s * (F.cross_entropy(inp, t, reduction="none", **kwargs) + z_term)
        loss = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / den}[reduction]

    emulated = sample_weight is not None or z_loss
    if reduction == "mean" and den == 0 and emulated:
        # semantics.md (as torch when all rows are ignored): nan and a zero gradient; autograd
        # through our emulated 0 / 0 would give a NaN gradient instead.
        return math.nan, lse.detach().numpy(), np.zeros(x.shape)
    go = (
        torch.ones_like(loss)
        if grad_output is None
        else torch.as_tensor(np.asarray(grad_output, dtype=np.float64)).expand_as(loss)
    )
    (grad,) = torch.autograd.grad(loss, x, grad_outputs=go)
    loss = loss.detach().numpy()
    return (loss if reduction == "none" else float(loss)), lse.detach().numpy(), grad.numpy()


def run_impl(impl, logits, target, options, grad_output):
    """-> (loss, lse, grad, the dtype whose tolerance applies)."""
    if impl == "reference":
        loss, lse = ref_cross_entropy(logits, target, **options)
        return loss, lse, ref_grad(logits, target, **options, grad_output=grad_output), np.float64
    loss, lse, grad = xentc.cross_entropy_with_grad(
        logits, target, **options, grad_output=grad_output, return_lse=True
    )
    return loss, lse, grad, logits.dtype


def compare(impl, logits, target, options, grad_output, msg):
    loss, lse, grad, tol_dtype = run_impl(impl, logits, target, options, grad_output)
    t_loss, t_lse, t_grad = torch_cross_entropy(logits, target, **options, grad_output=grad_output)
    tol = TOL[np.dtype(tol_dtype)]
    if impl == "xentc":  # return types / dtypes only make sense for xentc
        check_loss(loss, t_loss, tol_dtype, msg, reduction=options["reduction"])
    np.testing.assert_allclose(
        np.asarray(loss, np.float64),
        t_loss,
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=f"loss vs torch: {msg}",
    )
    np.testing.assert_allclose(
        np.asarray(lse, np.float64),
        t_lse,
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=f"lse vs torch: {msg}",
    )
    scale = unit_grad_scale(logits, target, options, grad_output, t_lse)
    check_grad(
        np.asarray(grad, dtype=tol_dtype) if impl == "reference" else grad,
        t_grad,
        tol_dtype,
        scale,
        f"vs torch autograd: {msg}",
    )


# ---------------------------------------------------------------------------------------------
# (a) + (b): every option combination, reference and xentc


def _sample_weights(rng, batch):
    s = rng.uniform(0.1, 2.0, size=batch)
    s[rng.random(batch) < 0.25] = 0.0  # rows that do not count
    s.flat[0] = 1.5  # row 0 is never ignored either, so the 'mean' denominator is positive
    return s


# The options against torch pairwise (strategies.pairwise: every pair of option values in at
# least one case, ~10 cases instead of the 384 of the full product), for each implementation
# and dtype. Three-way interactions are the reference sweep's business (test_reference.py).
OPTION_CASES = pairwise(
    {
        "target_kind": ["index", "prob"],
        "weighted": [False, True],
        "sample_weighted": [False, True],
        "ignored": [False, True],
        "reduction": list(REDUCTIONS),
        "label_smoothing": [0.0, 0.1],
        "z_loss": [0.0, 1e-3],
        "shape": [(9, 13), (2, 5, 13)],
    }
)


def _case_id(case):
    return "-".join(
        [
            case["target_kind"],
            "w" if case["weighted"] else "no-w",
            "sw" if case["sample_weighted"] else "no-sw",
            "ignored-rows" if case["ignored"] else "all-rows",
            case["reduction"],
            f"ls{case['label_smoothing']}",
            f"z{case['z_loss']}",
            "BTC" if len(case["shape"]) == 3 else "NC",
        ]
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", OPTION_CASES, ids=[_case_id(c) for c in OPTION_CASES])
def test_matches_torch(case, impl, dtype, rng):
    target_kind, weighted, sample_weighted, ignored = (
        case["target_kind"],
        case["weighted"],
        case["sample_weighted"],
        case["ignored"],
    )
    reduction, label_smoothing, z_loss, shape = (
        case["reduction"],
        case["label_smoothing"],
        case["z_loss"],
        case["shape"],
    )
    batch, c = shape[:-1], shape[-1]
    # (B, T, C) arrives in a transposed layout (B and T swapped in memory): torch sees the
    # permuted view of the same values.
    layout = "transposed" if len(shape) == 3 else "C"
    logits = with_layout((rng.standard_normal(shape) * 3).astype(dtype), layout)
    ignore_index = -100
    if target_kind == "index":
        target = rng.integers(0, c, size=batch)
        if ignored:
            target.flat[[1, 4, 5]] = ignore_index
    else:
        target = rng.dirichlet(np.full(c, 0.5), size=batch).astype(dtype)
        if ignored:
            ignore_index = 1  # a valid class: must change nothing for probability targets
    options = {
        "weight": rng.uniform(0.2, 2.0, c) if weighted else None,
        "sample_weight": _sample_weights(rng, batch) if sample_weighted else None,
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
    }
    grad_output = rng.standard_normal(batch) if reduction == "none" else -0.7
    msg = (
        f"{impl}: logits=[{layout_of(logits)}], target={target_kind} {np.shape(target)}, "
        f"weight={weighted}, sample_weight={sample_weighted}, ignore_index={ignore_index}, "
        f"reduction={reduction!r}, label_smoothing={label_smoothing}, z_loss={z_loss}, "
        f"grad_output={'array' if reduction == 'none' else grad_output}"
    )
    compare(impl, logits, target, options, grad_output, msg)


# ---------------------------------------------------------------------------------------------
# Edge rows where semantics.md follows torch (its deviations are in test_reference.py)

_INF, _NAN = math.inf, math.nan
TORCH_EDGE_ROWS = {
    # masked classes: probability 0, gradient 0
    "masked-classes": ([0.5, -_INF, 1.5, -_INF], 2, {}),
    # a row whose only finite logit is the target: loss 0
    "only-target-finite": ([-_INF, 3.0, -_INF, -_INF], 1, {}),
    # a masked target class: loss +inf, gradient finite
    "masked-target": ([0.5, -_INF, 1.5, 0.0], 1, {}),
    # with label smoothing any masked class makes the loss +inf
    "masked-smoothing": ([0.5, -_INF, 1.5, 0.0], 2, {"label_smoothing": 0.1}),
    "masked-smoothing-soft": (
        [0.5, -_INF, 1.5, 0.0],
        [0.25, 0.0, 0.5, 0.25],
        {"label_smoothing": 0.1},
    ),
    # counted non-finite rows: loss NaN and an all-NaN gradient row, other rows unaffected
    "nan-row": ([0.5, _NAN, 1.5, 0.0], 2, {}),
    "all-minus-inf": ([-_INF] * 4, 2, {}),
    "plus-inf": ([0.5, _INF, 1.5, 0.0], 2, {}),
    # huge but finite logits: no overflow
    "huge-logits": ([1e4, -3e4, 1e4 + 2.5, 9.9e3], 0, {}),
    # an ignored row with finite logits: loss 0, gradient 0 (torch)
    "ignored-finite": ([0.5, 1.0, 1.5, 0.0], -100, {}),
    # ignore_index may be a valid class: rows with that target are ignored
    "ignore-valid-class": ([0.5, 1.0, 1.5, 0.0], 3, {"ignore_index": 3}),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(TORCH_EDGE_ROWS))
def test_edge_rows_match_torch(name, reduction, impl, dtype, rng):
    row, row_target, extra = TORCH_EDGE_ROWS[name]
    c = len(row)
    logits = (rng.standard_normal((3, c)) * 2).astype(dtype)
    logits[1] = row
    if isinstance(row_target, list):
        target = rng.dirichlet(np.ones(c), size=3).astype(dtype)
        target[1] = row_target
    else:
        target = np.array([0, row_target, 1])
    options = {
        "reduction": reduction,
        "label_smoothing": extra.get("label_smoothing", 0.0),
        "ignore_index": extra.get("ignore_index", -100),
        "z_loss": 0.0,
    }
    grad_output = np.array([0.5, -1.0, 2.0]) if reduction == "none" else 1.25
    msg = f"{impl}: {name}: row={row} target={row_target} {options} {dtype}"
    compare(impl, logits, target, options, grad_output, msg)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["all-ignored", "single-class", "one-row-1d"])
def test_small_cases_match_torch(case, reduction, impl, dtype, rng):
    if case == "all-ignored":  # 'mean' -> nan, gradient all zeros (as torch)
        logits, target = rng.standard_normal((4, 6)).astype(dtype), np.full(4, -100)
    elif case == "single-class":  # C == 1: loss 0, gradient 0
        logits, target = rng.standard_normal((5, 1)).astype(dtype), np.zeros(5, dtype=np.int64)
    else:  # a single unbatched row (C,) with a 0-d target
        logits, target = rng.standard_normal(7).astype(dtype), np.array(3)
    options = {"reduction": reduction, "weight": rng.uniform(0.5, 2, logits.shape[-1])}
    grad_output = rng.standard_normal(logits.shape[:-1]) if reduction == "none" else 0.5
    compare(impl, logits, target, options, grad_output, f"{impl}: {case} {reduction} {dtype}")

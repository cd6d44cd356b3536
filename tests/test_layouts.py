"""Memory layouts: strides, orders, views, read-only inputs, out= and out=logits.

xentc gathers strided rows into scratch and runs the same code as for contiguous rows (STYLE 5),
so every layout must give results BITWISE equal to the C-contiguous call, and within the spec's
tolerance of the float64 reference (tests/reference.py). Strided views are cut from buffers
padded with NaN, so reading outside the view poisons the result and writing outside it is caught.
"""

import numpy as np
import pytest
import scipy.special
from conftest import TOL
from reference import assert_close, ref_result
from strategies import PADDED_2D, with_layout

import xentc

N, C = 37, 131  # odd sizes: no row or class count is a multiple of a vector width

REDUCTIONS = ["mean", "sum", "none"]

KINDS = [
    "C",
    "F",
    "rows-reversed",
    "cols-reversed",
    "reversed",
    "every-other-row",
    "every-other-col",
    "padded-rows",
    "transposed-strided",
    "step-3x2",
    "misaligned",
]


# xentc refuses a misaligned out= (it cannot copy its way around it, as it does for inputs),
# so out= and out=logits are tested on every other layout.
OUT_KINDS = [k for k in KINDS if k != "misaligned"]


def layout(values, kind):
    """A (view, buffer) pair: `view` holds `values` in the layout `kind` (strategies.with_layout),
    `buffer` owns the memory and is NaN wherever the view is not (None when the view has no
    padding)."""
    view = with_layout(values, kind)
    return view, (view.base if kind in PADDED_2D else None)


def describe(a):
    return (
        f"shape={a.shape} dtype={a.dtype} strides={a.strides} "
        f"C={a.flags.c_contiguous} F={a.flags.f_contiguous}"
    )


def assert_padding_intact(buffer, view, what):
    if buffer is not None:
        n_pad = np.count_nonzero(np.isnan(buffer))
        assert n_pad == buffer.size - view.size, (
            f"{what}: wrote outside the view ({describe(view)})"
        )


def assert_same(got, want, err_msg):
    """Bitwise equality of floats, arrays or tuples of them (NaN == NaN)."""
    if isinstance(want, tuple):
        assert len(got) == len(want), err_msg
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{err_msg} [item {i}]")
        return
    assert type(got) is type(want), f"{err_msg}: type {type(got)} != {type(want)}"
    np.testing.assert_array_equal(got, want, err_msg=err_msg, strict=True)


def make_inputs(rng, dtype, options):
    logits = (3 * rng.standard_normal((N, C))).astype(dtype)
    target = rng.integers(0, C, N)
    target[::5] = -100
    kw = {}
    if options == "all":
        kw = {
            "weight": rng.uniform(0.5, 2.0, C),
            "sample_weight": rng.uniform(0.0, 2.0, N),
            "label_smoothing": 0.1,
            "z_loss": 1e-3,
        }
    elif options == "soft":
        target = scipy.special.softmax(rng.standard_normal((N, C)), axis=-1)
        kw = {"label_smoothing": 0.05}
    return logits, target, kw


@pytest.mark.parametrize("options", ["plain", "all", "soft"])
@pytest.mark.parametrize("kind", KINDS)
def test_logits_layout(rng, dtype, kind, options):
    logits, target, kw = make_inputs(rng, dtype, options)
    view, buffer = layout(logits, kind)
    for reduction in REDUCTIONS:
        kw_r = dict(kw, reduction=reduction)
        case = f"{kind} {describe(view)} options={options} reduction={reduction}"
        assert_same(
            xentc.cross_entropy(view, target, **kw_r),
            xentc.cross_entropy(logits, target, **kw_r),
            f"cross_entropy {case}",
        )
        assert_same(
            xentc.cross_entropy(view, target, return_lse=True, **kw_r),
            xentc.cross_entropy(logits, target, return_lse=True, **kw_r),
            f"cross_entropy return_lse {case}",
        )
        got = xentc.cross_entropy_with_grad(view, target, return_lse=True, **kw_r)
        assert_same(
            got,
            xentc.cross_entropy_with_grad(logits, target, return_lse=True, **kw_r),
            f"with_grad {case}",
        )
        assert_close(
            dtype, got[0], ref_result(logits, target, **kw_r), case, got_grad=got[2], got_lse=got[1]
        )
    assert_padding_intact(buffer, view, case)


@pytest.mark.parametrize("out_kind", ["none", "out-transposed", "out=logits"])
@pytest.mark.parametrize("kind", ["C", "transposed", "strided"])
def test_three_dimensional(rng, dtype, kind, out_kind):
    # (B, T, C) with leading axes that may not collapse into one row step (a swapped view); the
    # per-row arrays (B, T) come in the same kind of layout. All must equal the flat (B*T, C) call.
    b, t, c = 3, 5, 17
    logits = rng.standard_normal((b, t, c)).astype(dtype)
    target = rng.integers(0, c, (b, t))
    target[1, 2] = -100
    sample_weight = rng.uniform(0, 2, (b, t))
    grad_output = rng.uniform(-2, 2, (b, t))
    flat = logits.reshape(-1, c)
    for reduction in REDUCTIONS:
        view = with_layout(logits, kind)
        assert np.array_equal(view, logits), f"test setup: {kind} view must hold the logits"
        case = f"(B,T,C) {kind} {describe(view)} {out_kind} reduction={reduction}"
        rows = {"sample_weight": sample_weight, "reduction": reduction}
        if reduction == "none":
            rows["grad_output"] = grad_output
        want = xentc.cross_entropy_with_grad(
            flat,
            target.ravel(),
            return_lse=True,
            **{k: (v.ravel() if isinstance(v, np.ndarray) else v) for k, v in rows.items()},
        )
        out = {
            "none": None,
            "out-transposed": with_layout(np.zeros_like(logits), "transposed"),
            "out=logits": view,
        }[out_kind]
        loss, lse, grad = xentc.cross_entropy_with_grad(
            view,
            with_layout(target, kind) if kind != "strided" else target,
            return_lse=True,
            out=out,
            **{
                k: (with_layout(v, kind) if isinstance(v, np.ndarray) else v)
                for k, v in rows.items()
            },
        )
        assert grad.shape == (b, t, c) and lse.shape == (b, t), case
        if out is not None:
            assert np.shares_memory(grad, out), f"grad must live in out: {case}"
        np.testing.assert_array_equal(grad.reshape(-1, c), want[2], err_msg=case, strict=True)
        np.testing.assert_array_equal(lse.ravel(), want[1], err_msg=case, strict=True)
        if reduction == "none":
            assert loss.shape == (b, t), case
            loss = loss.ravel()
        np.testing.assert_array_equal(loss, want[0], err_msg=case, strict=True)
        rows.pop("grad_output", None)
        assert_same(
            xentc.cross_entropy(with_layout(logits, kind), target, **rows),
            xentc.cross_entropy(logits, target, **rows),
            case,
        )
        ref = ref_result(
            flat,
            target.ravel(),
            sample_weight=sample_weight.ravel(),
            reduction=reduction,
            grad_output=grad_output.ravel() if reduction == "none" else None,
        )
        assert_close(dtype, want[0], ref, case, got_grad=want[2])


def test_single_row_1d(rng, dtype):
    logits = rng.standard_normal(23).astype(dtype)
    target = np.array(7)  # shape logits.shape[:-1] == ()
    for reduction in REDUCTIONS:
        case = f"(C,) logits reduction={reduction} dtype={dtype}"
        loss, lse, grad = xentc.cross_entropy_with_grad(
            logits, target, reduction=reduction, return_lse=True
        )
        r_loss, r_lse, r_grad = xentc.cross_entropy_with_grad(
            logits[None], target[None], reduction=reduction, return_lse=True
        )
        assert grad.shape == (23,) and lse.shape == () and isinstance(lse, np.ndarray), case
        np.testing.assert_array_equal(grad, r_grad[0], err_msg=case, strict=True)
        np.testing.assert_array_equal(lse, r_lse[0], err_msg=case)
        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == dtype, case
            np.testing.assert_array_equal(loss, r_loss[0], err_msg=case)
        else:
            assert type(loss) is float and loss == r_loss, case
        # also from a negative-stride view of the row
        rev = logits[::-1].copy()[::-1]
        assert_same(
            xentc.cross_entropy(rev, target, reduction=reduction),
            xentc.cross_entropy(logits, target, reduction=reduction),
            case + " reversed",
        )


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_broadcast_readonly_logits(rng, dtype, axis):
    # np.broadcast_to gives a read-only view with a zero stride; fine without out= (spec).
    if axis == "rows":
        view = np.broadcast_to(rng.standard_normal(C).astype(dtype), (N, C))
    else:
        view = np.broadcast_to(rng.standard_normal((N, 1)).astype(dtype), (N, C))
    assert not view.flags.writeable, "test setup: broadcast_to views are read-only"
    logits = np.array(view)
    target = rng.integers(0, C, N)
    for reduction in REDUCTIONS:
        case = f"broadcast {axis} {describe(view)} reduction={reduction}"
        assert_same(
            xentc.cross_entropy(view, target, reduction=reduction, return_lse=True),
            xentc.cross_entropy(logits, target, reduction=reduction, return_lse=True),
            case,
        )
        assert_same(
            xentc.cross_entropy_with_grad(view, target, reduction=reduction),
            xentc.cross_entropy_with_grad(logits, target, reduction=reduction),
            case,
        )
    for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax):
        assert_same(fn(view), fn(logits), f"{fn.__name__} {describe(view)}")


@pytest.mark.parametrize("order", ["C", "F"])
def test_memmap_readonly_logits(rng, dtype, order, tmp_path):
    logits = rng.standard_normal((N, C)).astype(dtype)
    target = rng.integers(0, C, N)
    path = tmp_path / "logits.bin"
    writer = np.memmap(path, dtype=dtype, mode="w+", shape=(N, C), order=order)
    writer[...] = logits
    writer.flush()
    del writer
    mapped = np.memmap(path, dtype=dtype, mode="r", shape=(N, C), order=order)
    assert not mapped.flags.writeable, "test setup: mode='r' memmap is read-only"
    for reduction in REDUCTIONS:
        case = f"memmap order={order} reduction={reduction}"
        assert_same(
            xentc.cross_entropy(mapped, target, reduction=reduction),
            xentc.cross_entropy(logits, target, reduction=reduction),
            case,
        )
        loss, lse, grad = xentc.cross_entropy_with_grad(
            mapped, target, reduction=reduction, return_lse=True
        )
        want = xentc.cross_entropy_with_grad(logits, target, reduction=reduction, return_lse=True)
        # The results are plain arrays, not memmaps, but the values must agree bitwise.
        for name, g, w in zip(("loss", "lse", "grad"), (loss, lse, grad), want):
            np.testing.assert_array_equal(np.asarray(g), w, err_msg=f"{name} {case}")
    np.testing.assert_array_equal(
        xentc.logsumexp(mapped), xentc.logsumexp(logits), err_msg=f"logsumexp memmap order={order}"
    )
    del mapped


SIDE_ARGS = [("target-index", np.int64)] + [
    (arg, d)
    for arg in ("target-probs", "weight", "sample_weight", "grad_output")
    for d in (np.float32, np.float64)
]


@pytest.mark.parametrize("kind", ["strided", "reversed"])
@pytest.mark.parametrize(
    "arg, arg_dtype", SIDE_ARGS, ids=[f"{a}-{np.dtype(d).name}" for a, d in SIDE_ARGS]
)
def test_other_arguments_layout_and_dtype(rng, dtype, arg, arg_dtype, kind):
    # Non-contiguous side arrays, and floating ones of the other dtype than the logits (spec).
    logits = rng.standard_normal((N, C)).astype(dtype)
    target = rng.integers(0, C, N)
    target[3] = -100
    kw = {"reduction": "none" if arg == "grad_output" else "mean"}
    if arg == "target-index":
        # padding is out of range: if it were read, validation would raise
        contiguous = target
        strided = with_layout(target, kind, fill=C + 1000)
    elif arg == "target-probs":
        contiguous = scipy.special.softmax(rng.standard_normal((N, C)), axis=-1).astype(arg_dtype)
        kind_2d = "every-other-col" if kind == "strided" else "reversed"
        strided = layout(contiguous, kind_2d)[0]
    else:
        contiguous = {
            "weight": rng.uniform(0.5, 2.0, C),
            "sample_weight": rng.uniform(0, 2, N),
            "grad_output": rng.uniform(-2, 2, N),
        }[arg].astype(arg_dtype)
        strided = with_layout(contiguous, kind)
    assert np.array_equal(strided, contiguous) and not strided.flags.c_contiguous, (
        f"test setup: {arg} {kind} view"
    )
    key = "target" if arg.startswith("target") else arg

    def run(value):
        args = dict(kw, **{key: value})
        t = args.pop("target", target)
        if arg == "grad_output":
            return xentc.cross_entropy_with_grad(logits, t, return_lse=True, **args)
        return (
            xentc.cross_entropy(logits, t, **args),
            *xentc.cross_entropy_with_grad(logits, t, return_lse=True, **args),
        )

    case = f"{arg} {kind} {describe(strided)} logits={dtype}"
    got = run(strided)
    assert_same(got, run(contiguous), case)
    ref_kw = dict(kw, **{key: contiguous})
    ref_target = ref_kw.pop("target", target)
    assert_close(
        dtype,
        got[-3],
        ref_result(logits, ref_target, **ref_kw),
        case,
        got_grad=got[-1],
        got_lse=got[-2],
    )
    assert got[-2].dtype == dtype, f"lse dtype must be the logits' dtype: {case}"
    if kw["reduction"] == "none":
        assert got[-3].dtype == dtype, f"loss dtype must be the logits' dtype: {case}"


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("target_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_integer_target_dtypes(rng, dtype, target_dtype):
    c = 100  # every class fits int8
    logits = rng.standard_normal((N, c)).astype(dtype)
    target = rng.integers(0, c, N)
    target[::4] = 120  # an ignore_index every dtype can hold
    ignores = [120] + ([-100] if np.dtype(target_dtype).kind == "i" else [])
    for ignore_index in ignores:
        t64 = np.where(target == 120, ignore_index, target)
        t = t64.astype(target_dtype)
        for reduction in REDUCTIONS:
            kw = {"ignore_index": ignore_index, "reduction": reduction}
            case = (
                f"target dtype={np.dtype(target_dtype).name} ignore_index={ignore_index} "
                f"{reduction}"
            )
            assert_same(
                xentc.cross_entropy_with_grad(logits, t, return_lse=True, **kw),
                xentc.cross_entropy_with_grad(logits, t64, return_lse=True, **kw),
                case,
            )
            assert_same(
                xentc.cross_entropy(logits, t, **kw), xentc.cross_entropy(logits, t64, **kw), case
            )
            strided = with_layout(t, "strided", fill=110)
            assert_same(
                xentc.cross_entropy(logits, strided, **kw),
                xentc.cross_entropy(logits, t64, **kw),
                case + " strided",
            )


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("kind", OUT_KINDS)
def test_out_any_strides(rng, dtype, kind, reduction):
    logits, target, kw = make_inputs(rng, dtype, "all")
    kw["reduction"] = reduction
    want_loss, want_grad = xentc.cross_entropy_with_grad(logits, target, **kw)
    out, buffer = layout(np.full((N, C), np.nan, dtype), kind)
    if buffer is not None:
        buffer[...] = np.nan
    case = f"out {kind} {describe(out)} reduction={reduction}"
    loss, grad = xentc.cross_entropy_with_grad(logits, target, out=out, **kw)
    assert grad.shape == logits.shape and grad.dtype == dtype, case
    assert np.shares_memory(grad, out), f"grad must be out itself or a view of it: {case}"
    np.testing.assert_array_equal(grad, want_grad, err_msg=case, strict=True)
    np.testing.assert_array_equal(out, want_grad, err_msg=case, strict=True)
    assert_same(loss, want_loss, case)
    assert_padding_intact(buffer, out, case)
    assert not np.shares_memory(grad, logits), case


@pytest.mark.parametrize("options", ["all", "soft"])
@pytest.mark.parametrize("kind", OUT_KINDS)
def test_out_is_logits(rng, dtype, kind, options):
    logits, target, kw = make_inputs(rng, dtype, options)
    for reduction in REDUCTIONS:
        kw_r = dict(kw, reduction=reduction)
        want = xentc.cross_entropy_with_grad(logits, target, return_lse=True, **kw_r)
        view, buffer = layout(logits, kind)
        case = f"out=logits {kind} {describe(view)} options={options} reduction={reduction}"
        loss, lse, grad = xentc.cross_entropy_with_grad(
            view, target, out=view, return_lse=True, **kw_r
        )
        assert np.shares_memory(grad, view), f"grad must live in the logits' memory: {case}"
        # lse is that of the ORIGINAL logits, computed before the gradient overwrote them
        assert_same((loss, lse, grad), want, case)
        np.testing.assert_array_equal(view, want[2], err_msg=f"logits now hold grad: {case}")
        assert_padding_intact(buffer, view, case)


def test_fresh_outputs_share_no_memory(rng, dtype):
    logits, target, kw = make_inputs(rng, dtype, "all")
    loss, lse, grad = xentc.cross_entropy_with_grad(
        logits, target, reduction="none", return_lse=True, **kw
    )
    for name, a in (("loss", loss), ("lse", lse), ("grad", grad)):
        for iname, inp in (
            ("logits", logits),
            ("target", target),
            ("weight", kw["weight"]),
            ("sample_weight", kw["sample_weight"]),
        ):
            assert not np.shares_memory(a, inp), f"{name} shares memory with {iname}"
    assert not np.shares_memory(loss, lse) and not np.shares_memory(lse, grad), (
        "loss, lse and grad must be separate arrays"
    )


SCIPY = {
    "logsumexp": scipy.special.logsumexp,
    "softmax": scipy.special.softmax,
    "log_softmax": scipy.special.log_softmax,
}


@pytest.mark.parametrize("fn", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize("kind", KINDS)
def test_row_functions_layout(rng, dtype, fn, kind):
    x = (3 * rng.standard_normal((N, C))).astype(dtype)
    view, buffer = layout(x, kind)
    f = getattr(xentc, fn)
    for axis in (-1, 1, 0, -2):
        case = f"{fn} {kind} {describe(view)} axis={axis}"
        got = f(view, axis=axis)
        np.testing.assert_array_equal(got, f(x, axis=axis), err_msg=case, strict=True)
        want = SCIPY[fn](x.astype(np.float64), axis=axis)
        np.testing.assert_allclose(
            got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"], err_msg=case
        )
    assert_padding_intact(buffer, view, fn)


def test_row_functions_3d_any_axis(rng, dtype):
    x = rng.standard_normal((4, 6, 9)).astype(dtype)
    views = {"C": x, "F": np.asfortranarray(x), "strided": np.repeat(x, 2, 1)[:, ::2]}
    for order, view in views.items():
        for axis in (0, 1, 2, -1, -2, -3):
            for fn, scipy_fn in SCIPY.items():
                case = f"{fn} 3-D {order} axis={axis}"
                got = getattr(xentc, fn)(view, axis=axis)
                np.testing.assert_array_equal(got, getattr(xentc, fn)(x, axis=axis), err_msg=case)
                np.testing.assert_allclose(
                    got,
                    scipy_fn(x.astype(np.float64), axis=axis),
                    rtol=TOL[dtype]["rtol"],
                    atol=TOL[dtype]["atol"],
                    err_msg=case,
                )

"""Fused linear + cross-entropy (xentc.linear_cross_entropy, issue 19) against the float64
reference: the logits hidden @ weight.T + bias made in float64, then tests/reference.py's loss
and gradient, taken back through the projection (dH = G W, dW = G^T H, db = column sums of G).
Also: chunk sizes and thread counts, the memory bound (no N x V array), and the errors."""

import math
import tracemalloc

import numpy as np
import pytest
from reference import ref_cross_entropy, ref_grad

import xentc

TOL = {np.float32: dict(rtol=2e-5, grad=3e-5), np.float64: dict(rtol=1e-11, grad=1e-11)}

OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none", "return_lse": True},
    {"class_weight": "w", "ignore_index": 3, "label_smoothing": 0.1},
    {"z_loss": 1e-3, "sample_weight": "s", "reduction": "sum"},
    {"softcap": 5.0, "logit_scale": 0.7},
    {"soft": True, "label_smoothing": 0.05, "class_weight": "w"},
]


def make_problem(rng, dtype, lead=(5, 7), d=24, v=37, soft=False, bias=True):
    hidden = rng.standard_normal((*lead, d)).astype(dtype)
    weight = (rng.standard_normal((v, d)) / math.sqrt(d) * 3).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    if soft:
        target = rng.dirichlet(np.ones(v), size=lead).astype(dtype)
    else:
        target = rng.integers(0, v, lead)
        target.flat[::4] = 3  # some rows hit ignore_index=3 where a case sets it
    return hidden, weight, b, target


def resolve(options, rng, lead, v):
    kw = {k: val for k, val in options.items() if k != "soft"}
    if kw.get("class_weight") == "w":
        kw["class_weight"] = rng.uniform(0.2, 2.0, v)
    if kw.get("sample_weight") == "s":
        kw["sample_weight"] = rng.uniform(0.0, 2.0, lead)
    return kw


def reference(hidden, weight, bias, target, kw, grad_output=None):
    """(loss, lse, dH, dW, db) in float64, through the reference's logits gradient."""
    h = hidden.astype(np.float64).reshape(-1, hidden.shape[-1])
    w = weight.astype(np.float64)
    z = h @ w.T + (0.0 if bias is None else bias.astype(np.float64))
    lead = hidden.shape[:-1]
    z = z.reshape(*lead, w.shape[0])
    ref_kw = {k: val for k, val in kw.items() if k != "return_lse"}
    if "class_weight" in ref_kw:
        ref_kw["weight"] = ref_kw.pop("class_weight")
    loss, lse = ref_cross_entropy(z, target, **ref_kw)
    g = ref_grad(z, target, grad_output=grad_output, **ref_kw).reshape(-1, w.shape[0])
    return loss, lse, (g @ w).reshape(hidden.shape), g.T @ h, g.sum(axis=0)


def assert_grad(got, want, dtype, case):
    # Relative to the largest entry: each entry is a sum of products of O(1) terms.
    scale = max(1e-30, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype]["grad"] * scale, err_msg=case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o)) or "defaults")
@pytest.mark.parametrize("chunk_rows", [None, 1, 8], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("block", [None, 16, 32], ids=lambda b: f"block{b}")
def test_against_float64_reference(rng, monkeypatch, dtype, options, chunk_rows, block):
    if block is not None:
        # Several blocks over V = 37 (not a multiple of either): of the weight gradient's
        # accumulation, and of the forward's classes. With 32 and chunk_rows=1 the forward's
        # budget of 37 logits holds one row of a 32-class block: blocks of one row.
        monkeypatch.setattr(xentc._linear, "WEIGHT_BLOCK", block)
        monkeypatch.setattr(xentc._linear, "CLASS_BLOCK", block)
    hidden, weight, bias, target = make_problem(rng, dtype, soft=options.get("soft", False))
    kw = resolve(options, rng, hidden.shape[:-1], weight.shape[0])
    if chunk_rows is not None:
        kw["chunk_bytes"] = chunk_rows * weight.shape[0] * hidden.itemsize
    case = f"dtype={np.dtype(dtype)} options={options} chunk_rows={chunk_rows}"
    want_loss, want_lse, want_dh, want_dw, want_db = reference(
        hidden, weight, bias, target, {k: v for k, v in kw.items() if k != "chunk_bytes"}
    )
    got = xentc.linear_cross_entropy(hidden, weight, target, bias=bias, **kw)
    out = xentc.linear_cross_entropy_with_grad(hidden, weight, target, bias=bias, **kw)
    if kw.get("return_lse"):
        got, got_lse = got
        loss, lse, dh, dw, db = out
        np.testing.assert_allclose(got_lse, want_lse, rtol=TOL[dtype]["rtol"], err_msg=case)
        np.testing.assert_allclose(lse, want_lse, rtol=TOL[dtype]["rtol"], err_msg=case)
        assert got_lse.dtype == lse.dtype == dtype, case
    else:
        loss, dh, dw, db = out
    # The forward-only call (blocks of classes, merged statistics) and the one with gradients
    # (whole rows through the core) are two computations: each against the reference.
    np.testing.assert_allclose(got, want_loss, rtol=TOL[dtype]["rtol"], atol=1e-6, err_msg=case)
    np.testing.assert_allclose(loss, want_loss, rtol=TOL[dtype]["rtol"], atol=1e-6, err_msg=case)
    if kw.get("reduction") == "none":
        assert got.dtype == loss.dtype == dtype and got.shape == hidden.shape[:-1], case
    else:
        assert isinstance(got, float) and isinstance(loss, float), case
    assert dh.shape == hidden.shape and dh.dtype == dtype, case
    assert dw.shape == weight.shape and dw.dtype == dtype, case
    assert db.shape == bias.shape and db.dtype == dtype, case
    assert_grad(dh, want_dh, dtype, f"{case}: grad_hidden")
    assert_grad(dw, want_dw, dtype, f"{case}: grad_weight")
    assert_grad(db, want_db, dtype, f"{case}: grad_bias")


def test_grad_output_and_no_bias(rng):
    hidden, weight, _, target = make_problem(rng, np.float64, bias=False)
    go = rng.standard_normal(hidden.shape[:-1])
    _, want_dh, want_dw, _ = reference(
        hidden, weight, None, target, {"reduction": "none"}, grad_output=go
    )[1:]
    loss, dh, dw, db = xentc.linear_cross_entropy_with_grad(
        hidden, weight, target, reduction="none", grad_output=go, chunk_bytes=8 * 37 * 8
    )
    assert db is None and loss.shape == hidden.shape[:-1]
    assert_grad(dh, want_dh, np.float64, "grad_output rows: grad_hidden")
    assert_grad(dw, want_dw, np.float64, "grad_output rows: grad_weight")
    # A scalar grad_output scales the mean's gradients.
    _, dh1, dw1, _ = xentc.linear_cross_entropy_with_grad(hidden, weight, target)
    _, dh3, dw3, _ = xentc.linear_cross_entropy_with_grad(hidden, weight, target, grad_output=-3.0)
    assert_grad(dh3, -3.0 * dh1, np.float64, "grad_output=-3: grad_hidden")
    assert_grad(dw3, -3.0 * dw1, np.float64, "grad_output=-3: grad_weight")


def test_nothing_counts_and_empty(rng):
    hidden, weight, bias, _ = make_problem(rng, np.float32)
    ignored = np.full(hidden.shape[:-1], -100)
    loss, dh, dw, db = xentc.linear_cross_entropy_with_grad(hidden, weight, ignored, bias=bias)
    assert math.isnan(loss) and not dh.any() and not dw.any() and not db.any()
    empty = np.empty((0, hidden.shape[-1]), np.float32)
    no_target = np.empty(0, np.int64)
    assert math.isnan(xentc.linear_cross_entropy(empty, weight, no_target))
    assert xentc.linear_cross_entropy(empty, weight, no_target, reduction="sum") == 0.0
    loss, dh, dw, db = xentc.linear_cross_entropy_with_grad(
        empty, weight, no_target, bias=bias, reduction="none"
    )
    assert loss.shape == (0,) and dh.shape == (0, hidden.shape[-1])
    assert not dw.any() and not db.any()


def test_bitwise_across_threads_and_close_across_chunks(rng, monkeypatch):
    monkeypatch.setattr(xentc._linear, "KERNEL_GRAIN", 64)  # the forward's kernel threaded too
    hidden, weight, bias, target = make_problem(rng, np.float32, lead=(300,), d=64, v=1500)
    runs = {
        (n, c): xentc.linear_cross_entropy_with_grad(
            hidden, weight, target, bias=bias, n_threads=n, chunk_bytes=c * 1500 * 4
        )
        for n in (1, 2)
        for c in (7, 64)
    }
    forward = {
        (n, c): xentc.linear_cross_entropy(
            hidden,
            weight,
            target,
            bias=bias,
            n_threads=n,
            chunk_bytes=c * 1500 * 4,
            reduction="none",
            return_lse=True,
        )
        for n in (1, 2)
        for c in (7, 64)
    }
    for c in (7, 64):
        for a, b in zip(runs[1, c], runs[2, c]):
            np.testing.assert_array_equal(a, b, err_msg=f"n_threads 1 vs 2, chunk of {c} rows")
        for a, b in zip(forward[1, c], forward[2, c]):
            np.testing.assert_array_equal(a, b, err_msg=f"forward, n_threads 1 vs 2, chunk {c}")
    for a, b in zip(runs[1, 7], runs[1, 64]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg="chunks of 7 vs 64 rows")
    # The BLAS's rounding of the logits depends on how many rows a product has (OpenBLAS's
    # does), so across chunk sizes the forward is close, not bitwise: see the exact-logits test.
    for a, b in zip(forward[1, 7], forward[1, 64]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg="forward, 7 vs 64 rows")


@pytest.mark.parametrize(
    "options",
    [
        {"reduction": "none", "return_lse": True},
        {"class_weight": "w", "ignore_index": 3, "label_smoothing": 0.1, "z_loss": 1e-3},
        {"soft": True, "label_smoothing": 0.05, "sample_weight": "s", "reduction": "sum"},
        {"softcap": 5.0, "logit_scale": 0.7, "reduction": "none"},
    ],
    ids=["none-lse", "weights-smoothing-zloss", "soft-sum", "softcap"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_forward_bits_do_not_depend_on_chunk_or_threads(rng, monkeypatch, dtype, options):
    # Small integers make every logit exact whatever order a BLAS adds in, so what remains is
    # xentc's own work: the class blocks are fixed and their statistics merge in one order, so
    # the budget (rows per block, down to one) and n_threads change no bit. 2500 classes: blocks
    # of 512 (four) and 452. A kernel grain of 64 logits puts every thread to work.
    monkeypatch.setattr(xentc._linear, "KERNEL_GRAIN", 64)
    n, d, v = 150, 16, 2500
    hidden = rng.integers(-3, 4, (n, d)).astype(dtype)
    weight = rng.integers(-2, 3, (v, d)).astype(dtype) / 4
    bias = rng.integers(-8, 8, v).astype(dtype) / 8
    soft = options.get("soft", False)
    target = rng.dirichlet(np.ones(v), size=n).astype(dtype) if soft else rng.integers(0, v, n)
    kw = resolve(options, rng, (n,), v)
    row = v * np.dtype(dtype).itemsize
    results = [
        xentc.linear_cross_entropy(
            hidden, weight, target, bias=bias, chunk_bytes=chunk, n_threads=threads, **kw
        )
        for chunk in (row, 3 * row, 40 * row, None)
        for threads in (1, 2)
    ]
    for got in results[1:]:
        for a, b in zip(np.atleast_1d(results[0]), np.atleast_1d(got)):
            np.testing.assert_array_equal(a, b, err_msg=f"{options}")


@pytest.mark.parametrize("soft", [False, True], ids=["index", "soft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_forward_non_finite_logits_as_the_core(rng, monkeypatch, dtype, soft):
    # Masked classes (-inf bias), a row of NaN, a row that overflows to +inf: the forward's
    # merged statistics give the core's loss and lse on the same logits, with label smoothing
    # (a masked class makes a smoothed loss +inf) and without. Blocks of 16 of the 37 classes.
    monkeypatch.setattr(xentc._linear, "CLASS_BLOCK", 16)
    hidden, weight, bias, target = make_problem(rng, dtype, lead=(9,), soft=soft)
    bias[[2, 17, 36]] = -np.inf
    if not soft:
        target[target == 2] = 4  # a masked target would be +inf in both; keep the rows finite
    hidden[4] = np.nan
    # Row 6 is one product a logit (no sum whose order could overflow differently): +inf at
    # class 5, huge and finite elsewhere.
    hidden[6] = 0.0
    hidden[6, 0] = np.finfo(dtype).max
    weight[:, 0] = np.clip(weight[:, 0], -0.9, 0.9)
    weight[5, 0] = 2.0
    with np.errstate(all="ignore"):
        logits = np.matmul(hidden, weight.T) + bias
    assert np.isposinf(logits[6, 5]) and np.isfinite(logits[6, [0, 1, 3, 4]]).all()
    for smoothing in (0.0, 0.1):
        kw = dict(reduction="none", return_lse=True, label_smoothing=smoothing)
        with np.errstate(all="ignore"):
            want, want_lse = xentc.cross_entropy(logits, target, **kw)
            got, got_lse = xentc.linear_cross_entropy(hidden, weight, target, bias=bias, **kw)
        case = f"label_smoothing={smoothing}"
        assert np.isnan(got[4]) and np.isnan(got_lse[4]), case
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], err_msg=case)
        np.testing.assert_allclose(got_lse, want_lse, rtol=TOL[dtype]["rtol"], err_msg=case)
        with np.errstate(all="ignore"):
            total = xentc.linear_cross_entropy(
                hidden, weight, target, bias=bias, label_smoothing=smoothing
            )
        assert math.isnan(total), case


def test_memory_is_a_chunk_not_n_by_v(rng):
    n, d, v = 2048, 16, 4000
    hidden = rng.standard_normal((n, d)).astype(np.float32)
    weight = rng.standard_normal((v, d)).astype(np.float32)
    target = rng.integers(0, v, n)
    chunk = 64 * v * 4  # 1 MiB of logits; N x V would be 32 MiB
    full = n * v * 4
    tracemalloc.start()
    try:
        xentc.linear_cross_entropy(hidden, weight, target, chunk_bytes=chunk)
        _, forward_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _, dh, dw, _ = xentc.linear_cross_entropy_with_grad(
            hidden, weight, target, chunk_bytes=chunk
        )
        _, backward_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The forward: the block of logits (rows x CLASS_BLOCK within the budget) and its per-row
    # statistics, about 250 bytes a row (docs/linear.md).
    assert forward_peak < chunk + 400 * n, f"forward: peak {forward_peak} B, N x V is {full} B"
    returned = dh.nbytes + dw.nbytes
    assert backward_peak < returned + 2 * chunk + full / 16, (
        f"with gradients: peak {backward_peak} B for {returned} B returned; N x V is {full} B"
    )


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda h, w, t: (h.astype(np.int32), w, t, {}), TypeError, "hidden"),
        (lambda h, w, t: (h, w.astype(np.float64), t, {}), TypeError, "weight"),
        (lambda h, w, t: (h.astype(np.complex64), w, t, {}), TypeError, "hidden"),
        (lambda h, w, t: (h, w[:, :-1], t, {}), ValueError, r"weight must have shape \(V, D\)"),
        (lambda h, w, t: (h, w, t, {"bias": np.zeros(3, np.float32)}), ValueError, "bias"),
        (lambda h, w, t: (h, w, t, {"bias": np.zeros(37)}), TypeError, "bias"),
        (lambda h, w, t: (h, w, t[:-1], {}), ValueError, "target"),
        (lambda h, w, t: (h, w, t + 37, {}), ValueError, "target"),
        (lambda h, w, t: (h, w, t, {"chunk_bytes": 10}), ValueError, "chunk_bytes"),
        (lambda h, w, t: (h, w, t, {"chunk_bytes": 1.5e9}), TypeError, "chunk_bytes"),
        (lambda h, w, t: (h, w, t, {"reduction": "avg"}), ValueError, "reduction"),
    ],
    ids=[
        "int-hidden",
        "mixed-dtypes",
        "complex",
        "D-mismatch",
        "bias-shape",
        "bias-dtype",
        "target-shape",
        "target-range",
        "chunk-too-small",
        "chunk-float",
        "reduction",
    ],
)
def test_errors(rng, build, exc, match):
    hidden, weight, _, target = make_problem(rng, np.float32, bias=False)
    h, w, t, kw = build(hidden, weight, target)
    for fn in (xentc.linear_cross_entropy, xentc.linear_cross_entropy_with_grad):
        with pytest.raises(exc, match=match):
            fn(h, w, t, **kw)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("options", OPTIONS[:4], ids=lambda o: "-".join(map(str, o)) or "defaults")
def test_16_bit_operands(rng, monkeypatch, half, options):
    # Computed in float32 from the 16-bit values: the reference takes the same values (widened
    # exactly) to float64. Loss and lse come back in float32; the gradients in the operands'
    # dtype, each rounded once (atol: a 16-bit rounding of the largest entry, plus float32's).
    if half == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16
    else:
        dtype = np.float16
    # Blocks of 16 classes: the widening and the block sums run several times over 37 classes.
    monkeypatch.setattr(xentc._linear, "WEIGHT_BLOCK", 16)
    monkeypatch.setattr(xentc._linear, "CLASS_BLOCK", 16)
    hidden, weight, bias, target = make_problem(rng, np.float32)
    hidden, weight, bias = (a.astype(dtype) for a in (hidden, weight, bias))
    kw = resolve(options, rng, hidden.shape[:-1], weight.shape[0])
    kw["chunk_bytes"] = 8 * weight.shape[0] * 4
    want_loss, _, want_dh, want_dw, want_db = reference(
        hidden, weight, bias, target, {k: v for k, v in kw.items() if k != "chunk_bytes"}
    )
    out = xentc.linear_cross_entropy_with_grad(hidden, weight, target, bias=bias, **kw)
    loss, dh, dw, db = (out[0], *out[2:]) if kw.get("return_lse") else out
    forward = xentc.linear_cross_entropy(hidden, weight, target, bias=bias, **kw)
    forward = forward[0] if kw.get("return_lse") else forward
    case = f"{half} options={options}"
    for name, got in (("with_grad", loss), ("forward", forward)):
        np.testing.assert_allclose(
            got, want_loss, rtol=TOL[np.float32]["rtol"], atol=1e-6, err_msg=f"{case}: {name}"
        )
        if kw.get("reduction") == "none":
            assert got.dtype == np.float32, f"{case}: {name}"
    eps = float(np.finfo(dtype).eps) if half == "float16" else 2.0**-7
    for name, got, want, like in (
        ("grad_hidden", dh, want_dh, hidden),
        ("grad_weight", dw, want_dw, weight),
        ("grad_bias", db, want_db, bias),
    ):
        assert got.dtype == like.dtype and got.shape == like.shape, f"{case}: {name}"
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(
            got.astype(np.float64),
            want,
            rtol=eps / 2,
            atol=TOL[np.float32]["grad"] * scale,
            err_msg=f"{case}: {name}",
        )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_over_row_chunks(rng, reduction):
    da = pytest.importorskip("dask.array", reason="xentc.dask needs dask (the dask extra)")
    import dask

    import xentc.dask as xd

    hidden, weight, bias, target = make_problem(rng, np.float64, lead=(40,), d=16, v=300)
    kw = {
        "class_weight": rng.uniform(0.5, 2, 300),
        "sample_weight": rng.uniform(0, 2, 40),
        "ignore_index": 3,
        "label_smoothing": 0.1,
        "reduction": reduction,
    }
    want, _, _, _, _ = reference(hidden, weight, bias, target, kw)
    lazy = xd.linear_cross_entropy(
        da.from_array(hidden, chunks=(7, 16)), weight, target, bias=bias, **kw
    )
    graph = dict(lazy.__dask_graph__())
    # The weight is one block of the graph, read by every block of rows: sent to a worker once.
    copies = [k for k, v in graph.items() if isinstance(v, np.ndarray) and v.shape == (300, 16)]
    assert len(copies) == 1, f"the weight is in the graph {len(copies)} times"
    got = dask.compute(lazy, scheduler="sync")[0]
    np.testing.assert_allclose(got, want, rtol=1e-11, err_msg=f"dask, {reduction}")
    with pytest.raises(ValueError, match="target"):
        xd.linear_cross_entropy(da.from_array(hidden, chunks=(7, 16)), weight, target[:-1])


def _traced_peak(fn):
    """The peak of tracemalloc's traced memory during fn() (NumPy's buffers included)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_forward_default_budget_is_4_mib(rng):
    from xentc import _linear

    assert _linear.CLASS_BLOCK == 512 and _linear.FORWARD_CHUNK_BYTES == 4 * 2**20
    assert _linear._forward_rows(None, 32000, 4, 10**6) == 2048
    assert _linear._forward_rows(None, 128256, 8, 10**6) == 1024
    assert _linear._forward_rows(None, 500, 4, 10**6) == 4 * 2**20 // 2000  # V < the block
    assert _linear._forward_rows(None, 32000, 4, 100) == 100
    assert _linear._forward_rows(32000 * 4, 32000, 4, 10**6) == 62  # one row of V: 62 of a block
    # The default forward's peak: the 4 MiB block and ~250 bytes a row; N x V would be 125 MiB.
    n, d, v = 4096, 8, 8000
    hidden = rng.standard_normal((n, d)).astype(np.float32)
    weight = rng.standard_normal((v, d)).astype(np.float32)
    target = rng.integers(0, v, n)
    peak = _traced_peak(lambda: xentc.linear_cross_entropy(hidden, weight, target))
    assert peak < 4 * 2**20 + 400 * n, f"forward with the default budget: peak {peak} B"
    # 16-bit operands add one block of rows of hidden and one of classes of the weight, widened
    # to float32, and nothing of the gradient path's (its 8192 x D block of the weight).
    d = 256
    hidden = rng.standard_normal((n, d)).astype(np.float16)
    weight = (rng.standard_normal((v, d)) / 16).astype(np.float16)
    rows = _linear._forward_rows(None, v, 4, n)
    widened = (rows + _linear.CLASS_BLOCK) * d * 4
    peak = _traced_peak(lambda: xentc.linear_cross_entropy(hidden, weight, target))
    assert peak < 4 * 2**20 + widened + 400 * n, f"float16 forward: peak {peak} B"


def test_default_chunk_is_128_mib_or_1024_rows():
    from xentc import _linear

    # 128 MiB of float32 logits of 32000 classes: 1048 rows; of 128256 classes, the 1024-row floor
    assert _linear._chunk_rows(None, 32000, 4, 10**6) == 1048
    assert _linear._chunk_rows(None, 128256, 4, 10**6) == 1024
    assert _linear._chunk_rows(None, 128256, 4, 100) == 100
    # an explicit budget is kept to, below the floor too
    assert _linear._chunk_rows(2 * 128256 * 4, 128256, 4, 10**6) == 2


def test_bfloat16_widening_is_exact_for_every_bit_pattern():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 comes from ml_dtypes")
    from xentc import _linear

    every = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    widened = np.empty(every.shape, np.float32)
    _linear._widen(every, widened)
    np.testing.assert_array_equal(widened.view(np.uint32), every.astype(np.float32).view(np.uint32))

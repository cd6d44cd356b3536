"""Every error of the spec (shared/spec/api.md) and of notes/semantics.md, one case each.

Each case is tried on cross_entropy and on cross_entropy_with_grad (without out=, with a sentinel
out=, and in place with out=logits where the logits are valid). The spec says errors are raised
before anything is computed, so `out` (and the logits, for out=logits) must be bitwise unchanged.
Messages must name the argument, and show the bad value where the spec asks for it.
"""

import numpy as np
import pytest

import xentc

N, C = 4, 5
SENTINEL = 1234.5  # a valid weight/probability too, so overlap cases fail only on the overlap


def logits_(dtype=np.float64, shape=(N, C)):
    return np.linspace(-2.0, 2.0, int(np.prod(shape))).astype(dtype).reshape(shape)


def target_():
    return np.array([0, 1, 4, 2])


def probs_(dtype=np.float64):
    return np.full((N, C), 1.0 / C, dtype)


# (id, build() -> (logits, target, kwargs), exception, match). `match` is a regex searched in the
# message: the argument name, plus the bad value where the spec asks for it.
WEIGHT = r"(?<![A-Za-z_])weight"  # 'weight' but not 'sample_weight'
COMMON = [
    # logits
    ("logits-int64", lambda: (logits_(np.int64), target_(), {}), TypeError, "logits"),
    ("logits-bool", lambda: (logits_() > 0, target_(), {}), TypeError, "logits"),
    ("logits-complex", lambda: (logits_(np.complex128), target_(), {}), TypeError, "logits"),
    # float16 and bfloat16 logits are valid since issue 6 (tests/test_half.py), which supersedes
    # the spec's "float16 logits are a TypeError"; other float dtypes still are not
    ("logits-longdouble", lambda: (logits_(np.longdouble), target_(), {}), TypeError, "logits"),
    (
        "logits-float16-as-uint16",
        lambda: (logits_(np.float16).view(np.uint16), target_(), {}),
        TypeError,
        "logits",
    ),
    ("logits-object", lambda: (logits_(object), target_(), {}), TypeError, "logits"),
    ("logits-C0", lambda: (np.zeros((N, 0)), target_(), {}), ValueError, "logits"),
    # target
    ("target-bool", lambda: (logits_(), target_() > 0, {}), TypeError, "target"),
    ("target-complex", lambda: (logits_(), target_().astype(complex), {}), TypeError, "target"),
    ("target-str", lambda: (logits_(), target_().astype(str), {}), TypeError, "target"),
    ("target-probs-float16", lambda: (logits_(), probs_(np.float16), {}), TypeError, "target"),
    # The dtype decides how a target is read: a target whose shape fits the other reading is
    # told about its dtype, named before any shape.
    (
        "target-int-of-logits-shape",
        lambda: (logits_(), np.zeros((N, C), np.int64), {}),
        ValueError,
        r"^target must be floating [^;]*; got integer dtype int64 ",
    ),
    (
        "target-uint8-one-hot",
        lambda: (logits_(), np.eye(C, dtype=np.uint8)[target_()], {}),
        ValueError,
        r"^target must be floating [^;]*; got integer dtype uint8 ",
    ),
    (
        "target-float-of-row-shape",
        lambda: (logits_(), target_().astype(np.float64), {}),
        ValueError,
        r"^target must be an integer array for class indices; got floating dtype float64",
    ),
    (
        "target-float32-of-row-shape",
        lambda: (logits_(), target_().astype(np.float32), {}),
        ValueError,
        r"^target must be an integer array[^;]*; got floating dtype float32 ",
    ),
    (
        "target-float16-of-row-shape",
        lambda: (logits_(), target_().astype(np.float16), {}),
        ValueError,
        r"^target must be an integer array[^;]*; got floating dtype float16 ",
    ),
    ("target-too-short", lambda: (logits_(), target_()[:-1], {}), ValueError, "target"),
    (
        "target-probs-wrong-C",
        lambda: (logits_(), np.full((N, C + 1), 0.1), {}),
        ValueError,
        "target",
    ),
    (
        "target-index-C",
        lambda: (logits_(), np.array([0, 1, 7, 2]), {}),
        ValueError,
        r"target[\s\S]*(?<!\d)7(?!\d)",
    ),
    (
        "target-index-negative",
        lambda: (logits_(), np.array([0, -3, 1, 2]), {}),
        ValueError,
        r"target[\s\S]*(?<!\d)-3(?!\d)",
    ),
    (
        "target-index-custom-ignore",
        lambda: (logits_(), np.array([0, -100, 1, 2]), {"ignore_index": -1}),
        ValueError,
        r"target[\s\S]*-100(?!\d)",
    ),
    # Unsigned targets compare as integers: 65436 is -100 modulo 2**16 but is not ignore_index.
    (
        "target-uint16-65436",
        lambda: (logits_(), np.array([0, 65436, 1, 2], np.uint16), {}),
        ValueError,
        r"target[\s\S]*65436",
    ),
    (
        "target-uint64-wraps-to-minus-100",
        lambda: (logits_(), np.array([0, 2**64 - 100, 1, 2], np.uint64), {}),
        ValueError,
        r"target[\s\S]*18446744073709551516",
    ),
    (
        "target-int8-out-of-range",
        lambda: (logits_(), np.array([0, 1, 127, 2], np.int8), {}),
        ValueError,
        r"target[\s\S]*127",
    ),
    # weight
    (
        "weight-int",
        lambda: (logits_(), target_(), {"weight": np.ones(C, np.int64)}),
        TypeError,
        WEIGHT,
    ),
    (
        "weight-bool",
        lambda: (logits_(), target_(), {"weight": np.ones(C, bool)}),
        TypeError,
        WEIGHT,
    ),
    (
        "weight-too-long",
        lambda: (logits_(), target_(), {"weight": np.ones(C + 1)}),
        ValueError,
        WEIGHT,
    ),
    (
        "weight-too-short",
        lambda: (logits_(), target_(), {"weight": np.ones(C - 1)}),
        ValueError,
        WEIGHT,
    ),
    ("weight-2d", lambda: (logits_(), target_(), {"weight": np.ones((1, C))}), ValueError, WEIGHT),
    ("weight-0d", lambda: (logits_(), target_(), {"weight": np.float64(1.0)}), ValueError, WEIGHT),
    # sample_weight
    (
        "sample_weight-negative",
        lambda: (logits_(), target_(), {"sample_weight": np.array([1.0, -0.5, 1.0, 1.0])}),
        ValueError,
        "sample_weight",
    ),
    (
        "sample_weight-nan",
        lambda: (logits_(), target_(), {"sample_weight": np.array([1.0, 1.0, np.nan, 1.0])}),
        ValueError,
        "sample_weight",
    ),
    (
        "sample_weight-wrong-shape",
        lambda: (logits_(), target_(), {"sample_weight": np.ones(N + 1)}),
        ValueError,
        "sample_weight",
    ),
    (
        "sample_weight-column",
        lambda: (logits_(), target_(), {"sample_weight": np.ones((N, 1))}),
        ValueError,
        "sample_weight",
    ),
    (
        "sample_weight-int",
        lambda: (logits_(), target_(), {"sample_weight": np.ones(N, np.int64)}),
        TypeError,
        "sample_weight",
    ),
    # scalar options
    (
        "reduction-bad",
        lambda: (logits_(), target_(), {"reduction": "bad"}),
        ValueError,
        "reduction[\\s\\S]*bad",
    ),
    (
        "reduction-Mean",
        lambda: (logits_(), target_(), {"reduction": "Mean"}),
        ValueError,
        "reduction[\\s\\S]*Mean",
    ),
    *[
        (
            f"label_smoothing-{v}",
            lambda v=v: (logits_(), target_(), {"label_smoothing": v}),
            ValueError,
            f"label_smoothing[\\s\\S]*{pat}",
        )
        for v, pat in [
            (float("nan"), "(?i:nan)"),
            (float("inf"), "(?i:inf)"),
            (-0.1, r"-0\.1"),
            (1.1, r"1\.1"),
        ]
    ],
    (
        "label_smoothing-nan-soft",
        lambda: (logits_(), probs_(), {"label_smoothing": float("nan")}),
        ValueError,
        "label_smoothing",
    ),
    *[
        (
            f"z_loss-{v}",
            lambda v=v: (logits_(), target_(), {"z_loss": v}),
            ValueError,
            f"z_loss[\\s\\S]*{pat}",
        )
        for v, pat in [(-1.0, "-1"), (float("nan"), "(?i:nan)"), (float("inf"), "(?i:inf)")]
    ],
    *[
        (
            f"n_threads-{v!r}",
            lambda v=v: (logits_(), target_(), {"n_threads": v}),
            ValueError,
            f"n_threads[\\s\\S]*{v}",
        )
        for v in (0, -1)
    ],
    *[
        (
            f"n_threads-{v!r}",
            lambda v=v: (logits_(), target_(), {"n_threads": v}),
            TypeError,
            "n_threads",
        )
        for v in (True, 2.0, "2")
    ],
    (
        "ignore_index-float",
        lambda: (logits_(), target_(), {"ignore_index": 1.5}),
        TypeError,
        "ignore_index",
    ),
    # Found by tests/test_fuzz.py: an int beyond the float range raised OverflowError, and a
    # NumPy complex scalar passed with its imaginary part dropped.
    *[
        (
            f"{name}-int-beyond-float",
            lambda name=name, v=v: (logits_(), target_(), {name: v}),
            ValueError,
            name,
        )
        for name in ("label_smoothing", "z_loss")
        for v in (10**400, -(10**400))
    ],
    *[
        (
            f"{name}-numpy-complex",
            lambda name=name: (logits_(), target_(), {name: np.complex128(0.1 + 1j)}),
            TypeError,
            name,
        )
        for name in ("label_smoothing", "z_loss")
    ],
]

GRAD_OUTPUT = [
    (
        "grad_output-none-too-long",
        lambda: (logits_(), target_(), {"reduction": "none", "grad_output": np.ones(N + 1)}),
    ),
    (
        "grad_output-none-column",
        lambda: (logits_(), target_(), {"reduction": "none", "grad_output": np.ones((N, 1))}),
    ),
    (
        "grad_output-none-logits-shape",
        lambda: (logits_(), target_(), {"reduction": "none", "grad_output": np.ones((N, C))}),
    ),
    (
        "grad_output-mean-1d",
        lambda: (logits_(), target_(), {"reduction": "mean", "grad_output": np.ones(N)}),
    ),
    (
        "grad_output-sum-1d",
        lambda: (logits_(), target_(), {"reduction": "sum", "grad_output": np.ones(1)}),
    ),
    (
        "grad_output-mean-2d",
        lambda: (logits_(), target_(), {"reduction": "mean", "grad_output": np.ones((1, 1))}),
    ),
]


def _is_valid_logits(x):
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and x.shape[-1] > 0


def _cases_with_variants(cases, variants):
    params = []
    for case in cases:
        logits = case[1]()[0]
        for variant in variants:
            # out= needs logits of a valid dtype, else which of logits/out is blamed is unspecified
            if variant != "loss" and variant != "grad" and not _is_valid_logits(logits):
                continue
            params.append(
                pytest.param(case[1], case[2], case[3], variant, id=f"{case[0]}-{variant}")
            )
    return params


def _call(variant, logits, target, kw):
    """Run one entry point; return the arrays that must come out unchanged."""
    watched = {"logits": logits, "target": target}
    if variant == "loss":
        call = lambda: xentc.cross_entropy(logits, target, **kw)
    else:
        if variant == "grad-out":
            kw = dict(kw, out=np.full(logits.shape, SENTINEL, logits.dtype))
            watched["out"] = kw["out"]
        elif variant == "grad-inplace":
            kw = dict(kw, out=logits)
        call = lambda: xentc.cross_entropy_with_grad(logits, target, **kw)
    for key in ("weight", "sample_weight", "grad_output"):
        if isinstance(kw.get(key), np.ndarray):
            watched[key] = kw[key]
    before = {k: np.array(v, copy=True) for k, v in watched.items() if isinstance(v, np.ndarray)}
    return call, watched, before


def _assert_unchanged(watched, before, what):
    for key, old in before.items():
        # Compare the bytes: NaN sentinels and -0.0 must survive too.
        assert np.asarray(watched[key]).tobytes() == old.tobytes(), f"{key} was modified ({what})"


@pytest.mark.parametrize(
    "build, exc, match, variant",
    _cases_with_variants(COMMON, ["loss", "grad", "grad-out", "grad-inplace"]),
)
def test_argument_error(build, exc, match, variant):
    logits, target, kw = build()
    call, watched, before = _call(variant, logits, target, kw)
    with pytest.raises(exc, match=match):
        call()
    _assert_unchanged(watched, before, f"{variant} with {sorted(kw)}")


@pytest.mark.parametrize(
    "build, variant",
    [
        pytest.param(b, v, id=f"{i}-{v}")
        for i, b in GRAD_OUTPUT
        for v in ("grad", "grad-out", "grad-inplace")
    ],
)
def test_grad_output_error(build, variant):
    logits, target, kw = build()
    call, watched, before = _call(variant, logits, target, kw)
    with pytest.raises(ValueError, match="grad_output"):
        call()
    _assert_unchanged(watched, before, f"{variant} with {kw}")


def test_late_bad_target_writes_nothing():
    # The O(N) target scan runs last (STYLE 2); a bad index in the very last row of a large input
    # must still stop the call before a kernel writes into out or into the logits (out=logits).
    logits = logits_(np.float32, (100_000, 8))
    target = np.zeros(100_000, np.int64)
    target[-1] = 8
    for out in (np.full(logits.shape, SENTINEL, np.float32), logits):
        before = out.copy()
        with pytest.raises(ValueError, match=r"target[\s\S]*(?<!\d)8(?!\d)"):
            xentc.cross_entropy_with_grad(logits, target, out=out)
        assert out.tobytes() == before.tobytes(), (
            f"out written before the error (out is logits: {out is logits})"
        )


# ---- out= itself --------------------------------------------------------------------------------


def _overlap_shifted_cols():
    buf = np.full((N, C + 1), SENTINEL)
    buf[:, :-1] = logits_()
    return buf[:, :-1], target_(), {"out": buf[:, 1:]}, buf


def _overlap_shifted_rows():
    buf = np.full((N + 1, C), SENTINEL)
    buf[:-1] = logits_()
    return buf[:-1], target_(), {"out": buf[1:]}, buf


def _overlap_transposed():
    buf = logits_(np.float64, (C, C))  # square, so the transpose has the logits' shape
    return buf, np.arange(C), {"out": buf.T}, buf


def _overlap_step():
    buf = np.full((N, 2 * C), SENTINEL)
    buf[:, :C] = logits_()
    return buf[:, :C], target_(), {"out": buf[:, ::2]}, buf


def _overlap_reversed():
    buf = logits_()
    return buf, target_(), {"out": buf[::-1]}, buf


def _overlap_probs():
    probs = probs_()
    return logits_(), probs, {"out": probs}, probs


def _overlap_probs_shifted():
    buf = np.full((N, C + 1), 1.0 / C)
    return logits_(), buf[:, :-1], {"out": buf[:, 1:]}, buf


def _overlap_other(key, reduction="mean"):
    def build():
        out = np.full((N, C), SENTINEL)
        value = {"weight": out[0], "sample_weight": out[:, 2], "grad_output": out[:, 0]}[key]
        return logits_(), target_(), {"out": out, key: value, "reduction": reduction}, out

    return build


def _readonly():
    out = np.full((N, C), SENTINEL)
    out.flags.writeable = False
    return logits_(), target_(), {"out": out}, out


OUT_CASES = [
    (
        "wrong-shape",
        lambda: (logits_(), target_(), {"out": np.full((N, C + 1), SENTINEL)}, None),
        ValueError,
    ),
    (
        "transposed-shape",
        lambda: (logits_(), target_(), {"out": np.full((C, N), SENTINEL)}, None),
        ValueError,
    ),
    ("flat", lambda: (logits_(), target_(), {"out": np.full(N * C, SENTINEL)}, None), ValueError),
    (
        "float32-for-float64",
        lambda: (logits_(), target_(), {"out": np.full((N, C), SENTINEL, np.float32)}, None),
        ValueError,
    ),
    (
        "float64-for-float32",
        lambda: (logits_(np.float32), target_(), {"out": np.full((N, C), SENTINEL)}, None),
        ValueError,
    ),
    ("read-only", _readonly, ValueError),
    (
        "broadcast",
        lambda: (
            logits_(),
            target_(),
            {"out": np.broadcast_to(np.full(C, SENTINEL), (N, C))},
            None,
        ),
        ValueError,
    ),
    (
        "list",
        lambda: (logits_(), target_(), {"out": np.full((N, C), SENTINEL).tolist()}, None),
        TypeError,
    ),
    ("overlap-shifted-cols", _overlap_shifted_cols, ValueError),
    ("overlap-shifted-rows", _overlap_shifted_rows, ValueError),
    ("overlap-transposed", _overlap_transposed, ValueError),
    ("overlap-step", _overlap_step, ValueError),
    ("overlap-reversed", _overlap_reversed, ValueError),
    ("overlap-target-probs", _overlap_probs, ValueError),
    ("overlap-target-probs-shifted", _overlap_probs_shifted, ValueError),
    ("overlap-weight", _overlap_other("weight"), ValueError),
    ("overlap-sample_weight", _overlap_other("sample_weight"), ValueError),
    ("overlap-grad_output", _overlap_other("grad_output", "none"), ValueError),
]


@pytest.mark.parametrize("build, exc", [pytest.param(b, e, id=i) for i, b, e in OUT_CASES])
def test_out_error(build, exc):
    logits, target, kw, buf = build()
    watched = {"logits": logits, "target": target, "out": kw["out"], "buffer": buf}
    before = {k: np.array(v, copy=True) for k, v in watched.items() if v is not None}
    with pytest.raises(exc, match=r"(?<![A-Za-z_])out(?![A-Za-z_])"):
        xentc.cross_entropy_with_grad(logits, target, **kw)
    _assert_unchanged(watched, before, f"out case, kwargs {sorted(kw)}")


# ---- logsumexp / softmax / log_softmax ----------------------------------------------------------

ROW_FUNCS = [xentc.logsumexp, xentc.softmax, xentc.log_softmax]


@pytest.mark.parametrize("fn", ROW_FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "x_dtype",
    [np.int64, np.int32, np.uint8, np.bool_, np.complex128, object],
    ids=lambda d: np.dtype(d).name,
)
def test_row_function_rejects_non_float(fn, x_dtype):
    # Only the dtype matters here: casting negative floats to unsigned warns on aarch64's NumPy.
    with np.errstate(invalid="ignore"):
        x = logits_(np.float64).astype(x_dtype)
    with pytest.raises(TypeError, match=r"(?<![A-Za-z_])x(?![A-Za-z_])"):
        fn(x)


@pytest.mark.parametrize("fn", ROW_FUNCS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis", [2, -3, 10])
def test_row_function_axis_out_of_range(fn, axis):
    # numpy's AxisError (a ValueError and an IndexError) is what numpy itself raises here.
    with pytest.raises((ValueError, IndexError), match="axis"):
        fn(logits_(), axis=axis)


@pytest.mark.parametrize(
    "target, match",
    [
        (
            np.array([0.0, 1.0, 4.0, 2.0]),
            r"^target must be an integer array[^;]*; got floating dtype float64 ",
        ),
        (np.zeros((N, 3), np.int32), r"^target must be floating [^;]*; got integer dtype int32 "),
    ],
    ids=["float-indices", "int-probabilities"],
)
def test_shard_target_dtype_named(target, match):
    # The shards read targets with the core's validator: one message for one mistake.
    block = logits_()[:, :3]
    with pytest.raises(ValueError, match=match) as info:
        xentc.shard_stats(block, target, class_offset=0, n_classes=C)
    assert "logits_block.shape" in str(info.value), str(info.value)


@pytest.mark.parametrize("lse_dtype", [np.float32, "float16", "double precision", 3])
def test_lse_dtype_must_be_none_or_float64(lse_dtype):
    # cross_entropy's lse comes in the logits' dtype (None) or in float64, nothing else.
    with pytest.raises(ValueError, match="lse_dtype"):
        xentc.cross_entropy(logits_(), target_(), return_lse=True, lse_dtype=lse_dtype)
    _, lse = xentc.cross_entropy(logits_(), target_(), return_lse=True, lse_dtype="float64")
    assert lse.dtype == np.float64

"""Accuracy of xentc on float16 and bfloat16 logits, for the README's "Half-precision logits".

    python tools/half_accuracy.py            # run from outside the checkout: the installed xentc
    python tools/half_accuracy.py --speed    # also: time of each variant over plain float32

For each 16-bit dtype and shape, logits 3 * N(0, 1) (rounded to the dtype) and random index
targets, it compares xentc with the float64 reference of tests/reference.py evaluated on the
16-bit logits widened exactly:
  loss rel   |mean loss - reference| / reference (reduction 'mean')
  grad abs   max |grad - reference| with reduction 'sum' (each row's gradient p - onehot, of unit
             size), the 16-bit gradient widened exactly
  f32 grad   the same for the float32 kernel on the widened logits (what the 16-bit path
             computes before it rounds the gradient to its dtype)
  unit rnd   the dtype's unit roundoff (2^-11, 2^-8): what rounding a gradient entry of size
             up to 1 to the dtype may cost
The reference is slow (pure Python, exactly rounded sums): ~15 s for everything.
--speed times loss + gradient (out= reused, one thread, min of 15 calls) at (64, 32000) under
each instruction set: float32 with logit_scale, with softcap, float16 and bfloat16 logits, each
as a ratio to plain float32. A quick ratio, not a benchmark (python -m xentc.bench is that).
"""

import os
import sys
import time

import ml_dtypes
import numpy as np

import xentc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference import ref_cross_entropy, ref_grad

SHAPES = [(64, 32000), (4, 256000)]
DTYPES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


def unit_roundoff(dtype):
    return 2.0**-11 if dtype == np.float16 else 2.0**-8


def main():
    print(f"xentc {xentc.__version__}, instruction set {xentc._kernels.isa_active()}")
    print(
        f"{'dtype':9s} {'shape':13s} {'loss rel':>9s} {'grad abs':>9s} {'f32 grad':>9s} "
        f"{'unit rnd':>9s}"
    )
    for shape in SHAPES:
        rng = np.random.default_rng(2026)
        base = (3 * rng.standard_normal(shape)).astype(np.float32)
        target = rng.integers(0, shape[1], shape[0])
        for dtype in DTYPES:
            logits = base.astype(dtype)
            wide = logits.astype(np.float32)
            start = time.perf_counter()
            ref_loss, _ = ref_cross_entropy(logits, target)
            expected = ref_grad(logits, target, reduction="sum")
            loss = xentc.cross_entropy(logits, target)
            _, grad = xentc.cross_entropy_with_grad(logits, target, reduction="sum")
            _, grad32 = xentc.cross_entropy_with_grad(wide, target, reduction="sum")
            grad_err = np.max(np.abs(grad.astype(np.float32).astype(np.float64) - expected))
            f32_err = np.max(np.abs(grad32.astype(np.float64) - expected))
            print(
                f"{dtype.name:9s} {shape!s:13s} {abs(loss - ref_loss) / ref_loss:9.2e} "
                f"{grad_err:9.2e} {f32_err:9.2e} {unit_roundoff(dtype):9.2e}"
                f"   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


def speed():
    rng = np.random.default_rng(0)
    z = (3 * rng.standard_normal((64, 32000))).astype(np.float32)
    y = rng.integers(0, 32000, 64)
    variants = [
        ("float32", z, {}),
        ("logit_scale", z, {"logit_scale": 0.5}),
        ("softcap", z, {"softcap": 30.0}),
        ("float16", z.astype(np.float16), {}),
        ("bfloat16", z.astype(ml_dtypes.bfloat16), {}),
    ]
    active = xentc._kernels.isa_active()
    print("\nloss + grad, (64, 32000), 1 thread: time over plain float32")
    try:
        for isa in xentc._kernels.isa_supported():
            xentc._kernels._use_isa(isa)
            times = {}
            for name, arr, kw in variants:
                out = np.empty_like(arr)
                runs = []
                for _ in range(15):
                    start = time.perf_counter()
                    xentc.cross_entropy_with_grad(arr, y, out=out, n_threads=1, **kw)
                    runs.append(time.perf_counter() - start)
                times[name] = min(runs)
            print(
                f"{isa:9s} float32 {times['float32'] * 1e3:.2f} ms  "
                + "  ".join(
                    f"{k} {v / times['float32']:.2f}x" for k, v in times.items() if k != "float32"
                )
            )
    finally:
        xentc._kernels._use_isa(active)


if __name__ == "__main__":
    main()
    if "--speed" in sys.argv[1:]:
        speed()

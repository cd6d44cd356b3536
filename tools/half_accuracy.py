"""Accuracy of xentc on float16 and bfloat16 logits, for the README's "Half-precision logits".

    python tools/half_accuracy.py            # run from outside the checkout: the installed xentc

For each 16-bit dtype and shape, logits 3 * N(0, 1) (rounded to the dtype) and random index
targets, it compares xentc with the float64 reference of tests/reference.py evaluated on the
16-bit logits widened exactly:
  loss rel   |mean loss - reference| / reference (reduction 'mean')
  grad abs   max |grad - reference| with reduction 'sum' (each row's gradient p - onehot, of unit
             size), the 16-bit gradient widened exactly
  f32 grad   the same for the float32 kernel on the widened logits (what the 16-bit path
             computes before it rounds the gradient to its dtype)
  half ulp   half a unit in the last place of the dtype at the largest |reference| entry: what
             the final rounding alone may cost
The reference is slow (pure Python, exactly rounded sums): ~15 s for everything.
"""

import os
import sys
import time

import ml_dtypes
import numpy as np
import xentc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference import ref_cross_entropy, ref_grad  # noqa: E402

SHAPES = [(64, 32000), (4, 256000)]
DTYPES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


def half_ulp(x, dtype):
    mag = np.float64(np.max(np.abs(x)))
    if dtype == np.float16:
        return float(np.spacing(np.float16(mag))) / 2
    return float(np.spacing(np.float32(mag))) * 65536 / 2


def main():
    print(f"xentc {xentc.__version__}, instruction set {xentc._kernels.isa_active()}")
    print(f"{'dtype':9s} {'shape':13s} {'loss rel':>9s} {'grad abs':>9s} {'f32 grad':>9s} "
          f"{'half ulp':>9s}")
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
            print(f"{dtype.name:9s} {str(shape):13s} {abs(loss - ref_loss) / ref_loss:9.2e} "
                  f"{grad_err:9.2e} {f32_err:9.2e} {half_ulp(expected, dtype):9.2e}"
                  f"   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

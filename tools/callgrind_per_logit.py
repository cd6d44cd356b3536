"""Instructions per logit (or per row) of the fused kernels at one thread, counted by callgrind.

run: python3 tools/callgrind_per_logit.py [--isa avx2] [--case NAME ...]

Wall-clock on a shared 2-core VM moves by tens of percent from run to run; the instruction count
of a kernel call does not, so it is the figure to compare a kernel change by (issue 21). Each
case runs in its own `valgrind --tool=callgrind` process that counts only inside the exported
kernel entry point (xc_xent_<dtype>_<isa>: its helpers are inlined or called from it), for one
call after a warm-up call, at n_threads=1. Page faults, the Python wrappers and validation are
not counted: those need the wall-clock figures of `python -m xentc.bench`.

Figures are instructions, not cycles: a change that trades instructions for latency (a longer
dependency chain, a gather) still has to be timed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

# name: (rows, classes, dtype, with gradient); "grad" runs write the gradient into out=logits.
CASES = {
    "f32-fwd-64x32000": (64, 32000, "float32", False),
    "f32-grad-64x32000": (64, 32000, "float32", True),
    "f64-fwd-64x32000": (64, 32000, "float64", False),
    "f64-grad-64x32000": (64, 32000, "float64", True),
    "f32-grad-256x1000": (256, 1000, "float32", True),
}
# short rows (the tiles of src_c/xc_short_rows.inc), each dtype and pass
CASES.update(
    {
        f"{dtype[0]}{dtype[-2:]}-{'grad' if grad else 'fwd'}-4096x{classes}": (
            4096,
            classes,
            dtype,
            grad,
        )
        for dtype in ("float32", "float64")
        for classes in (10, 32, 100)
        for grad in (False, True)
    }
)


def run_case(name):
    """The child: one warm-up call, then the counted call (collection toggled by valgrind)."""
    import numpy as np

    import xentc

    rows, classes, dtype, grad = CASES[name]
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
    target = rng.integers(0, classes, rows)
    for _ in range(2):  # the first call warms caches, the pool and lazy symbol binding
        work = logits.copy()
        if grad:
            xentc.cross_entropy_with_grad(work, target, out=work, n_threads=1)
        else:
            xentc.cross_entropy(work, target, n_threads=1)


def count(name, isa, python):
    """Instructions inside xc_xent_* during the case's second call."""
    rows, classes, dtype, _ = CASES[name]
    suffix = "f32" if dtype == "float32" else "f64"
    symbol = {"baseline": "base"}.get(isa, isa)  # XENTC_ISA=baseline runs xc_xent_*_base
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, XENTC_ISA=isa, PYTHONMALLOC="malloc", OMP_NUM_THREADS="1")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--toggle-collect=xc_xent_{suffix}_{symbol}",
                f"--callgrind-out-file={out}",
                python,
                os.path.abspath(__file__),
                "--child",
                name,
            ],
            env=env,
            check=True,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            text = f.read()
    total = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
    if total == 0:
        raise SystemExit(f"{name}: nothing counted in xc_xent_{suffix}_{symbol} (XENTC_ISA={isa})")
    # two calls were counted (the warm-up too: toggling is per entry), so halve
    return total / 2, rows, classes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", default="avx2", help="XENTC_ISA for the runs (default avx2)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_case(args.child)
        return
    print(f"callgrind, XENTC_ISA={args.isa}, n_threads=1, one call (grad: out=logits)")
    print(f"{'case':22} {'instructions':>14} {'per logit':>10} {'per row':>10}")
    for name in args.case or CASES:
        total, rows, classes = count(name, args.isa, sys.executable)
        print(f"{name:22} {total:14.0f} {total / (rows * classes):10.2f} {total / rows:10.1f}")


if __name__ == "__main__":
    main()

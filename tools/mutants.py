"""Mutation check of the test suite: does it catch a wrong kernel or a missing check?

    python tools/mutants.py --python /work/venv-mut/bin/python [--tier fast|full] [NAME ...]

Each mutant below is one small, plausible bug (a coefficient, a bound, a dropped term) in the C
kernels or in the validation. For each, the checkout's files are copied to a scratch folder, the
mutation applied there, xentc installed from it into the given environment (which must have the
test extra; `pip install --no-build-isolation`, so that a second mutant recompiles only what its
edit touches) and the tier run with -x: a mutant is caught when a test fails. The checkout is
never modified. The report lists each mutant, caught or not, with the first failing test.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> (file, text, replacement, what the bug is)
MUTANTS = {
    "zloss-index-grad": (
        "src_c/xc_row_loss.inc",
        "c.p_coef = (1.0 - eps) * wy + floor * class_weight_sum + 2.0 * zl * wy * lse;",
        "c.p_coef = (1.0 - eps) * wy + floor * class_weight_sum + zl * wy * lse;",
        "the z-loss term of an index row's gradient halved",
    ),
    "zloss-prob-target": (
        "src_c/xc_row_loss.inc",
        "c.excess = t_other + 2.0 * zl * lse;",
        "c.excess = t_other;",
        "the z-loss term dropped from a probability row's target-class gradient",
    ),
    "exp-coefficient": (
        "src_c/xc_math.h",
        "q = q * r + 0.0416682586f;",
        "q = q * r + 0.0416f;",
        "a float32 exp polynomial coefficient rounded to 3 digits (~1e-5 relative error)",
    ),
    "split-loss-sum": (
        "src_c/xc_split_rows.inc",
        "            total += block;",
        "            total = block;",
        "the split-row path's loss sum keeps only the last row",
    ),
    "short-rows-ignore": (
        "src_c/xc_short_rows.inc",
        "    const int64_t ignore = a->ignore_index;",
        "    const int64_t ignore = a->ignore_index - 1;",
        "the short-row kernel compares targets with the wrong ignore_index",
    ),
    "backward-target-class": (
        "src_c/xc_backward.inc",
        "c.exact_grad = target_grad(scale, rc, -expm1((double)logit_at(a, i, y) - lse));",
        "c.exact_grad = target_grad(scale, rc, -expm1((double)logit_at(a, i, y) - lse) * 0.999);",
        "the backward mode's target-class gradient off by 0.1 %",
    ),
    "validate-index-bound": (
        "xentc/_validate.py",
        "if t.size and (t.min() < 0 or t.max() >= n_classes):",
        "if t.size and (t.min() < 0 or t.max() > n_classes):",
        "a target equal to C passes the index check (the kernel reads past the row)",
    ),
    "validate-overlap": (
        "xentc/_validate.py",
        "    if b is None or not np.may_share_memory(a, b):\n        return False",
        "    if True:\n        return False",
        "out= overlapping an input is no longer refused",
    ),
    "validate-smoothing-range": (
        "xentc/_validate.py",
        '    if not 0.0 <= label_smoothing <= 1.0:\n        raise ValueError(f"label_smoothing',
        '    if not 0.0 <= label_smoothing <= 2.0:\n        raise ValueError(f"label_smoothing',
        "label_smoothing up to 2 accepted",
    ),
}

TIERS = {
    "fast": ["-m", "not slow and not full"],
    "full": [],
}


def checkout_files():
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def install(python, src):
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(src)],
        check=True,
        capture_output=True,
    )


def run_tier(python, src, tier):
    """(caught, first failing test or '')."""
    env = dict(os.environ, XENTC_SWEEP_EXAMPLES=os.environ.get("XENTC_SWEEP_EXAMPLES", "25"))
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TIERS[tier]]
    cmd += ["-c", str(src / "pyproject.toml"), "--rootdir", str(src), str(src / "tests")]
    out = subprocess.run(
        cmd, cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True, check=False
    )
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED")]
    return out.returncode != 0, (failed[0][7:] if failed else out.stdout[-300:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True)
    parser.add_argument("--tier", choices=sorted(TIERS), default="fast")
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    args = parser.parse_args()
    names = args.names or list(MUTANTS)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="xentc-mutants-"))
    src = scratch / "src"
    for f in checkout_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    results = []
    try:
        for name in names:
            path, text, replacement, what = MUTANTS[name]
            original = (src / path).read_text()
            assert original.count(text) == 1, f"{name}: the text to mutate is not unique in {path}"
            (src / path).write_text(original.replace(text, replacement))
            start = time.monotonic()
            try:
                install(args.python, src)
                caught, detail = run_tier(args.python, src, args.tier)
            finally:
                (src / path).write_text(original)
            verdict = "caught" if caught else "SURVIVED"
            results.append((name, verdict, what, detail))
            print(f"{name}: {verdict} in {time.monotonic() - start:.0f} s ({what}): {detail}")
            sys.stdout.flush()
        install(args.python, src)  # leave the environment with the unmutated build
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    survived = [r for r in results if r[1] != "caught"]
    print(f"{len(results) - len(survived)} of {len(results)} mutants caught ({args.tier} tier)")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

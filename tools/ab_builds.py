"""Two builds of xentc timed against each other in interleaved processes, for a kernel change.

run: python3 tools/ab_builds.py --old DIR [--new DIR] [--threads 2] [--rounds 12]
                                 [--pass grad|forward] N,C[,dtype] ...

DIR is a folder that holds an installed xentc (`pip install --target DIR .` from a checkout of
the other version); without --new, the new build is the one this Python imports. Each round
starts one fresh process per build, in alternating order (old first, then new first), and each
process times 9 calls of the pass (loss + gradient into out=logits, or the forward) and reports
their median. A shared machine's noise moves whole rounds by tens of percent, so the figure to
read is the median over rounds of each round's new/old ratio, not one round's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import xentc
rows, classes, dtype, threads, kind = sys.argv[1:]
rng = np.random.default_rng(0)
logits = (rng.standard_normal((int(rows), int(classes))) * 3).astype(dtype)
target = rng.integers(0, int(classes), int(rows))
times = []
for _ in range(9):
    start = time.perf_counter()
    if kind == "grad":
        xentc.cross_entropy_with_grad(logits, target, out=logits, n_threads=int(threads))
    else:
        xentc.cross_entropy(logits, target, n_threads=int(threads))
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[4]))
"""


def one(folder, workload, threads, kind):
    """Median seconds of one process of the build in `folder` (None: this Python's)."""
    env = dict(os.environ)
    if folder:
        env["PYTHONPATH"] = folder
    rows, classes, dtype = [*workload.split(","), "float32"][:3]
    args = [sys.executable, "-c", CHILD, rows, classes, dtype, str(threads), kind]
    done = subprocess.run(args, env=env, cwd="/", capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="folder with the old build installed")
    parser.add_argument("--new", default=None, help="folder with the new build (default: ours)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--pass", dest="kind", choices=("grad", "forward"), default="grad")
    parser.add_argument("workloads", nargs="+", metavar="N,C[,dtype]")
    args = parser.parse_args()
    for workload in args.workloads:
        old, new = [], []
        for r in range(args.rounds):
            order = ((old, args.old), (new, args.new))
            for times, folder in order if r % 2 == 0 else order[::-1]:
                times.append(one(folder, workload, args.threads, args.kind))
        ratios = [n / o for n, o in zip(new, old)]
        old_ms, new_ms = 1e3 * statistics.median(old), 1e3 * statistics.median(new)
        print(
            f"{workload} {args.kind} {args.threads} threads: old {old_ms:.1f} ms, new "
            f"{new_ms:.1f} ms (medians); new / old by round: median "
            f"{statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}, "
            f"{args.rounds} rounds"
        )


if __name__ == "__main__":
    main()

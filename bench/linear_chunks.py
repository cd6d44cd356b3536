"""Loss + gradients of xentc.linear_cross_entropy_with_grad at several chunk sizes (issue 19),
against the three plain float32 products of the same size (H W^T, G W, G^T H into preallocated
outputs), called in turn round after round so that other work on the machine slows them alike.
Prints each one's median time, its ratio to the products' and the peak extra memory of its first
call (the resident set's growth, as `python -m xentc.bench --linear` measures it: the returned
gradients included).

    python bench/linear_chunks.py W1 W3 --chunks 32,64,128 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import xentc
from xentc import bench
from xentc._bench_linear import make_inputs

WORKLOADS = {"W1": (4096, 1024, 32000), "W2": (2048, 1024, 128256), "W3": (16384, 256, 32000)}


def contenders(n, d, v, chunks_mib):
    hidden, weight, target = make_inputs(n, d, v)
    z = np.empty((n, v), np.float32)
    grad_hidden, grad_weight = np.empty_like(hidden), np.empty_like(weight)

    def products():
        np.matmul(hidden, weight.T, out=z)
        np.matmul(z, weight, out=grad_hidden)
        np.matmul(z.T, hidden, out=grad_weight)

    calls = {"products": products}
    for mib in chunks_mib:
        calls[f"xentc {mib} MiB"] = lambda mib=mib: xentc.linear_cross_entropy_with_grad(
            hidden, weight, target, chunk_bytes=mib << 20
        )
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", default=["W1", "W3"], choices=sorted(WORKLOADS))
    parser.add_argument("--chunks", default="32,64,128", help="chunk_bytes in MiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bench.map_large_allocations()
    for name in args.workloads:
        calls = contenders(*WORKLOADS[name], [int(c) for c in args.chunks.split(",")])
        extra = {}
        for label, call in calls.items():  # one call each first: warm-up, and its peak memory
            _, peak = bench.peak_extra_bytes(call)
            extra[label] = (peak or 0) / 2**20
        times = {label: [] for label in calls}
        for _ in range(args.rounds):
            for label, call in calls.items():
                start = time.perf_counter()
                call()
                times[label].append(time.perf_counter() - start)
        base = float(np.median(times["products"]))
        for label, seconds in times.items():
            median = float(np.median(seconds))
            spread = f"{min(seconds):.3f}-{max(seconds):.3f}"
            print(
                f"{name} {label:>16}: median {median:7.3f} s ({spread})"
                f"  x{median / base:.3f} of the products  extra {extra[label]:7.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()

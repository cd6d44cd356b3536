"""Timings of xentc calls in a forked child beside the parent's (src_c/xc_fork.c).

    python tools/fork_timing.py [--rows 1024] [--classes 32000] [--threads 2] [--repeats 15]

The parent warms its OpenMP pool, forks, and each process times its first call after the fork
(the one that starts a fresh pool) and the median of the next --repeats calls, threaded and on one
thread. A small problem shows the pool start itself: --rows 64 --classes 1000.
"""

import argparse
import os
import statistics
import time

import numpy as np

import xentc


def timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(logits, target, n_threads, repeats):
    """(first call, median of the next `repeats`), in ms, of the loss + gradient."""
    grad = np.empty_like(logits)

    def call():
        xentc.cross_entropy_with_grad(logits, target, out=grad, n_threads=n_threads)

    first = timed(call)
    rest = [timed(call) for _ in range(repeats)]
    return 1e3 * first, 1e3 * statistics.median(rest)


def report(who, logits, target, threads, repeats):
    rows = []
    for n in (threads, 1):
        first, median = measure(logits, target, n, repeats)
        rows.append(
            f"{who:<8} n_threads={n:<3} first call {first:9.3f} ms   "
            f"median of next {repeats}: {median:9.3f} ms"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((args.rows, args.classes)).astype(np.float32)
    target = rng.integers(0, args.classes, args.rows)
    print(
        f"xentc {xentc.__version__}: loss + gradient (out=) of ({args.rows}, {args.classes}) "
        f"float32, {len(os.sched_getaffinity(0))} usable cores"
    )
    # The parent's pool exists and is warm before the fork, as in a pipeline.
    measure(logits, target, args.threads, 3)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        text = report("child", logits, target, args.threads, args.repeats)
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    print(report("parent", logits, target, args.threads, args.repeats))
    print(child)
    print(f"pools released before a fork: {xentc._kernels.fork_pools_released()}")


if __name__ == "__main__":
    main()

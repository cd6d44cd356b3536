"""Where a fresh gradient's time goes: loss + gradient without out= against out= and NumPy's own
fresh allocation, per call, in CPU time of user and kernel (system) mode and page faults.

run: python3 tools/fresh_grad_cost.py [--rows 4096] [--classes 32000] [--threads 2] [--repeats 5]

On a shared machine the wall-clock of a call moves with the other processes' load; the process's
own CPU time (getrusage: user, system) moves much less, and splits the call into the kernel's
pass (user) and the operating system's work for fresh memory (system: the page faults, each
zeroing the page it maps). Rows, each the median of --repeats calls:
  np.empty + np.copyto   NumPy's fresh array of the gradient's size, filled by a copy (one thread)
  np.empty + fill(0)     the first touch alone
  copyto, reused         the copy into an array touched before: no faults
  loss+grad out=         the gradient into an array touched before
  loss+grad fresh        the gradient into a fresh array (cross_entropy_with_grad without out=)
The header says whether NumPy asks for transparent huge pages on its large allocations and the
system's THP mode (with `madvise`, NumPy's request is what gives 2 MiB pages), and the huge pages
a fresh array got. Issue 21's measurements; nothing here is used by xentc itself.
"""

import argparse
import resource
import time

import numpy as np

import xentc


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def anon_huge_kib():
    """This process's anonymous memory in transparent huge pages, KiB (Linux)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def measure(call, repeats):
    """Median (wall ms, user ms, system ms, minor faults) of `repeats` calls."""
    rows = []
    for _ in range(repeats):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = call()
        stop, after = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        del result  # a fresh array is freed (unmapped) before the next call, as in a loop
        rows.append(
            (
                (stop - start) * 1e3,
                (after.ru_utime - before.ru_utime) * 1e3,
                (after.ru_stime - before.ru_stime) * 1e3,
                after.ru_minflt - before.ru_minflt,
            )
        )
    return np.median(np.array(rows), axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((args.rows, args.classes)).astype(args.dtype) * 2
    target = rng.integers(0, args.classes, args.rows)
    reused = np.empty_like(logits)
    reused.fill(0)
    try:
        from numpy._core.multiarray import _get_madvise_hugepage
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _get_madvise_hugepage
    huge_before = anon_huge_kib()
    probe = np.empty_like(logits)
    probe.fill(0)
    huge_got = anon_huge_kib() - huge_before
    del probe
    mib = logits.nbytes / 2**20
    print(
        f"({args.rows}, {args.classes}) {args.dtype}, {mib:.0f} MiB a gradient, "
        f"{args.threads} threads; THP {thp_mode()}; NumPy madvises huge pages: "
        f"{_get_madvise_hugepage()}; a fresh array got {huge_got / 1024:.0f} MiB in huge pages"
    )

    def empty_copy():
        fresh = np.empty_like(logits)
        np.copyto(fresh, logits)
        return fresh

    def empty_fill():
        fresh = np.empty_like(logits)
        fresh.fill(0)
        return fresh

    n = args.threads
    cases = [
        ("np.empty + np.copyto", empty_copy),
        ("np.empty + fill(0)", empty_fill),
        ("copyto, reused", lambda: np.copyto(reused, logits)),
        (
            "loss+grad out=",
            lambda: xentc.cross_entropy_with_grad(logits, target, out=reused, n_threads=n),
        ),
        ("loss+grad fresh", lambda: xentc.cross_entropy_with_grad(logits, target, n_threads=n)),
    ]
    print(f"{'case':22} {'wall ms':>8} {'user ms':>8} {'sys ms':>8} {'faults':>8} {'sys GB/s':>9}")
    for name, call in cases:
        wall, user, system, faults = measure(call, args.repeats)
        # the rate at which the system mapped (and zeroed) fresh memory, per core-second
        rate = f"{logits.nbytes / (system * 1e6):9.1f}" if faults and system > 0 else f"{'':9}"
        print(f"{name:22} {wall:8.1f} {user:8.1f} {system:8.1f} {faults:8.0f} {rate}")


if __name__ == "__main__":
    main()

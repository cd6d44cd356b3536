"""The loss pass alone of xentc.linear_cross_entropy (issue 19), against its plain product.

For each workload (N, D, V): the plain float32 ``np.matmul(H, W.T, out=Z)`` (Z preallocated,
as `python -m xentc.bench --linear` times it), xentc's forward with its default (blocks of
rows and classes, 4 MiB), the same with other class blocks / budgets given by --variants, the
row-chunked forward it replaced (whole rows, 128 MiB or 1024 rows a chunk), and optionally
torch's chunked ``F.linear_cross_entropy``, called in turn, round after round, so that other
work on the machine slows them alike. Prints the median time of the rounds, the ratio to the
product's, and the peak extra memory of one call: the resident set's growth (as the bench
measures it, after one product has made OpenBLAS's buffers resident; the allocator may reuse
memory an earlier call or workload freed, so only the first contender's figure of a process is
clean: run one workload a process for them) and, for NumPy's allocations, tracemalloc's peak
(exact, whatever the allocator does).

    python bench/linear_forward.py --rounds 3
    python bench/linear_forward.py --workloads 4096,1024,32000 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from contextlib import contextmanager

import numpy as np

import xentc
from xentc import _linear, bench

WORKLOADS = ((4096, 1024, 32000), (2048, 1024, 128256), (16384, 256, 32000))


@contextmanager
def forward_blocks(class_block, budget):
    saved = _linear.CLASS_BLOCK, _linear.FORWARD_CHUNK_BYTES
    _linear.CLASS_BLOCK, _linear.FORWARD_CHUNK_BYTES = class_block, budget
    try:
        yield
    finally:
        _linear.CLASS_BLOCK, _linear.FORWARD_CHUNK_BYTES = saved


def contenders(h, w, t, variants, with_torch):
    calls = {}
    calls[f"xentc (B={_linear.CLASS_BLOCK}, {_linear.FORWARD_CHUNK_BYTES >> 20} MiB)"] = lambda: (
        xentc.linear_cross_entropy(h, w, t)
    )
    for class_block, mib in variants:

        def variant(class_block=class_block, mib=mib):
            with forward_blocks(class_block, int(mib * 2**20)):
                return xentc.linear_cross_entropy(h, w, t)

        calls[f"xentc (B={class_block}, {mib:g} MiB)"] = variant

    def rows_chunked():
        problem = _linear._Problem(
            h, w, t, None, None, None, -100, "mean", 0.0, 0.0, None, 1.0, None, None
        )
        return _linear._run(problem, False)[0]

    calls["xentc rows x V (old, 128 MiB)"] = rows_chunked
    if with_torch:
        import torch
        import torch.nn.functional as F

        def as_tensor(a):
            if a.dtype == np.float32:
                return torch.from_numpy(a)
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)

        th, tw, tt = as_tensor(h), as_tensor(w), torch.from_numpy(t)

        def torch_chunked():
            with torch.no_grad():
                return float(
                    F.linear_cross_entropy(
                        th, tw, tt, options=torch.nn.LinearCrossEntropyOptions()
                    ).float()
                )

        calls["torch chunked"] = torch_chunked
    return calls


def run(n, d, v, dtype, rounds, variants, with_torch):
    rng = np.random.default_rng(0)
    h32 = rng.standard_normal((n, d)).astype(np.float32)
    w32 = (rng.standard_normal((v, d)) / np.sqrt(d)).astype(np.float32)
    t = rng.integers(0, v, n)
    if dtype == "bfloat16":
        import ml_dtypes

        h, w = h32.astype(ml_dtypes.bfloat16), w32.astype(ml_dtypes.bfloat16)
    else:
        h, w = h32, w32
    z = np.zeros((n, v), np.float32)
    np.matmul(h32, w32.T, out=z)  # OpenBLAS's buffers resident before any memory is measured
    calls = contenders(h, w, t, variants, with_torch)
    rss, traced = {}, {}
    for name, fn in calls.items():
        _, rss[name] = bench.peak_extra_bytes(fn)
        if not name.startswith("torch"):
            tracemalloc.start()
            fn()
            traced[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    calls = {"np.matmul H W^T (float32)": lambda: np.matmul(h32, w32.T, out=z), **calls}
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    product = float(np.median(times["np.matmul H W^T (float32)"]))
    for name in calls:
        median = float(np.median(times[name]))
        line = f"N={n} D={d} V={v} {dtype:8s} {name:32s} {median * 1e3:8.0f} ms"
        line += f"  {median / product:5.3f}x product"
        if name in rss:
            line += f"  RSS +{(rss[name] or 0) / 2**20:6.1f} MiB"
        if name in traced:
            line += f"  traced {traced[name] / 2**20:6.1f} MiB"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="*", default=None, help="N,D,V (default: the 3)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="*", default=[], help="CLASS_BLOCK,MiB: other forward blockings"
    )
    parser.add_argument("--torch", action="store_true", help="add torch's chunked path")
    args = parser.parse_args()
    workloads = (
        [tuple(int(x) for x in s.split(",")) for s in args.workloads]
        if args.workloads
        else WORKLOADS
    )
    variants = [(int(b), float(m)) for b, m in (s.split(",") for s in args.variants)]
    print(bench.machine_info(None), flush=True)
    for n, d, v in workloads:
        watch = bench.CpuWatch()
        run(n, d, v, args.dtype, args.rounds, variants, args.torch)
        result = watch.stop()
        cores = result["other_cores"]
        print(
            f"  ({result['wall_s']:.0f} s; other processes kept "
            f"{'?' if cores is None else f'{cores:.2f}'} cores busy on average)",
            flush=True,
        )


if __name__ == "__main__":
    main()

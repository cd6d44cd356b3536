"""Figures for logits held in a file on disk: the core API on a memmap against xentc.dask.

    python bench/dask_figures.py [--dir DIR] [--rows 32768] [--classes 32000] [--chunk-rows 1024]
                                 [--modes single,rows,shards] [--json FILE]
    make bench-dask ARGS="--dir DIR"

Writes a (rows, classes) float32 logits .npy file (32768 x 32000: 4.2 GB) and int64 targets
into a fresh directory under --dir (checked for room first; removed at the end), then for each
mode takes the mean loss and writes its gradient into a new .npy file beside it:

  single   one process: xentc.cross_entropy_with_grad on np.load(mmap_mode="r"), the gradient
           written through out= into np.lib.format.open_memmap(mode="w+")
  rows     xentc.dask on a 2-worker LocalCluster (processes, 1 thread each, memory_limit 2GB),
           logits read with xentc.dask.from_npy (rows chunked, each task maps the file), the
           gradient stored with dask.array.store into the .npy file (xentc.dask.to_npy: each
           task writes its own rows, no lock)
  shards   the same with the class axis split in 4 blocks (vocabulary shards)

Reported per mode: wall time (the cluster's start and the workers' imports not included),
GB/s = (bytes read + bytes written) / time = 2 x the logits' size / time, the loss, and the peak
memory of each process that computed (the single process, or each worker): VmRSS, and its
anonymous and file-backed parts (RssAnon, RssFile from /proc/PID/status, sampled every 20 ms).
File-backed pages are the page cache seen through a mapping: they count in RSS but are not the
process's own memory.

The page cache is left as it is: the file was just written, so with enough RAM every mode reads
it from memory, not from the disk, and the gradient's pages are written back by the kernel
after the timed call (a final fsync is timed separately). Run on a quiet machine: the figures
are I/O- and memory-bound.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

import xentc

GB = 1e9


# ---- memory of a process, sampled ---------------------------------------------------------------


def _status_kb():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(rest.split()[0])
    return fields


class Sampler:
    """Peaks of VmRSS / RssAnon / RssFile of this process, sampled by a daemon thread."""

    def __init__(self, period=0.02):
        self.peak = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._thread.start()

    def _loop(self, period):
        while not self._stop.is_set():
            for key, value in _status_kb().items():
                self.peak[key] = max(self.peak.get(key, 0), value)
            self._stop.wait(period)

    def stop(self):
        self._stop.set()
        self._thread.join()
        for key, value in _status_kb().items():
            self.peak[key] = max(self.peak.get(key, 0), value)
        return {k: v / 1024 for k, v in self.peak.items()}  # MiB


def _worker_sampler_start(dask_worker):
    dask_worker._xentc_sampler = Sampler()


def _worker_sampler_stop(dask_worker):
    return dask_worker._xentc_sampler.stop()


# ---- the input file ----------------------------------------------------------------------------


def write_logits(path, rows, classes, seed=0, block_rows=512):
    """A .npy file of float32 logits, written block by block with plain writes (no mapping, so
    this process's memory stays at one block)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, classes)}
        )
        for start in range(0, rows, block_rows):
            n = min(block_rows, rows - start)
            block = rng.standard_normal((n, classes), dtype=np.float32)
            block *= 3.0
            f.write(block.tobytes())


def _fsync(path):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


# ---- the modes -----------------------------------------------------------------------------------


def run_single(logits_path, target, grad_path):
    logits = np.load(logits_path, mmap_mode="r")
    out = np.lib.format.open_memmap(grad_path, mode="w+", dtype=logits.dtype, shape=logits.shape)
    sampler = Sampler()
    t0 = time.perf_counter()
    loss, _ = xentc.cross_entropy_with_grad(logits, target, out=out)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    del out, logits
    return {
        "seconds": seconds,
        "loss": float(loss),
        "fsync_s": _fsync(grad_path),
        "peak_mib": {"process": peak},
    }


def run_dask(logits_path, target, grad_path, chunk_rows, class_chunks, workers, memory_limit):
    import dask
    import distributed

    import xentc.dask as xd

    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        logits = xd.from_npy(logits_path, chunks=(chunk_rows, class_chunks))
        loss, grad = xd.cross_entropy_with_grad(logits, target)
        stored = xd.to_npy(grad, grad_path, compute=False)
        # Workers import xentc.dask (and dask.array) before the clock starts, as a long-lived
        # cluster would have.
        client.run(importlib.import_module, "xentc.dask")
        client.run(_worker_sampler_start)
        t0 = time.perf_counter()
        value, _ = dask.compute(loss, stored)
        seconds = time.perf_counter() - t0
        peaks = client.run(_worker_sampler_stop)
        n_tasks = len(dict(logits.__dask_graph__()))
    peaks = {f"worker {i}": peak for i, (_, peak) in enumerate(sorted(peaks.items()))}
    return {
        "seconds": seconds,
        "loss": float(value),
        "fsync_s": _fsync(grad_path),
        "peak_mib": peaks,
        "logits_blocks": n_tasks,
    }


# ---- main ----------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=tempfile.gettempdir(),
        help="where to make the scratch directory (needs 2.2x the logits' size)",
    )
    parser.add_argument("--rows", type=int, default=32768)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--modes", default="single,rows,shards")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    modes = [m for m in args.modes.split(",") if m]
    size = args.rows * args.classes * 4
    free = shutil.disk_usage(args.dir).free
    if free < 2.2 * size:
        sys.exit(
            f"{args.dir} has {free / GB:.1f} GB free; the run needs {2.2 * size / GB:.1f} GB "
            "(the logits and one gradient at a time): pass --dir"
        )
    scratch = tempfile.mkdtemp(prefix="xentc-dask-figures-", dir=args.dir)
    results = {}
    try:
        logits_path = os.path.join(scratch, "logits.npy")
        grad_path = os.path.join(scratch, "grad.npy")
        t0 = time.perf_counter()
        write_logits(logits_path, args.rows, args.classes)
        rng = np.random.default_rng(1)
        target = rng.integers(0, args.classes, args.rows)
        target[::16] = -100
        print(
            f"logits: {logits_path}, ({args.rows}, {args.classes}) float32, {size / GB:.2f} GB,"
            f" written in {time.perf_counter() - t0:.1f} s; {free / GB:.0f} GB were free"
        )
        for mode in modes:
            if os.path.exists(grad_path):
                os.remove(grad_path)
            if mode == "single":
                r = run_single(logits_path, target, grad_path)
            elif mode in ("rows", "shards"):
                class_chunks = -1
                if mode == "shards":
                    class_chunks = -(-args.classes // args.shards)
                r = run_dask(
                    logits_path,
                    target,
                    grad_path,
                    args.chunk_rows,
                    class_chunks,
                    args.workers,
                    args.memory_limit,
                )
            else:
                sys.exit(f"unknown mode {mode!r}")
            r["gb_per_s"] = 2 * size / GB / r["seconds"]
            results[mode] = r
            peaks = "; ".join(
                f"{who} {p.get('VmRSS', 0):.0f} (anon {p.get('RssAnon', 0):.0f}, "
                f"file {p.get('RssFile', 0):.0f})"
                for who, p in r["peak_mib"].items()
            )
            print(
                f"{mode:7s} {r['seconds']:7.2f} s  {r['gb_per_s']:5.2f} GB/s  "
                f"loss {r['loss']:.6f}  fsync {r['fsync_s']:.1f} s  peak MiB: {peaks}"
            )
        losses = {m: r["loss"] for m, r in results.items()}
        if len(set(np.round(list(losses.values()), 5))) > 1:
            print(f"warning: the modes' losses differ: {losses}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()

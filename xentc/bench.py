"""`python -m xentc.bench` (or `xentc-bench`): where xentc stands against the memory wall and peers.

For each workload (N rows x C classes) and pass (forward: the mean loss; loss+grad: the mean loss
and its gradient) the report times xentc and every peer that is importable, in the same run, and
states each time as:
  GB/s      the bytes the pass must move at the least (forward: read the logits once; loss+grad:
            read them once and write the gradient once) divided by the median time;
  % of bw   that figure over the machine's bandwidth measured in the same run at the same thread
            count (read bandwidth for forward, copy bandwidth for loss+grad): the physical limit;
  range ms  the fastest and the slowest of the timed calls (their spread);
  vs xentc  the impl's median time over xentc's (2.0x: twice as slow as xentc);
  extra MiB the peak memory the call added beyond its inputs (resident set high-water mark), the
            returned gradient included.
Each peer's loss is checked against xentc's; a mismatch is shown in the table, not hidden.
Workloads and peers are shared with the pytest-benchmark suite in bench/. The report warns when
other processes used the CPU during the run (from /proc/stat: busy time that was not this
process's or its children's), since their work slows and scatters the timings.

A second table, "torch training step", times the forward and backward of the loss through
autograd at N=4096 C=32000 (float32 and bfloat16): xentc.torch, with and
without inplace_backward, against torch.nn.functional.cross_entropy, each case in a fresh process,
with its median time and peak extra memory. It is skipped, saying why, when torch is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import xentc
from xentc import _kernels
from xentc._config import config
from xentc._validate import check_n_threads


@dataclass(frozen=True)
class Workload:
    """One benchmark case: N rows of C classes of `dtype` logits."""

    n_rows: int
    n_classes: int
    dtype: str = "float32"

    @property
    def label(self):
        return f"N={self.n_rows} C={self.n_classes} {'f32' if self.dtype == 'float32' else 'f64'}"

    @property
    def logits_bytes(self):
        return self.n_rows * self.n_classes * np.dtype(self.dtype).itemsize


STANDARD_WORKLOADS = [
    Workload(4096, 32000),
    Workload(2048, 128256),
    Workload(65536, 1000),
    Workload(1_000_000, 10),
    Workload(2048, 32000, "float64"),
]
QUICK_ELEMENTS = 1 << 21  # --quick: every workload cut to about 2M logits (8 MiB in float32)
# --quick's bandwidth probe: arrays of at most this many bytes (the full probe's are >= 1 GiB,
# whose allocation and first touch alone take seconds). Cache may then lift its figures a little.
QUICK_PROBE_BYTES = 256 << 20
PASSES = ("forward", "loss+grad")


def quick(workload):
    """The same class count with fewer rows, so that the whole report runs in seconds."""
    n_rows = max(8, min(workload.n_rows, QUICK_ELEMENTS // workload.n_classes))
    return Workload(n_rows, workload.n_classes, workload.dtype)


def make_inputs(workload, seed=0):
    """Logits ~ N(0, 2^2) (a typical spread for trained LM logits) and uniform class targets."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((workload.n_rows, workload.n_classes), dtype=workload.dtype)
    logits *= 2.0
    return logits, rng.integers(0, workload.n_classes, size=workload.n_rows)


# ---- implementations: each maps a pass to a call that returns the mean loss ---------------------


def xentc_calls(logits, target, n_threads):
    """xentc's calls per pass, each returning the mean loss (plus the out= variant)."""
    out = np.empty_like(logits)
    return {
        "forward": lambda: xentc.cross_entropy(logits, target, n_threads=n_threads),
        "loss+grad": lambda: xentc.cross_entropy_with_grad(logits, target, n_threads=n_threads)[0],
        # The gradient into a preallocated buffer, as a training loop would call it.
        "loss+grad out=": lambda: xentc.cross_entropy_with_grad(
            logits, target, out=out, n_threads=n_threads
        )[0],
    }


def numpy_forward(logits, target):
    """The mean loss as one writes it in NumPy: max, exp, sum, log (an N x C temporary)."""
    peak = logits.max(axis=1, keepdims=True)
    sums = np.exp(logits - peak).sum(axis=1)
    picked = logits[np.arange(len(target)), target]
    return float(np.mean(np.log(sums) + peak[:, 0] - picked))


def numpy_loss_and_grad(logits, target):
    """Loss and gradient in NumPy at its best: the logits' dtype throughout, one N x C array
    (the gradient itself) updated in place."""
    rows = np.arange(len(target))
    probs = logits - logits.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    sums = probs.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(sums[:, 0]) - np.log(probs[rows, target])))
    probs /= sums
    probs[rows, target] -= 1.0
    probs /= len(target)
    return loss, probs


def numpy_calls(logits, target, n_threads):
    """The NumPy peer's calls per pass (n_threads is unused: NumPy runs on one thread)."""
    return {
        "forward": lambda: numpy_forward(logits, target),
        "loss+grad": lambda: numpy_loss_and_grad(logits, target)[0],
    }


def torch_calls(logits, target, n_threads):
    """torch.nn.functional.cross_entropy per pass, on tensors sharing the arrays' memory."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(n_threads)
    x, y = torch.from_numpy(logits), torch.from_numpy(target)

    def forward():
        with torch.no_grad():
            return F.cross_entropy(x, y).item()

    def loss_and_grad():
        leaf = x.detach().requires_grad_()
        loss = F.cross_entropy(leaf, y)
        loss.backward()
        return loss.item()

    return {"forward": forward, "loss+grad": loss_and_grad}


def jax_calls(logits, target, n_threads):
    """JAX's jit-compiled mean loss and value_and_grad per pass (XLA picks its threads)."""
    import jax

    if logits.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def mean_loss(z, y):
        lse = jax.nn.logsumexp(z, axis=1)
        return jnp.mean(lse - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

    forward = jax.jit(mean_loss)
    loss_and_grad = jax.jit(jax.value_and_grad(mean_loss))
    z, y = jax.device_put(logits), jax.device_put(target.astype(np.int32))

    def run_loss_and_grad():
        loss, grad = loss_and_grad(z, y)
        grad.block_until_ready()
        return float(loss)

    return {"forward": lambda: float(forward(z, y)), "loss+grad": run_loss_and_grad}


def sklearn_calls(logits, target, n_threads):
    """scikit-learn's HalfMultinomialLoss per pass."""
    from sklearn._loss.loss import HalfMultinomialLoss

    loss = HalfMultinomialLoss(n_classes=logits.shape[1])
    y = target.astype(logits.dtype)
    return {
        "forward": lambda: float(loss.loss(y, logits, n_threads=n_threads).mean()),
        "loss+grad": lambda: float(loss.loss_gradient(y, logits, n_threads=n_threads)[0].mean()),
    }


# name -> (module that must import, calls, how its threads are set)
IMPLEMENTATIONS = {
    "xentc": (None, xentc_calls, "n_threads"),
    "numpy": (None, numpy_calls, "its BLAS-free ufuncs run on one thread"),
    "torch": ("torch", torch_calls, "torch.set_num_threads"),
    "jax": ("jax", jax_calls, "XLA's own pool (not limited by --threads)"),
    "sklearn": ("sklearn", sklearn_calls, "n_threads"),
}


def available_implementations(names=None, skipped=None):
    """The implementations to run (xentc always; peers in `names`, or all, that import).
    `skipped`, a dict, receives each peer left out and why."""
    found = []
    for name, (module, _, _) in IMPLEMENTATIONS.items():
        if names is not None and name not in names and name != "xentc":
            continue
        if module is not None:
            try:
                __import__(module)
            except Exception as exc:  # noqa: BLE001 - a broken peer install must not stop the report
                if skipped is not None:
                    skipped[name] = "not installed" if isinstance(exc, ImportError) else repr(exc)
                continue
        found.append(name)
    return found


# ---- measurement ---------------------------------------------------------------------------------


def _importable(module):
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False
    return True


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def map_large_allocations():
    """Make glibc serve every allocation of 1 MiB or more with its own mmap, returned on free.

    glibc otherwise raises its mmap threshold after the first large free (up to 32 MiB) and then
    reuses freed heap memory, which the resident-set high-water mark cannot see: the extra-memory
    column would read 0 for every temporary below 32 MiB. Arrays above 32 MiB are mapped anyway,
    so the full-size workloads run as they would without this."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_extra_bytes(fn):
    """(fn's result, the resident-set growth at its peak in bytes, or None off Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current resident set
    except OSError:
        return fn(), None
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return result, None
    return result, max(0, peak - before) * 1024


def timed_seconds(fn, repeats, budget_s=10.0):
    """The times of at least 3 and at most `repeats` calls of fn, fewer when they take long."""
    times = []
    start = time.perf_counter()
    while len(times) < max(3, repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return times


def median_seconds(fn, repeats, budget_s=10.0):
    """Median of timed_seconds(fn, repeats, budget_s)."""
    return float(np.median(timed_seconds(fn, repeats, budget_s)))


# ---- other processes' use of the CPU during the run ----------------------------------------------

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest is within user)


def _machine_busy_seconds():
    """CPU seconds every process (and a hypervisor's steal) used since boot, from /proc/stat;
    None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    return sum(ticks[i] for i in _BUSY_FIELDS if i < len(ticks)) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    """CPU seconds of this process and its waited-for children (the torch step's cases)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """How much CPU other processes used between start and stop: the machine's busy time
    (/proc/stat, steal included) minus this process's own (its threads, and the children it
    waited for). `report()` gives the average number of cores they kept busy."""

    def __init__(self):
        self.wall0 = time.perf_counter()
        self.busy0 = _machine_busy_seconds()
        self.own0 = _own_cpu_seconds()
        self.result = None

    def stop(self):
        wall = time.perf_counter() - self.wall0
        busy = _machine_busy_seconds()
        if busy is None or self.busy0 is None:
            self.result = {"wall_s": wall, "other_cpu_s": None, "other_cores": None}
        else:
            own = _own_cpu_seconds() - self.own0
            other = max(0.0, (busy - self.busy0) - own)
            self.result = {
                "wall_s": wall,
                "other_cpu_s": other,
                "other_cores": other / wall if wall > 0 else 0.0,
            }
        return self.result


# Other processes busy on average on more than this many cores: the report warns.
CONTENTION_CORES = 0.1


def end_of_run(watch, json_path, figures):
    """A report's end: the warning when other processes used the CPU during it, and, when a
    path is given, its figures with that measurement written as JSON. Returns the
    measurement."""
    contention = watch.stop()
    warning = contention_warning(contention)
    if warning:
        print("\n" + warning)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({**figures, "other_processes": contention}, f, indent=2)
    return contention


def contention_warning(result, n_cpus=None):
    """A warning line when other processes used the CPU during the run, else None."""
    cores = result.get("other_cores")
    if cores is None or cores <= CONTENTION_CORES:
        return None
    n_cpus = n_cpus or os.cpu_count() or 1
    return (
        f"warning: other processes used {result['other_cpu_s']:.1f} CPU-seconds during "
        f"this {result['wall_s']:.0f} s run (on average {cores:.2f} of {n_cpus} cores busy "
        "with other work, or taken by the hypervisor): the timings are slower and noisier "
        "than on an idle machine; compare rows within this run only, or rerun when idle."
    )


def llc_bytes():
    """The last-level cache size from sysfs (32 MiB when unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip()
            except OSError:
                continue
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return best or 32 << 20


def measure_bandwidth(n_threads, repeats, quick=False):
    """Read and copy bandwidth in GB/s over float32 arrays 4x the last-level cache (>= 1 GiB;
    with quick, at most QUICK_PROBE_BYTES: seconds faster, a cache may lift the figures)."""
    n_bytes = max(4 * llc_bytes(), 1 << 30)
    if quick:
        n_bytes = min(4 * llc_bytes(), QUICK_PROBE_BYTES)
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)  # touched: no first-write page faults inside the timing
    _kernels.bandwidth_copy(src, dst, n_threads)
    read_s = median_seconds(lambda: _kernels.bandwidth_read(src, n_threads), repeats)
    copy_s = median_seconds(lambda: _kernels.bandwidth_copy(src, dst, n_threads), repeats)
    return {
        "array_bytes": src.nbytes,
        "read_gbs": src.nbytes / read_s / 1e9,
        "copy_gbs": 2 * src.nbytes / copy_s / 1e9,
    }


@dataclass
class Row:
    """One line of the report: an implementation's figures for one pass of one workload."""

    workload: str
    n_rows: int
    n_classes: int
    dtype: str
    pass_name: str
    impl: str
    median_ms: float
    gbs: float
    bandwidth_fraction: float
    vs_xentc: float
    extra_mib: float | None
    loss: float
    loss_check: str
    # the spread of the timed calls: the fastest and the slowest
    min_ms: float = field(default=float("nan"))
    max_ms: float = field(default=float("nan"))


def loss_check(loss, reference, dtype):
    """ "ok", or "MISMATCH rel <error>" when `loss` is off `reference` by more than the
    dtype's bound (1e-4 in float32, 1e-10 in float64)."""
    rel = abs(loss - reference) / max(abs(reference), 1e-30)
    bound = 1e-4 if dtype == "float32" else 1e-10
    return "ok" if rel <= bound else f"MISMATCH rel {rel:.1e}"


class Progress:
    """One status line on stderr, rewritten in place on a terminal, line by line elsewhere."""

    def __init__(self, total):
        self.total, self.done = total, 0
        self.tty = sys.stderr.isatty()

    def step(self, text):
        self.done += 1
        line = f"[{self.done}/{self.total}] {text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def run_workload(workload, impls, n_threads, repeats, bandwidth, progress):
    """Time every implementation's passes over one workload; returns its Rows."""
    logits, target = make_inputs(workload)
    rows = []
    for pass_name in PASSES:
        xentc_s = xentc_loss = None
        for impl in impls:
            calls = IMPLEMENTATIONS[impl][1](logits, target, n_threads)
            variants = [k for k in calls if k == pass_name or k.startswith(pass_name + " ")]
            for variant in variants:
                label = impl + variant[len(pass_name) :]
                progress.step(f"{workload.label} {pass_name}: {label}")
                calls[variant]()  # warm-up: JIT compilation, first-touch page faults
                loss, extra = peak_extra_bytes(calls[variant])
                times = timed_seconds(calls[variant], repeats)
                seconds = float(np.median(times))
                if xentc_s is None:
                    xentc_s, xentc_loss = seconds, loss
                moved = workload.logits_bytes * (1 if pass_name == "forward" else 2)
                limit = bandwidth["read_gbs" if pass_name == "forward" else "copy_gbs"]
                gbs = moved / seconds / 1e9
                rows.append(
                    Row(
                        workload.label,
                        workload.n_rows,
                        workload.n_classes,
                        workload.dtype,
                        pass_name,
                        label,
                        seconds * 1e3,
                        gbs,
                        gbs / limit,
                        seconds / xentc_s,
                        None if extra is None else extra / 2**20,
                        loss,
                        loss_check(loss, xentc_loss, workload.dtype),
                        min(times) * 1e3,
                        max(times) * 1e3,
                    )
                )
            del calls
    return rows


# ---- the torch training step (xentc.torch against torch.nn.functional.cross_entropy) ------------
# forward + backward of the mean loss, as a training step runs it: the logits are a tensor that
# requires grad, and torch.autograd.grad(loss, logits) returns their gradient (what the layer
# below would receive; no .grad accumulation). Each case runs in a fresh interpreter, so that
# one case's freed memory, allocator caches or thread pools cannot hide another's peak.

TORCH_STEP_WORKLOAD = Workload(4096, 32000)
# (label, loss function name, inplace_backward)
TORCH_STEP_IMPLS = [
    ("torch F.cross_entropy", "torch", False),
    ("xentc.torch", "xentc", False),
    ("xentc.torch inplace_backward", "xentc", True),
]


@dataclass
class TorchStepRow:
    """One line of the torch training step table."""

    workload: str
    dtype: str
    impl: str
    median_ms: float
    vs_torch: float
    extra_mib: float | None
    loss: float
    loss_check: str


def torch_step_dtypes(quick=False):
    """The logits dtypes of the torch training step table (--quick: float32 alone; each case
    is a fresh interpreter that imports torch, seconds apiece)."""
    return ["float32"] if quick else ["float32", "bfloat16"]


def torch_step_case(spec):
    """Run one case (in the fresh interpreter `--torch-step-case` starts); returns its figures.
    Peak extra memory: VmHWM after the first full-size step over VmRSS before it (the inputs
    already resident), after a small warm-up step has loaded the kernels and thread pools."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(spec["threads"])
    if spec["impl"] == "torch":
        loss_fn = F.cross_entropy
    else:
        import xentc.torch as xt

        inplace = spec["inplace"]

        def loss_fn(z, y):
            return xt.cross_entropy(z, y, inplace_backward=inplace)

    dtype = getattr(torch, spec["dtype"])

    def inputs(n_rows, n_classes):
        logits, target = make_inputs(Workload(n_rows, n_classes))
        # the logits as a layer's output (a non-leaf), as in training: inplace_backward refuses
        # a leaf that requires grad (its data would become its gradient)
        leaf = torch.from_numpy(logits).to(dtype).requires_grad_(True)
        return leaf * 1.0, torch.from_numpy(target)

    def step(x, y):
        loss = loss_fn(x, y)
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss), grad

    step(*inputs(64, 1000))
    map_large_allocations()
    x, y = inputs(spec["n_rows"], spec["n_classes"])
    # the loss of these very (possibly 16-bit) logits in float64, for the loss check; computed
    # and freed before the peak is reset (the in-place case overwrites the logits)
    with torch.no_grad():
        reference = float(F.cross_entropy(x.detach().double(), y))
    (loss, grad), extra = peak_extra_bytes(lambda: step(x, y))
    del grad
    # in place, each step overwrites the logits with their gradient: finite values, the same work
    seconds = median_seconds(lambda: step(x, y), spec["repeats"])
    return {"loss": loss, "reference": reference, "seconds": seconds, "extra_bytes": extra}


def torch_step_rows(workload, n_threads, repeats, progress=None, quick=False):
    """The section's rows, each case in a fresh `python -m xentc.bench --torch-step-case`."""
    import subprocess

    rows = []
    for dtype in torch_step_dtypes(quick):
        base = None
        for label, impl, inplace in TORCH_STEP_IMPLS:
            if progress:
                progress.step(f"torch training step {workload.label} {dtype}: {label}")
            spec = {
                "impl": impl,
                "inplace": inplace,
                "dtype": dtype,
                "threads": n_threads,
                "repeats": repeats,
                "n_rows": workload.n_rows,
                "n_classes": workload.n_classes,
            }
            done = subprocess.run(
                [sys.executable, "-m", "xentc.bench", "--torch-step-case", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"torch step case {spec} failed:\n{done.stderr}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            if base is None:
                base = res
            # against the float64 loss of the same logits; torch's loss of bfloat16 logits is
            # itself bfloat16 (8 bits, measured 1.2e-2 off at N=4096), xentc's float32
            rel = abs(res["loss"] - res["reference"]) / max(abs(res["reference"]), 1e-30)
            bound = 1e-4 if dtype == "float32" or impl == "xentc" else 3e-2
            rows.append(
                TorchStepRow(
                    f"N={workload.n_rows} C={workload.n_classes}",
                    dtype,
                    label,
                    res["seconds"] * 1e3,
                    res["seconds"] / base["seconds"],
                    None if res["extra_bytes"] is None else res["extra_bytes"] / 2**20,
                    res["loss"],
                    "ok" if rel <= bound else f"MISMATCH rel {rel:.1e}",
                )
            )
    return rows


def format_torch_step(rows, markdown=False):
    """The torch training step table as text (aligned columns) or Markdown."""
    head = [
        "workload",
        "dtype",
        "impl",
        "median ms",
        "vs torch",
        "extra MiB",
        "loss check (vs float64)",
    ]
    body = [
        [
            r.workload,
            r.dtype,
            r.impl,
            f"{r.median_ms:.1f}",
            f"{r.vs_torch:.2f}x",
            "n/a" if r.extra_mib is None else f"{r.extra_mib:.0f}",
            r.loss_check,
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def machine_info(n_threads):
    """What ran where: the CPU, cores, threads, kernels, OpenMP and the packages' versions."""
    cpu = platform.processor() or platform.machine()
    # A VM may name its CPU only "AMD EPYC": the family and model numbers, and the L2 size (the
    # prefetch distance and the stored terms are tuned against it), tell machines apart, so
    # that figures from different machines are never mixed (issue 21).
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU's block only
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    if "cpu family" in fields and "model" in fields:
        cpu += f" (family {fields['cpu family']} model {fields['model']})"
    caches = []
    for index, level in (("index2", "L2"), ("index3", "L3")):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/{index}/size") as f:
                caches.append(f"{level} {f.read().strip()}")
        except OSError:
            pass
    if caches:
        cpu += ", " + " ".join(caches)
    versions = {}
    for name in ("numpy", "torch", "jax", "scikit-learn"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    info = config()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": n_threads,
        "kernels": info["kernels in use"],
        "openmp": info["openmp"],
        "python": platform.python_version(),
        "xentc": xentc.__version__,
        **versions,
    }


def format_table(rows, markdown=False):
    """The main table as text (aligned columns) or Markdown."""
    head = [
        "workload",
        "pass",
        "impl",
        "median ms",
        "range ms",
        "GB/s",
        "% of bw",
        "vs xentc",
        "extra MiB",
        "loss check",
    ]
    body = []
    for r in rows:
        extra = "n/a" if r.extra_mib is None else f"{r.extra_mib:.0f}"
        body.append(
            [
                r.workload,
                r.pass_name,
                r.impl,
                f"{r.median_ms:.1f}",
                f"{r.min_ms:.1f}-{r.max_ms:.1f}",
                f"{r.gbs:.2f}",
                f"{100 * r.bandwidth_fraction:.1f}%",
                f"{r.vs_xentc:.2f}x",
                extra,
                r.loss_check,
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def plot(rows, bandwidth, path):
    """GB/s against the class count for each implementation and pass, with the measured
    bandwidth as a line, saved as an image (matplotlib)."""
    import matplotlib  # main() checked before the run that it imports

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    # one colour per implementation in both panels (forward has no "xentc out=" line)
    impls = list(dict.fromkeys(r.impl for r in rows))
    colours = dict(zip(impls, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for ax, pass_name, limit in zip(axes, PASSES, ("read_gbs", "copy_gbs")):
        for impl in impls:
            pts = sorted(
                (r.n_classes, r.gbs)
                for r in rows
                if r.pass_name == pass_name and r.impl == impl and r.dtype == "float32"
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=impl, color=colours[impl])
        ax.axhline(
            bandwidth[limit], color="k", linestyle="--", label=f"{limit.split('_')[0]} bandwidth"
        )
        ax.set_xscale("log")
        ax.set_xlabel("classes C (float32)")
        ax.set_title(pass_name)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("GB/s (minimum bytes moved / median time)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown_report(rows, step_rows, info, bandwidth, argv, contention):
    """The tables as Markdown, after a paragraph saying what ran where (docs/performance.md
    includes this file, written by `make bench-docs`)."""
    versions = ", ".join(
        f"{name} {info[name]}"
        for name in ("python", "numpy", "torch", "jax", "scikit-learn")
        if name in info
    )
    command = " ".join(["python -m xentc.bench", *argv]).strip()
    lines = [
        f"xentc {info['xentc']}, `{command}`, {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, kernels: "
        f"{info['kernels']}, OpenMP {info['openmp']}; {versions}. Bandwidth at "
        f"{info['threads']} threads: read {bandwidth['read_gbs']:.1f} GB/s, copy "
        f"{bandwidth['copy_gbs']:.1f} GB/s."
    ]
    lines[0] += _contention_sentence(contention)
    lines[0] = _wrap(lines[0])
    lines += ["", format_table(rows, markdown=True)]
    if step_rows:
        lines += ["", format_torch_step(step_rows, markdown=True)]
    return "\n".join(lines) + "\n"


# The README's benchmark summary sits between these lines; `--readme FILE` rewrites what is
# between them (make bench-docs), so that the front page's figures are never typed by hand.
README_BEGIN = (
    "<!-- benchmark summary: written by make bench-docs (python -m xentc.bench --readme) -->"
)
README_END = "<!-- end of benchmark summary -->"
SUMMARY_PEERS = (("jax", "JAX"), ("torch", "torch"), ("numpy", "NumPy"))


def _wrap(paragraph):
    """A Markdown paragraph wrapped at 100 columns (the repository's line length)."""
    return textwrap.fill(paragraph, width=100, break_long_words=False, break_on_hyphens=False)


def _contention_sentence(contention):
    """How much other processes used the CPU during the run, as a sentence for the docs."""
    warning = contention_warning(contention) if contention else None
    if warning:
        return " " + warning[0].upper() + warning[1:]
    if contention and contention.get("other_cores") is not None:
        return (
            f" Other processes kept {contention['other_cores']:.2f} cores busy on average "
            "during the run."
        )
    return ""


def readme_summary(rows, info, bandwidth, contention=None):
    """The README's summary: one line per workload, xentc's forward and loss + gradient (out=)
    with their share of the bandwidth, and the peers' loss + gradient times."""
    by_key = {(r.workload, r.pass_name, r.impl): r for r in rows}
    workloads = list(dict.fromkeys((r.workload, r.n_rows, r.n_classes, r.dtype) for r in rows))
    peers = [(impl, name) for impl, name in SUMMARY_PEERS if any(r.impl == impl for r in rows)]
    versions = ", ".join(
        f"{label} {info[key]}"
        for key, label in (
            ("python", "Python"),
            ("numpy", "NumPy"),
            ("torch", "torch"),
            ("jax", "JAX"),
            ("xentc", "xentc"),
        )
        if key in info
    )
    lines = [
        f"Median time of one call, float32 unless noted, {info['threads']} threads; `% bw` is "
        "the share of the machine's bandwidth measured in the same run (read bandwidth for the "
        "forward pass, copy bandwidth for loss + gradient). Run on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())} on {info['cpu']} ({info['cores']} cores, "
        f"kernels: {info['kernels']}), {versions}; read {bandwidth['read_gbs']:.1f} GB/s, copy "
        f"{bandwidth['copy_gbs']:.1f} GB/s." + _contention_sentence(contention),
        "",
        "| logits (N, C) | xentc forward | xentc loss + grad, `out=` | "
        + " | ".join(f"{name} loss + grad" for _, name in peers)
        + " |",
        "|---|---|---|" + "---|" * len(peers),
    ]

    def xentc_cell(row):
        if row is None:
            return "n/a"
        return f"{row.median_ms:.1f} ms ({100 * row.bandwidth_fraction:.0f} % bw)"

    for label, n_rows, n_classes, dtype in workloads:
        shape = f"({n_rows}, {n_classes})" + ("" if dtype == "float32" else f" {dtype}")
        cells = [
            shape,
            xentc_cell(by_key.get((label, "forward", "xentc"))),
            xentc_cell(by_key.get((label, "loss+grad", "xentc out="))),
        ]
        for impl, _ in peers:
            row = by_key.get((label, "loss+grad", impl))
            cells.append("n/a" if row is None else f"{row.median_ms:.1f} ms")
        lines.append("| " + " | ".join(cells) + " |")
    lines[0] = _wrap(lines[0])
    return "\n".join(lines) + "\n"


def replace_readme_summary(text, summary):
    """`text` (a README) with what lies between README_BEGIN and README_END replaced."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"--readme: the file has no {README_BEGIN!r} ... {README_END!r} block")
    start = begin + len(README_BEGIN)
    return text[:start] + "\n" + summary + text[end:]


def parse_workload(text):
    """A --workload argument, "N,C" or "N,C,dtype", as a Workload."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--workload must be N,C or N,C,dtype; got {text!r}")
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(
            f"--workload dtype must be float32 or float64; got {dtype}"
        )
    n_rows, n_classes = int(parts[0]), int(parts[1])
    if n_rows < 1 or n_classes < 1:
        raise argparse.ArgumentTypeError(f"--workload needs N >= 1 and C >= 1; got {text!r}")
    return Workload(n_rows, n_classes, dtype)


def main(argv=None):
    """Run the benchmark report (``python -m xentc.bench``, ``xentc-bench``, ``make bench``).

    Parameters
    ----------
    argv : list of str, optional
        The command-line arguments (None: ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        0 (the exit status); argument errors exit with status 2 before anything runs.

    Examples
    --------
    A small run with one workload and NumPy as the only peer (tables printed, nothing written):

    >>> from xentc import bench
    >>> bench.main(["--only", "--workload", "64,100", "--peers", "numpy", "--repeats", "3",
    ...             "--threads", "1", "--no-torch-step", "--quick"])  # doctest: +ELLIPSIS
    xentc ... benchmark: ...
    0
    """
    parser = argparse.ArgumentParser(
        prog="python -m xentc.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shrink every workload to ~2M logits, the torch training step to float32 (seconds)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        type=parse_workload,
        default=[],
        metavar="N,C[,dtype]",
        help="add a workload (repeatable)",
    )
    parser.add_argument(
        "--only", action="store_true", help="run only the --workload ones, not the standard set"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="thread count for xentc, the bandwidth kernels and the peers that "
        "take one (default: OMP_NUM_THREADS, else the usable cores)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per measurement")
    parser.add_argument(
        "--peers", default=None, help="comma-separated subset of: numpy, torch, jax, sklearn"
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure and the machine info")
    parser.add_argument("--plot", metavar="FILE.png", help="plot GB/s against C (matplotlib)")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    parser.add_argument(
        "--readme", metavar="README.md", help="rewrite the benchmark summary block of this README"
    )
    parser.add_argument(
        "--no-torch-step", action="store_true", help="leave out the torch training step section"
    )
    parser.add_argument("--torch-step-case", help=argparse.SUPPRESS)  # one case, in a subprocess
    from xentc import _bench_linear  # the fused linear + cross-entropy section (issue 19)

    _bench_linear.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.linear:
        return _bench_linear.main(args)
    if args.torch_step_case:
        print(json.dumps(torch_step_case(json.loads(args.torch_step_case))))
        return 0
    if args.readme:
        # a README without the block fails now, not after the run
        with open(args.readme) as f:
            replace_readme_summary(f.read(), "")
    if args.plot and not _importable("matplotlib"):
        # before the run, not after minutes of it
        parser.error(
            "--plot needs matplotlib: pip install '.[plot]' from a checkout (or "
            "pip install matplotlib)"
        )
    watch = CpuWatch()

    n_threads = check_n_threads(args.threads)
    map_large_allocations()
    workloads = ([] if args.only else list(STANDARD_WORKLOADS)) + args.workload
    if args.quick:
        workloads = [quick(w) for w in workloads]
    peers = None if args.peers is None else [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers or ()) - set(IMPLEMENTATIONS))
    if unknown:
        parser.error(
            f"--peers: unknown {', '.join(unknown)}; choose from "
            f"{', '.join(k for k in IMPLEMENTATIONS if k != 'xentc')}"
        )
    skipped = {}
    impls = available_implementations(peers, skipped)
    info = machine_info(n_threads)

    print(
        f"xentc {info['xentc']} benchmark: {info['cpu']}, {info['cores']} cores, "
        f"{n_threads} threads, kernels: {info['kernels']}, OpenMP {info['openmp']}"
    )
    print(
        "peers: "
        + ", ".join(
            f"{name} {info.get('scikit-learn' if name == 'sklearn' else name, '')} "
            f"({IMPLEMENTATIONS[name][2]})".replace("  ", " ")
            for name in impls
            if name != "xentc"
        )
        + "".join(f"; {name} skipped: {why}" for name, why in skipped.items())
    )
    bandwidth = measure_bandwidth(n_threads, args.repeats, quick=args.quick)
    print(
        f"bandwidth at {n_threads} threads over {bandwidth['array_bytes'] / 2**30:.2f} GiB "
        f"arrays: read {bandwidth['read_gbs']:.1f} GB/s, copy {bandwidth['copy_gbs']:.1f} GB/s "
        f"(bytes read + bytes written)"
        + ("; --quick: a smaller probe, indicative only" if args.quick else "")
    )

    # each impl once per pass, plus xentc's out= variant of loss+grad
    progress = Progress(len(workloads) * (len(PASSES) * len(impls) + 1))
    rows = []
    for workload in workloads:
        rows += run_workload(workload, impls, n_threads, args.repeats, bandwidth, progress)
    progress.close()

    print()
    print(format_table(rows))
    print(
        "\nGB/s: minimum bytes moved / median time. % of bw: of read (forward) or copy "
        "(loss+grad) bandwidth above. range ms: the fastest and slowest timed call. vs xentc: "
        "time / xentc's time. extra MiB: peak resident memory added by one call, returned "
        "gradient included."
    )
    mismatches = [r for r in rows if r.loss_check != "ok"]
    if mismatches:
        print(f"{len(mismatches)} loss mismatch(es) against xentc: see the 'loss check' column.")

    step_rows = []
    if args.no_torch_step:
        why = "--no-torch-step"
    elif "torch" not in impls and not _importable("torch"):
        why = (
            "torch is not installed (install the CPU build of torch first, then "
            "pip install '.[torch]' from a checkout: see docs/install.md)"
        )
    else:
        why = None
        step_workload = quick(TORCH_STEP_WORKLOAD) if args.quick else TORCH_STEP_WORKLOAD
        progress = Progress(3 * len(torch_step_dtypes(args.quick)))
        step_rows = torch_step_rows(
            step_workload, n_threads, args.repeats, progress, quick=args.quick
        )
        progress.close()
    print(
        "\ntorch training step: forward + backward of the mean loss (torch.autograd.grad of it "
        "with respect to the logits),\nxentc.torch against torch.nn.functional.cross_entropy, "
        f"{n_threads} threads, each case in a fresh process."
    )
    if why:
        print(f"skipped: {why}")
    else:
        print(format_torch_step(step_rows))
        print(
            "extra MiB: the process's resident high-water mark (VmHWM, reset before the "
            "step) over its resident set before it: every allocation torch or xentc makes "
            "shows there, the returned gradient included."
        )
        if any(r.loss_check != "ok" for r in step_rows):
            print("loss mismatch against torch: see the 'loss check' column.")
    contention = end_of_run(
        watch,
        args.json,
        {
            "machine": info,
            "bandwidth": bandwidth,
            "rows": [asdict(r) for r in rows],
            "torch_step": [asdict(r) for r in step_rows],
        },
    )
    if args.markdown:
        shown = list(argv if argv is not None else sys.argv[1:])
        for option in ("--markdown", "--readme"):  # the output paths say nothing about the run
            if option in shown:
                k = shown.index(option)
                del shown[k : k + 2]
        with open(args.markdown, "w") as f:
            f.write(markdown_report(rows, step_rows, info, bandwidth, shown, contention))
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        with open(args.readme, "w") as f:
            f.write(replace_readme_summary(text, readme_summary(rows, info, bandwidth, contention)))
    if args.plot:
        plot(rows, bandwidth, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

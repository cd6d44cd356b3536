"""`python -m xentc.bench --linear`: the fused linear + cross-entropy section (issue 19).

For each workload (N hidden states of D features, V classes), dtype (float32, bfloat16) and pass
(loss: the mean loss only; loss+grads: with the gradients of hidden and weight) it times, in the
same run:
  xentc                xentc.linear_cross_entropy(_with_grad): chunks of rows, no N x V array;
  numpy+xentc unfused  np.matmul into the whole N x V logits, then xentc.cross_entropy(_with_grad)
                       (16-bit operands widened to float32 first: NumPy has no bfloat16 BLAS);
  torch unfused        F.linear + F.cross_entropy;
  torch reference      F.linear_cross_entropy(options=None), torch's reference path;
  torch chunked        F.linear_cross_entropy(options=LinearCrossEntropyOptions()).
and the plain products alone: np.matmul of H W^T (the loss's one product) and of the three
products of loss+grads (H W^T, G W, G^T H), in float32 at the same shapes.

Columns:
  median ms     median time of the calls (the first, which also measures memory, included; more
                calls while under --repeats and the per-contender time budget);
  GFLOP/s       the pass's matrix-product work (2NDV for the loss, 6NDV with gradients) over the
                median time;
  % of matmul   the plain np.matmul products' time over the call's (100 %: as fast as the
                products alone; the products are the limit, the cross-entropy work should hide);
  extra MiB     peak resident memory added by one call (bench.peak_extra_bytes), the returned
                gradients included;
  loss err      |loss - reference| / |reference|, the reference in float64 (NumPy) on the same
                (possibly bfloat16-rounded) inputs;
  grad err      for loss+grads: the larger norm-wise relative error of grad_hidden on its first
                REF_ROWS rows and of grad_weight on its first REF_ROWS classes against float64.
A contender that cannot run says why (torch not installed, or over --linear-max-call-s).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

import xentc

from . import bench

# (N, D, V): a 32k-vocabulary model, a Llama-3-sized vocabulary, many short hidden states.
WORKLOADS = [(4096, 1024, 32000), (2048, 1024, 128256), (16384, 256, 32000)]
# --quick: the same aspect, a few MFLOP each (seconds for the whole section, torch included)
QUICK_WORKLOADS = [(256, 64, 2000), (128, 64, 8000), (1024, 16, 2000)]
DTYPES = ("float32", "bfloat16")
PASSES = ("loss", "loss+grads")
CONTENDERS = (
    "xentc",
    "numpy+xentc unfused",
    "torch unfused",
    "torch reference",
    "torch chunked",
)
# Rows (of grad_hidden) and classes (of grad_weight) checked against the float64 reference: the
# whole of them would cost the reference N x V x D float64 products again.
REF_ROWS = 256
# Per contender and pass: no more timed calls once this many seconds were spent (the first call
# always runs). The full workloads take seconds to minutes per call on a small machine.
BUDGET_S = 30.0


def add_arguments(parser):
    """This section's options, on bench.py's parser."""
    parser.add_argument(
        "--linear",
        action="store_true",
        help="run the fused linear + cross-entropy section (xentc/_bench_linear.py) instead "
        "of the tables above; with --quick, at small shapes",
    )
    parser.add_argument(
        "--linear-dtypes",
        default=",".join(DTYPES),
        help="--linear: comma-separated subset of float32, bfloat16",
    )
    parser.add_argument(
        "--linear-max-call-s",
        type=float,
        default=None,
        metavar="S",
        help="--linear: skip a contender whose one call is estimated (from its matmul rate at "
        "that dtype) to take more than S seconds, saying so",
    )


@dataclass
class LinearRow:
    """One line of the section's table."""

    workload: str
    n: int
    d: int
    v: int
    dtype: str
    pass_name: str
    impl: str
    median_ms: float | None = None
    calls: int = 0
    gflops: float | None = None
    matmul_fraction: float | None = None
    extra_mib: float | None = None
    loss_err: float | None = None
    grad_err: float | None = None
    skipped: str | None = None


def _bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def make_inputs(n, d, v, seed=0):
    """float32 hidden ~ N(0, 1), weight ~ N(0, 4 / D) (logits of spread ~2, as bench.py's), and
    uniform targets."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    weight = rng.standard_normal((v, d), dtype=np.float32)
    weight *= np.float32(2.0 / math.sqrt(d))
    return hidden, weight, rng.integers(0, v, size=n)


def reference(hidden, weight, target):
    """The float64 loss (mean), grad_hidden's first REF_ROWS rows and grad_weight's first
    REF_ROWS classes, in plain NumPy, a chunk of rows at a time (no N x V float64 array)."""
    h64, w64 = hidden.astype(np.float64), weight.astype(np.float64)
    n, v = len(target), len(w64)
    k = min(REF_ROWS, v)
    step = max(1, (64 << 20) // (8 * v))
    total = 0.0
    dh = None
    dw = np.zeros((k, h64.shape[1]))
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        z = h64[rows] @ w64.T
        peak = z.max(axis=1, keepdims=True)
        lse = peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1))
        picked = z[np.arange(len(z)), target[rows]]
        total += float(np.sum(lse - picked))
        g = np.exp(z - lse[:, None])
        g[np.arange(len(z)), target[rows]] -= 1.0
        g /= n
        if dh is None:
            dh = g[: min(REF_ROWS, n)] @ w64
        dw += g[:, :k].T @ h64[rows]
    return total / n, dh, dw


def _as_array(a):
    """A gradient (ndarray, or torch tensor of any dtype) as a float64 ndarray."""
    if not isinstance(a, np.ndarray):
        a = a.double().numpy()
    return a.astype(np.float64, copy=False)


def _rel(a, ref):
    a = np.asarray(a, np.float64)
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


# ---- the contenders: each gives, per pass, a call returning (loss, grad_hidden, grad_weight) ----


def xentc_calls(h, w, t, n_threads):
    def loss():
        return xentc.linear_cross_entropy(h, w, t, n_threads=n_threads), None, None

    def grads():
        loss, gh, gw, _ = xentc.linear_cross_entropy_with_grad(h, w, t, n_threads=n_threads)
        return loss, gh, gw

    return {"loss": loss, "loss+grads": grads}


def numpy_calls(h, w, t, n_threads):
    def operands():
        if h.dtype == np.float32:
            return h, w
        return h.astype(np.float32), w.astype(np.float32)

    def loss():
        h32, w32 = operands()
        return xentc.cross_entropy(h32 @ w32.T, t, n_threads=n_threads), None, None

    def grads():
        h32, w32 = operands()
        z = h32 @ w32.T
        loss, g = xentc.cross_entropy_with_grad(z, t, out=z, n_threads=n_threads)
        return loss, (g @ w32).astype(h.dtype), (g.T @ h32).astype(h.dtype)

    return {"loss": loss, "loss+grads": grads}


def _tensor(a):
    import torch

    if a.dtype == _bfloat16():
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def torch_calls(kind):
    def calls(h, w, t, n_threads):
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(n_threads)
        th, tw, tt = _tensor(h), _tensor(w), torch.from_numpy(t)
        if kind == "unfused":

            def loss_fn(x, y):
                return F.cross_entropy(F.linear(x, y), tt)

        else:
            options = None if kind == "reference" else torch.nn.LinearCrossEntropyOptions()

            def loss_fn(x, y):
                return F.linear_cross_entropy(x, y, tt, options=options)

        def loss():
            with torch.no_grad():
                return float(loss_fn(th, tw)), None, None

        def grads():
            x, y = th.detach().requires_grad_(), tw.detach().requires_grad_()
            out = loss_fn(x, y)
            out.backward()
            return float(out.detach()), x.grad, y.grad  # tensors: converted after the measured call

        return {"loss": loss, "loss+grads": grads}

    return calls


CALLS = {
    "xentc": xentc_calls,
    "numpy+xentc unfused": numpy_calls,
    "torch unfused": torch_calls("unfused"),
    "torch reference": torch_calls("reference"),
    "torch chunked": torch_calls("chunked"),
}


def torch_missing():
    """Why the torch contenders cannot run, or None."""
    try:
        import torch

        torch.nn.LinearCrossEntropyOptions  # noqa: B018 - torch >= 2.13's API
    except ImportError:
        return "torch is not installed (the CPU build: see docs/install.md)"
    except AttributeError:
        import torch

        return f"torch {torch.__version__} has no F.linear_cross_entropy (torch >= 2.13)"
    return None


# ---- the plain products, and the rates that estimate a call's length ----------------------------


def matmul_probe(h, w, repeats, budget_s):
    """Median seconds of the plain float32 products: H W^T alone, and the three products of
    loss+grads (H W^T, G W, G^T H) with G of the logits' shape, each into a preallocated output."""
    z = np.empty((len(h), len(w)), np.float32)
    dh, dw = np.empty_like(h), np.empty_like(w)
    one = bench.median_seconds(lambda: np.matmul(h, w.T, out=z), repeats, budget_s)

    def three():
        np.matmul(h, w.T, out=z)
        np.matmul(z, w, out=dh)
        np.matmul(z.T, h, out=dw)

    return one, bench.median_seconds(three, repeats, budget_s)


def torch_rate(dtype, d, v, n_threads):
    """GFLOP/s of torch's F.linear at `dtype` on 256 rows: its bfloat16 products on a CPU without
    bfloat16 instructions run several times slower than its float32 ones."""
    import torch

    torch.set_num_threads(n_threads)
    x = torch.randn(256, d).to(getattr(torch, dtype))
    y = torch.randn(v, d).to(x.dtype)
    torch.nn.functional.linear(x, y)
    seconds = bench.median_seconds(lambda: torch.nn.functional.linear(x, y), 3, 5.0)
    return 2 * 256 * d * v / seconds / 1e9


# ---- the section ---------------------------------------------------------------------------------


def _timed(fn, repeats, budget_s):
    """(first call's result, its peak extra bytes, the times of every call)."""
    t0 = time.perf_counter()
    result, extra = bench.peak_extra_bytes(fn)
    times = [time.perf_counter() - t0]
    spent = times[0]
    while len(times) < repeats and spent + times[0] <= budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return result, extra, times


def warm_up(contenders, dtypes, n_threads):
    """Each contender once at a small size per dtype: libraries' lazy set-up (thread pools,
    kernels) is not counted in the first timed call's memory."""
    h, w, t = make_inputs(64, 32, 500)
    for dtype in dtypes:
        hh, ww = (h, w) if dtype == "float32" else (h.astype(_bfloat16()), w.astype(_bfloat16()))
        for name in contenders:
            for call in CALLS[name](hh, ww, t, n_threads).values():
                call()


def run(workloads, dtypes, n_threads, repeats, budget_s=BUDGET_S, max_call_s=None, progress=None):
    """The section's rows: every contender, dtype and pass of every workload. torch's thread
    count (torch.set_num_threads is also the process's OpenMP limit, which xentc's default
    n_threads follows) is put back as it was."""
    missing = torch_missing()
    if missing:
        return _run(workloads, dtypes, n_threads, repeats, budget_s, max_call_s, progress, missing)
    import torch

    saved = torch.get_num_threads()
    try:
        return _run(workloads, dtypes, n_threads, repeats, budget_s, max_call_s, progress, missing)
    finally:
        torch.set_num_threads(saved)


def _run(workloads, dtypes, n_threads, repeats, budget_s, max_call_s, progress, missing):
    contenders = [c for c in CONTENDERS if not (missing and c.startswith("torch"))]
    warm_up(contenders, dtypes, n_threads)
    rows = []
    for n, d, v in workloads:
        label = f"N={n} D={d} V={v}"
        h32, w32, t = make_inputs(n, d, v)
        flops = 2 * n * d * v
        one, three = matmul_probe(h32, w32, repeats, budget_s)
        for name, seconds, pass_name in (
            ("np.matmul: H W^T", one, "loss"),
            ("np.matmul: 3 products", three, "loss+grads"),
        ):
            products = 1 if pass_name == "loss" else 3
            rows.append(
                LinearRow(
                    label, n, d, v, "float32", pass_name, name, seconds * 1e3, 0,
                    products * flops / seconds / 1e9, 1.0,
                )
            )  # fmt: skip
        rates = {"numpy": flops / one / 1e9}
        for dtype in dtypes:
            if dtype == "float32":
                h, w = h32, w32
            else:
                h, w = h32.astype(_bfloat16()), w32.astype(_bfloat16())
            ref_loss, ref_dh, ref_dw = reference(h, w, t)
            if max_call_s is not None and not missing:
                rates[dtype] = torch_rate(dtype, d, v, n_threads)
            for pass_name in PASSES:
                products = 1 if pass_name == "loss" else 3
                plain = one if pass_name == "loss" else three
                for name in CONTENDERS:
                    row = LinearRow(label, n, d, v, dtype, pass_name, name)
                    rows.append(row)
                    if progress:
                        progress.step(f"linear {label} {dtype} {pass_name}: {name}")
                    if name not in contenders:
                        row.skipped = missing
                        continue
                    if max_call_s is not None:
                        rate = rates.get(dtype if name.startswith("torch") else "numpy")
                        estimate = products * flops / (rate * 1e9) if rate else 0.0
                        if estimate > max_call_s:
                            row.skipped = (
                                f"estimated {estimate:.0f} s a call (its {dtype} matmul runs at "
                                f"{rate:.0f} GFLOP/s here) > --linear-max-call-s {max_call_s:g}"
                            )
                            continue
                    call = CALLS[name](h, w, t, n_threads)[pass_name]
                    (loss, gh, gw), extra, times = _timed(call, repeats, budget_s)
                    seconds = float(np.median(times))
                    row.median_ms, row.calls = seconds * 1e3, len(times)
                    row.gflops = products * flops / seconds / 1e9
                    row.matmul_fraction = plain / seconds
                    row.extra_mib = None if extra is None else extra / 2**20
                    row.loss_err = abs(float(loss) - ref_loss) / abs(ref_loss)
                    if gh is not None:
                        gh, gw = _as_array(gh), _as_array(gw)
                        k = len(ref_dh)
                        row.grad_err = max(_rel(gh[:k], ref_dh), _rel(gw[: len(ref_dw)], ref_dw))
                    del loss, gh, gw, call
    return rows


def format_table(rows, markdown=False):
    """The section's table as text (aligned columns) or Markdown."""
    head = [
        "workload",
        "dtype",
        "pass",
        "impl",
        "median ms",
        "calls",
        "GFLOP/s",
        "% of matmul",
        "extra MiB",
        "loss err",
        "grad err",
    ]

    def num(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    body = []
    for r in rows:
        if r.skipped:
            cells = [r.workload, r.dtype, r.pass_name, r.impl, f"skipped: {r.skipped}"]
            body.append(cells + [""] * (len(head) - len(cells)))
            continue
        body.append(
            [
                r.workload,
                r.dtype,
                r.pass_name,
                r.impl,
                num(r.median_ms, ".0f"),
                str(r.calls) if r.calls else "",
                num(r.gflops, ".1f"),
                num(None if r.matmul_fraction is None else 100 * r.matmul_fraction, ".0f") + "%",
                num(r.extra_mib, ".0f") if r.calls else "",
                num(r.loss_err, ".1e") if r.calls else "",
                num(r.grad_err, ".1e") if r.calls else "",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(h), *(len(b[i]) for b in body if not b[4].startswith("skipped"))) for
              i, h in enumerate(head)]  # fmt: skip
    fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head)]
    for b in body:
        if b[4].startswith("skipped"):
            lines.append("  ".join(f"{c:<{w}}" for c, w in zip(b[:4], widths)) + "  " + b[4])
        else:
            lines.append(fmt.format(*b))
    return "\n".join(lines)


def main(args):
    """The section as bench.main runs it with --linear: prints the table (and writes --json,
    --markdown); returns the exit status."""
    watch = bench.CpuWatch()
    n_threads = bench.check_n_threads(args.threads)
    bench.map_large_allocations()
    dtypes = [x.strip() for x in args.linear_dtypes.split(",") if x.strip()]
    unknown = sorted(set(dtypes) - set(DTYPES))
    if unknown or not dtypes:
        raise SystemExit(f"--linear-dtypes: expected a subset of {', '.join(DTYPES)}; got {dtypes}")
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    info = bench.machine_info(n_threads)
    print(
        f"xentc {info['xentc']} linear cross-entropy benchmark: {info['cpu']}, {info['cores']} "
        f"cores, {n_threads} threads, numpy {info['numpy']}"
        + (f", torch {info['torch']}" if "torch" in info else "")
    )
    missing = torch_missing()
    if missing:
        print(f"torch contenders skipped: {missing}")
    progress = bench.Progress(len(workloads) * len(dtypes) * len(PASSES) * len(CONTENDERS))
    rows = run(
        workloads,
        dtypes,
        n_threads,
        args.repeats,
        max_call_s=args.linear_max_call_s,
        progress=progress,
    )
    progress.close()
    print()
    print(format_table(rows))
    print(
        "\nmedian ms: of `calls` calls (the first also measures memory). GFLOP/s: the pass's "
        "matrix-product work (2NDV, or 6NDV with gradients) / median time. % of matmul: the "
        "plain float32 np.matmul products' time (rows np.matmul: ...) / the call's. extra MiB: "
        "peak resident memory one call added, gradients returned included. loss err, grad "
        f"err: relative to float64 (grad: grad_hidden's first {REF_ROWS} rows, grad_weight's "
        f"first {REF_ROWS} classes, norm-wise)."
    )
    bench.end_of_run(watch, args.json, {"machine": info, "linear": [asdict(r) for r in rows]})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_table(rows, markdown=True) + "\n")
    return 0

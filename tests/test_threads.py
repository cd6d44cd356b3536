"""Threads: results are bitwise identical for every n_threads (spec), callers on several Python
threads at once get what serial calls get, and n_threads=None follows OMP_NUM_THREADS."""

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.special

import xentc

THREADS = (1, 2, 3, 7)  # 3 and 7 do not divide the row counts; 7 oversubscribes 2 cores
# few rows: more threads than rows, so the work must split along the classes or idle; rows of
# more than one chunk (xc_rows.h XC_CHUNK, 32768 logits) are split across threads
SHAPES = {"many-rows": (4099, 67), "few-rows": (3, 30011), "few-long-rows": (3, 70001)}
REDUCTIONS = ["mean", "sum", "none"]


def make_inputs(seed, shape, dtype, target_kind, layout):
    rng = np.random.default_rng(seed)
    n, c = shape
    logits = (4 * rng.standard_normal((n, 2 * c))).astype(dtype)
    logits = logits[:, ::2] if layout == "strided" else np.ascontiguousarray(logits[:, :c])
    if target_kind == "probs":
        target = scipy.special.softmax(rng.standard_normal((n, c)), axis=-1)
        kw = {"label_smoothing": 0.1, "sample_weight": rng.uniform(0, 2, n)}
    else:
        target = rng.integers(0, c, n)
        target[::7] = -100
        kw = {
            "weight": rng.uniform(0.5, 2, c),
            "sample_weight": rng.uniform(0, 2, n),
            "z_loss": 1e-4,
            "label_smoothing": 0.05,
        }
    return logits, target, kw


def run_all(logits, target, kw, n_threads):
    """Every entry point that takes n_threads, every reduction; name -> tuple of results."""
    results = {}
    for reduction in REDUCTIONS:
        opts = dict(kw, reduction=reduction, n_threads=n_threads)
        results[f"cross_entropy-{reduction}"] = (xentc.cross_entropy(logits, target, **opts),)
        results[f"cross_entropy-lse-{reduction}"] = xentc.cross_entropy(
            logits, target, return_lse=True, **opts
        )
        results[f"with_grad-{reduction}"] = xentc.cross_entropy_with_grad(
            logits, target, return_lse=True, **opts
        )
        out = np.empty_like(logits)
        results[f"with_grad-out-{reduction}"] = xentc.cross_entropy_with_grad(
            logits, target, out=out, **opts
        )
    return results


def assert_bitwise(got, want, case):
    assert got.keys() == want.keys(), case
    for name in want:
        for i, (g, w) in enumerate(zip(got[name], want[name])):
            assert type(g) is type(w), f"{name}[{i}] type, {case}"
            np.testing.assert_array_equal(
                g, w, err_msg=f"{name}[{i}] not bitwise equal, {case}", strict=True
            )


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("target_kind", ["index", "probs"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_bitwise_across_n_threads(dtype, shape, target_kind, layout):
    logits, target, kw = make_inputs(0, shape, dtype, target_kind, layout)
    want = run_all(logits, target, kw, 1)
    assert np.all(np.isfinite(want["cross_entropy-none"][0])), "test data must be finite"
    for n in THREADS[1:]:
        assert_bitwise(
            run_all(logits, target, kw, n),
            want,
            f"n_threads={n} vs 1, shape={shape} dtype={dtype} {target_kind} {layout}",
        )


def _row_functions(x):
    return {
        f"{fn.__name__}-axis{axis}": (fn(x, axis=axis),)
        for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax)
        for axis in (-1, 0)
    }


@pytest.mark.parametrize("omp", ["1", "2", "3", "7"])
def test_none_follows_omp_num_threads(monkeypatch, dtype, omp):
    # n_threads=None reads OMP_NUM_THREADS (spec); whatever it resolves to, the results must not
    # change. logsumexp/softmax/log_softmax have no n_threads and always use the default.
    logits, target, kw = make_inputs(1, SHAPES["many-rows"], dtype, "index", "contiguous")
    want = run_all(logits, target, kw, 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rows_default = _row_functions(logits)
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert_bitwise(
        run_all(logits, target, kw, None), want, f"OMP_NUM_THREADS={omp}, n_threads=None"
    )
    assert_bitwise(_row_functions(logits), rows_default, f"OMP_NUM_THREADS={omp}, row functions")


def test_omp_num_threads_at_import(tmp_path):
    # The usual way to set it: in the environment before Python starts. Run each setting in a
    # fresh interpreter and compare everything with n_threads=1 in this process.
    logits, target, kw = make_inputs(2, (1001, 257), np.float32, "index", "contiguous")
    np.savez(tmp_path / "inputs.npz", logits=logits, target=target, **kw)
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import xentc
        d = dict(np.load(sys.argv[1]))
        logits, target = d.pop("logits"), d.pop("target")
        d["z_loss"], d["label_smoothing"] = float(d["z_loss"]), float(d["label_smoothing"])
        res = {}
        for reduction in ("mean", "sum", "none"):
            loss, lse, grad = xentc.cross_entropy_with_grad(logits, target, reduction=reduction,
                                                            return_lse=True, **d)
            res.update({reduction + "-loss": loss, reduction + "-lse": lse,
                        reduction + "-grad": grad})
            res[reduction + "-ce"] = xentc.cross_entropy(logits, target, reduction=reduction, **d)
        res["softmax"] = xentc.softmax(logits)
        res["logsumexp"] = xentc.logsumexp(logits, axis=0)
        np.savez(sys.argv[2], **res)
    """)
    want = {}
    for reduction in REDUCTIONS:
        loss, lse, grad = xentc.cross_entropy_with_grad(
            logits, target, reduction=reduction, return_lse=True, n_threads=1, **kw
        )
        want.update(
            {
                reduction + "-loss": loss,
                reduction + "-lse": lse,
                reduction + "-grad": grad,
                reduction + "-ce": xentc.cross_entropy(
                    logits, target, reduction=reduction, n_threads=1, **kw
                ),
            }
        )
    want["softmax"] = xentc.softmax(logits)
    want["logsumexp"] = xentc.logsumexp(logits, axis=0)
    for omp in ("1", "3"):
        out = tmp_path / f"out{omp}.npz"
        # the child must run the instruction set this process runs now: results
        # are bitwise equal across thread counts, not across instruction sets
        env = dict(os.environ, OMP_NUM_THREADS=omp, XENTC_ISA=xentc._kernels.isa_active())
        cmd = [sys.executable, "-c", script, str(tmp_path / "inputs.npz"), str(out)]
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"OMP_NUM_THREADS={omp}: {proc.stderr}"
        got = np.load(out)
        for name, w in want.items():
            np.testing.assert_array_equal(
                got[name],
                w,
                err_msg=f"{name}, OMP_NUM_THREADS={omp} at import vs n_threads=1 in this process",
            )


@pytest.mark.parametrize("n_threads", [1, 2, None])
def test_concurrent_callers(dtype, n_threads):
    # Four Python threads call at once (the kernels release the GIL), each on its own data and
    # its own out=, and a second round all on the SAME read-only logits; each must get exactly
    # what a serial call gives.
    shape = (129, 300)
    inputs = [
        make_inputs(10 + i, shape, dtype, kind, layout)
        for i, (kind, layout) in enumerate(
            [
                ("index", "contiguous"),
                ("probs", "strided"),
                ("index", "strided"),
                ("probs", "contiguous"),
            ]
        )
    ]
    shared = inputs[0][0].copy()
    shared.flags.writeable = False

    def work(args, repeats=2):
        logits, target, kw = args
        results = []
        for _ in range(repeats):
            res = run_all(logits, target, kw, n_threads)
            res.update(_row_functions(logits))
            results.append(res)
        return results

    jobs = inputs + [(shared, t, k) for _, t, k in inputs]
    serial = [work(job, repeats=1)[0] for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(work, jobs))
    for i, (results, want) in enumerate(zip(concurrent, serial)):
        for r, got in enumerate(results):
            assert_bitwise(
                got, want, f"job {i} repeat {r}, 4 Python threads, n_threads={n_threads}"
            )


def _live_threads():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_eight_callers_mixed_n_threads_and_no_stray_threads(dtype):
    # Eight Python threads at once, each with its own n_threads (1 to 4, so the OpenMP pools of
    # several sizes coexist), get exactly what serial calls give; the process never holds more
    # threads than the calls need (each caller's pool: n_threads - 1 workers), and once the
    # callers have ended their pools go with them.
    counts = [1 + i % 4 for i in range(8)]
    jobs = [
        make_inputs(40 + i, (130, 700), dtype, kind, "strided" if i % 3 else "contiguous")
        for i, kind in enumerate(["index", "probs"] * 4)
    ]
    serial = [run_all(*job, n_threads=1) for job in jobs]
    xentc.cross_entropy(*jobs[0][:2], n_threads=max(counts))  # this thread's pool, at its size
    baseline = _live_threads()
    peak = [0]

    def work(i):
        results = []
        for _ in range(3):
            results.append(run_all(*jobs[i], n_threads=counts[i]))
            peak[0] = max(peak[0], _live_threads())
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(work, range(8)))
    for i, results in enumerate(concurrent):
        for r, got in enumerate(results):
            assert_bitwise(
                got, serial[i], f"caller {i} repeat {r}, 8 Python threads, n_threads={counts[i]}"
            )
    need = baseline + len(counts) + sum(n - 1 for n in counts)
    assert peak[0] <= need, f"{peak[0]} threads alive at once; the calls need at most {need}"
    # A pool's workers leave when its Python thread ends (libgomp frees the pool from the
    # thread's exit handler, asynchronously): give them a moment.
    for _ in range(100):
        if _live_threads() <= baseline:
            break
        time.sleep(0.1)
    assert _live_threads() <= baseline, (
        f"{_live_threads()} threads alive after every caller ended; {baseline} before"
    )

"""A small run of every public xentc function for valgrind's memcheck (`make valgrind`).

Each kernel path runs a few times on small arrays: contiguous and strided logits, index and
probability targets, every option, out= and in place, the short-row kernel, a row split across
threads, the error paths; every result is checked against a direct NumPy computation, so a
kernel that reads uninitialised memory also shows up in the values. memcheck then reports any
invalid read or write, use of uninitialised values, or bad free inside the extension.

valgrind's CPU emulation has no AVX-512: `make valgrind` sets XENTC_ISA=avx2 (the best set it
emulates); XENTC_ISA=baseline checks the SSE2 kernels. PYTHONMALLOC=malloc sends Python's own
allocations through malloc, where memcheck follows them.
"""

import numpy as np

import xentc


def reference(logits, target):
    z = logits.astype(np.float64)
    peak = z.max(axis=-1, keepdims=True)
    lse = (peak + np.log(np.exp(z - peak).sum(axis=-1, keepdims=True)))[..., 0]
    rows = np.arange(z.shape[0])
    loss = lse - z[rows, target]
    grad = np.exp(z - lse[:, None])
    grad[rows, target] -= 1.0
    return loss, lse, grad


def check(got, want, tol, what):
    err = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want), initial=0.0))
    assert err <= tol, f"{what}: error {err}"


def main():
    rng = np.random.default_rng(0)
    print(f"kernels in use: {xentc._kernels.isa_active()}")
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for n, c, step in ((5, 7, 1), (9, 100, 1), (3, 300, 3), (17, 128, 1), (2, 40000, 1)):
            base = rng.standard_normal((n, c * step)).astype(dtype)
            logits = base[:, ::step]
            target = rng.integers(0, c, n)
            loss, lse, grad = reference(logits, target)
            what = f"{np.dtype(dtype).name} ({n}, {c}) step {step}"
            for threads in (1, 2):
                got = xentc.cross_entropy(logits, target, reduction="none", n_threads=threads)
                check(got, loss, tol * 10, f"loss {what}")
                _, got_lse, got_grad = xentc.cross_entropy_with_grad(
                    logits, target, reduction="sum", return_lse=True, n_threads=threads
                )
                check(got_lse, lse, tol * 10, f"lse {what}")
                check(got_grad, grad, tol, f"grad {what}")
            out = np.full(logits.shape, np.nan, dtype=dtype)
            xentc.cross_entropy_with_grad(logits, target, reduction="sum", out=out)
            check(out, grad, tol, f"out= {what}")
            work = logits.copy()
            xentc.cross_entropy_with_grad(work, target, reduction="sum", out=work)
            check(work, grad, tol, f"in place {what}")
            probs = np.zeros(logits.shape, dtype=dtype)
            probs[np.arange(n), target] = 1.0
            check(
                xentc.cross_entropy(logits, probs, reduction="none"),
                loss,
                tol * 10,
                f"probabilities {what}",
            )
            xentc.cross_entropy_with_grad(
                logits,
                target,
                weight=rng.uniform(0.5, 2, c),
                sample_weight=rng.uniform(0, 1, n),
                label_smoothing=0.1,
                z_loss=1e-3,
                reduction="none",
                grad_output=rng.uniform(-1, 1, n),
            )
            check(xentc.logsumexp(logits), lse, tol * 10, f"logsumexp {what}")
            check(xentc.softmax(logits), grad + probs, tol, f"softmax {what}")
            check(xentc.log_softmax(logits, axis=0).shape, np.array(logits.shape), 0, "shape")
            bad_calls = [
                (xentc.cross_entropy, (logits, target + c), {}),
                (xentc.cross_entropy, (logits.astype(np.int32), target), {}),
                (xentc.cross_entropy_with_grad, (logits, target), {"out": logits[::-1]}),
            ]
            for fn, args, kw in bad_calls:
                try:
                    fn(*args, **kw)
                except (TypeError, ValueError):
                    pass
                else:
                    raise AssertionError("an invalid call returned")
    print("valgrind_check: every call matched NumPy")


if __name__ == "__main__":
    main()

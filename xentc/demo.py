"""`python -m xentc.demo`: a loss and gradient on random (batch, seq, vocab) logits, checked
against a plain NumPy computation in float64, with one rough timing of each.

This is the README's main job until the benchmark report (`python -m xentc.bench`) lands.
"""

import argparse
import time

import numpy as np

import xentc


def numpy_loss_and_grad(logits, target):
    """Mean cross-entropy and its gradient, the way one writes it in NumPy (float64)."""
    z = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    y = target.reshape(-1)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -log_p[rows, y].mean()
    grad = np.exp(log_p)
    grad[rows, y] -= 1.0
    return loss, (grad / len(y)).reshape(logits.shape)


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape", default="8,512,32000", help="batch,seq,vocab (default %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=None, help="n_threads for xentc")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    batch, seq, vocab = (int(v) for v in args.shape.split(","))

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((batch, seq, vocab), dtype=np.float32) * 2.0
    target = rng.integers(0, vocab, size=(batch, seq))
    print(f"logits {logits.shape} float32 ({logits.nbytes / 2**20:.0f} MiB), target {target.shape}")
    xentc.show_config()

    loss, grad = xentc.cross_entropy_with_grad(logits, target, n_threads=args.threads)
    ref_loss, ref_grad = numpy_loss_and_grad(logits, target)
    loss_err = abs(loss - ref_loss) / abs(ref_loss)
    # The spec's float32 gradient bar: atol 1e-6 on the gradient scaled to a unit-size loss.
    grad_err = float(np.max(np.abs(grad.astype(np.float64) - ref_grad))) * target.size
    print(f"loss: xentc {loss:.7f}  numpy float64 {ref_loss:.7f}  relative error {loss_err:.1e}")
    print(f"gradient: max error x N = {grad_err:.1e} (spec: <= 1e-6)")

    out = np.empty_like(logits)
    t_xentc = median_seconds(
        lambda: xentc.cross_entropy_with_grad(logits, target, out=out, n_threads=args.threads),
        args.repeats,
    )
    t_numpy = median_seconds(lambda: numpy_loss_and_grad(logits, target), max(1, args.repeats // 2))
    print(
        f"loss+grad median: xentc {t_xentc * 1e3:.1f} ms, numpy float64 {t_numpy * 1e3:.1f} ms "
        f"({t_numpy / t_xentc:.1f}x)"
    )
    ok = loss_err <= 1e-5 and grad_err <= 1e-6
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

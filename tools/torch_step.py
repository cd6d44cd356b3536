"""The cost of xentc.torch's training step against torch's, on the benchmark's workload
(N=4096, C=32000 float32, 2 threads): first order, the gradient penalty (double backward) and
torch.compile'd, medians of R runs (docs/torch.md quotes its figures).

    python tools/torch_step.py 5
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import xentc.torch as xt

torch.set_num_threads(2)
N, C, R = 4096, 32000, int(sys.argv[1])
g = torch.Generator().manual_seed(0)
base, y = torch.randn(N, C, generator=g), torch.randint(0, C, (N,), generator=g)


def first(fn):
    x = base.clone().requires_grad_(True)
    return lambda: torch.autograd.grad(fn(x, y), x)


def penalty(fn):  # loss + 0.1 * |d loss / dx|^2, differentiated again
    x = base.clone().requires_grad_(True)

    def step():
        loss = fn(x, y)
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        return torch.autograd.grad(loss + 0.1 * (gx**2).sum(), x)

    return step


def median_ms(step):
    step()
    return (
        statistics.median(
            [
                (lambda t: (step(), time.perf_counter() - t)[1])(time.perf_counter())
                for _ in range(R)
            ]
        )
        * 1e3
    )


cases = {
    "torch": first(F.cross_entropy),
    "xentc": first(xt.cross_entropy),
    "torch penalty": penalty(F.cross_entropy),
    "xentc penalty": penalty(xt.cross_entropy),
    "torch compiled": first(torch.compile(F.cross_entropy, fullgraph=True)),
    "xentc compiled": first(torch.compile(xt.cross_entropy, fullgraph=True)),
}
times = {name: median_ms(step) for name, step in cases.items()}
for name, ms in times.items():
    print(f"{name:16s} {ms:9.1f} ms {ms / times['torch']:6.2f}x")

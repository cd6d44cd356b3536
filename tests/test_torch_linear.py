"""xentc.torch.linear_cross_entropy against torch.nn.functional.linear_cross_entropy (its
reference path: F.linear, then F.cross_entropy), the oracle for every option torch has; the
options torch lacks (z_loss, softcap, logit_scale) against xentc.torch.cross_entropy of
F.linear's logits. Gradients of input, linear_weight and linear_bias with a random incoming
gradient; gradcheck in float64; a small language model trained both ways."""

import math

import pytest

torch = pytest.importorskip("torch", reason="torch is the oracle of this module")
import torch.nn.functional as F

import xentc.torch as xt

REDUCTIONS = ["mean", "sum", "none"]


def problem(dtype, n=48, d=24, c=300, soft=False, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_(True)
    w = (torch.randn(c, d, generator=g, dtype=dtype) / math.sqrt(d)).requires_grad_(True)
    b = torch.randn(c, generator=g, dtype=dtype).requires_grad_(True) if bias else None
    if soft:
        t = torch.softmax(torch.randn(n, c, generator=g, dtype=dtype), dim=1)
    else:
        t = torch.randint(0, c, (n,), generator=g)
        t[::5] = -100
    return h, w, b, t


def grads(loss, tensors, seed=1):
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(loss.shape, generator=g, dtype=loss.dtype)
    wanted = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, wanted, go)


TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"label_smoothing": 0.1},
        {"weight": "w", "ignore_index": 7},
        {"soft": True},
        {"bias": False, "label_smoothing": 0.05, "weight": "w"},
    ],
    ids=["plain", "smoothing", "weight-ignore7", "probabilities", "no-bias"],
)
def test_matches_torch_linear_cross_entropy(dtype, reduction, kw):
    kw = dict(kw)
    h, w, b, t = problem(dtype, soft=kw.pop("soft", False), bias=kw.pop("bias", True))
    if kw.get("weight") == "w":
        kw["weight"] = torch.rand(w.shape[0], dtype=dtype) + 0.5
    if kw.get("ignore_index") == 7:
        t[t == -100] = 7
    case = f"dtype={dtype} reduction={reduction} options={kw}"
    got = xt.linear_cross_entropy(h, w, t, linear_bias=b, reduction=reduction, **kw)
    want = F.linear_cross_entropy(h, w, t, linear_bias=b, reduction=reduction, **kw)
    torch.testing.assert_close(got, want, **TOL[dtype], msg=case)
    for name, a, e in zip(
        ("input", "linear_weight", "linear_bias"), grads(got, (h, w, b)), grads(want, (h, w, b))
    ):
        scale = max(float(e.abs().max()), 1e-30)
        torch.testing.assert_close(
            a, e, rtol=0, atol=TOL[dtype]["rtol"] * 10 * scale, msg=f"{case}: grad of {name}"
        )


@pytest.mark.parametrize(
    "kw", [{"z_loss": 1e-3}, {"softcap": 5.0, "logit_scale": 0.8}], ids=["z_loss", "softcap"]
)
def test_xentc_options_match_the_unfused_adapter(kw):
    h, w, b, t = problem(torch.float64)
    got = xt.linear_cross_entropy(h, w, t, linear_bias=b, **kw)
    want = xt.cross_entropy(F.linear(h, w, b), t, **kw)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, e in zip(grads(got, (h, w, b)), grads(want, (h, w, b))):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_gradcheck_float64():
    h, w, b, t = problem(torch.float64, n=6, d=5, c=9)
    t[0] = -100
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, m, v, r=reduction: xt.linear_cross_entropy(
                a, m, t, linear_bias=v, reduction=r, label_smoothing=0.1
            ),
            (h, w, b),
            check_batched_grad=False,
        )


def test_second_derivative_raises_rather_than_lies():
    h, w, b, t = problem(torch.float64, n=6, d=5, c=9)
    loss = xt.linear_cross_entropy(h, w, t, linear_bias=b)
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.autograd.grad(loss, h, create_graph=True)


def test_16_bit_close_to_float32():
    h, w, b, t = problem(torch.float32)
    want = F.linear_cross_entropy(h, w, t, linear_bias=b)
    for dtype in (torch.bfloat16, torch.float16):
        h16, w16, b16 = (x.detach().to(dtype).requires_grad_(True) for x in (h, w, b))
        got = xt.linear_cross_entropy(h16, w16, t, linear_bias=b16)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=0, msg=str(dtype))
        got.backward()
        assert h16.grad.dtype == dtype and w16.grad.dtype == dtype and b16.grad.dtype == dtype


def test_small_language_model_trains_the_same_way():
    # An embedding and a linear head, 25 SGD steps from the same start: the loss curves of
    # torch's reference path and xentc's fused one agree step by step (float64).
    def train(loss_fn):
        torch.manual_seed(0)
        embed = torch.nn.Embedding(64, 16, dtype=torch.float64)
        head = torch.nn.Linear(16, 64, dtype=torch.float64)
        opt = torch.optim.SGD([*embed.parameters(), *head.parameters()], lr=0.5)
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, 64, (8, 33), generator=g)
        curve = []
        for _ in range(25):
            hidden = embed(tokens[:, :-1]).reshape(-1, 16)
            loss = loss_fn(hidden, head.weight, tokens[:, 1:].reshape(-1), linear_bias=head.bias)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        return curve

    ours, theirs = train(xt.linear_cross_entropy), train(F.linear_cross_entropy)
    assert theirs[-1] < theirs[0] - 0.1, "the model must learn for the comparison to mean much"
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert math.isclose(a, b, rel_tol=1e-9), f"step {step}: xentc {a}, torch {b}"


def test_torch_options_argument_accepted():
    h, w, b, t = problem(torch.float32)
    got = xt.linear_cross_entropy(
        h, w, t, linear_bias=b, options=torch.nn.LinearCrossEntropyOptions()
    )
    torch.testing.assert_close(
        got, F.linear_cross_entropy(h, w, t, linear_bias=b), rtol=2e-5, atol=2e-6
    )


def test_errors_are_torch_types():
    h, w, _, t = problem(torch.float32)
    with pytest.raises(IndexError):
        xt.linear_cross_entropy(h, w, torch.full_like(t, w.shape[0]))
    with pytest.raises(RuntimeError, match="input must have shape"):
        xt.linear_cross_entropy(h.detach().reshape(4, 12, -1), w, t)
    with pytest.raises(RuntimeError, match="weight must not require grad"):
        xt.linear_cross_entropy(h, w, t, weight=torch.ones(w.shape[0], requires_grad=True))
    with pytest.raises(TypeError):
        xt.linear_cross_entropy(h, w.detach().double(), t)

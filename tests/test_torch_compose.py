"""xentc.torch composes with the rest of PyTorch as F.cross_entropy does (issues 15 and 16).

(a) Double backward (create_graph=True) equals F.cross_entropy's for every option, gradgradcheck in
    float64, a gradient-penalty training step; the first-order backward stays on the fused kernel.
(b) torch.func: vmap over per-sample losses, grad, jacrev, functional_call; gradcheck with
    check_batched_grad=True.
(c) torch.compile(fullgraph=True): no graph break, the same loss and gradients as eager.
(d) Errors are instances of the exception type torch raises for the same mistake.
(e) Extra outputs: return_z_loss, return_lse, the gradient with respect to probability targets.
(f) inplace_backward=True refuses, before writing, storage other data lives in.
(g) Empty inputs: N = 0 and spatial dims of 0, forward and backward, as torch.
The oracle is F.cross_entropy in float64 (z-loss and the logit transform added as their
definitions read); xentc computes in float64 too here, so most comparisons are at 1e-12.
"""

import zlib

import pytest

torch = pytest.importorskip(
    "torch",
    reason="xentc.torch needs torch; install it (CI uses the CPU wheel torch==2.13.0) to run the "
    "adapter's tests",
)
import torch.nn.functional as F

xt = pytest.importorskip("xentc.torch", reason="xentc is not importable; build and install it")
import xentc

REDUCTIONS = ["mean", "sum", "none"]

# inductor's CPU backend and torch.func's forward-mode decompositions still call torch.jit.script
# internally (torch 2.13), which warns
_INDUCTOR_WARNING = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"
)


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _seed(*key):
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def _torch_loss(x, target, *, z_loss=0.0, softcap=None, logit_scale=1.0, **kw):
    """F.cross_entropy of the transformed logits plus the z-loss as the spec defines it: the
    oracle, differentiable to any order."""
    u = x * logit_scale
    if softcap is not None:
        u = softcap * torch.tanh(u / softcap)
    loss = F.cross_entropy(u, target, **kw)
    if not z_loss:
        return loss
    red = kw.get("reduction", "mean")
    lse = torch.logsumexp(u, dim=1 if u.ndim > 1 else 0)
    if target.is_floating_point():
        row_w = torch.ones_like(lse)
    else:
        counted = target != kw.get("ignore_index", -100)
        w = kw.get("weight")
        wy = w[torch.where(counted, target, 0)] if w is not None else torch.ones_like(lse)
        row_w = torch.where(counted, wy, torch.zeros_like(wy))
    zl = z_loss * row_w * lse**2
    if red == "none":
        return loss + zl
    return loss + (zl.sum() if red == "sum" else zl.sum() / row_w.sum())


OPTIONS = {
    "plain": {},
    "weight": {"weight": "w"},
    "ignore_index": {"ignore_index": 1},
    "smoothing": {"label_smoothing": 0.2},
    "weight-smoothing-ignore": {"weight": "w", "label_smoothing": 0.15, "ignore_index": 2},
    "z_loss": {"z_loss": 0.05},
    "softcap": {"softcap": 2.5},
    "logit_scale": {"logit_scale": 0.6},
    "all": {
        "weight": "w",
        "label_smoothing": 0.1,
        "z_loss": 0.02,
        "ignore_index": 0,
        "softcap": 3.0,
        "logit_scale": 1.4,
    },
}


def _case(shape, kind, name, reduction, requires_grad=True):
    """(x, target, options) in float64; every fourth index target is ignore_index."""
    gen = _seed(shape, kind, name, reduction)
    c = shape[1] if len(shape) > 1 else shape[0]
    opts = dict(OPTIONS[name], reduction=reduction)
    if opts.get("weight") == "w":
        opts["weight"] = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2).requires_grad_(requires_grad)
    if kind == "prob":
        opts.pop("ignore_index", None)  # torch refuses a non-negative one with probabilities
        p = torch.rand(shape, generator=gen, dtype=torch.float64) ** 2
        return x, p / p.sum(dim=1 if len(shape) > 1 else 0, keepdim=True), opts
    lead = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, c, lead, generator=gen)
    ii = opts.get("ignore_index")
    if ii is not None and t.numel() > 2:
        t.view(-1)[::4] = ii
        t.view(-1)[1] = (ii + 1) % c
    return x, t, opts


SHAPES = [(6, 5), (2, 4, 3), (5,)]
SHAPE_IDS = ["NC", "NCd", "C"]


# ---- (a) double backward -----------------------------------------------------------------------


def _penalty_grads(fn, x0, target, opts, gen_key):
    """A gradient penalty: g = d loss / dx (create_graph), then d(loss + sum(v * g) + |g|^2)/dx.
    Returns (g, the second gradient)."""
    x = x0.detach().clone().requires_grad_(True)
    loss = fn(x, target, **opts)
    gen = _seed(gen_key)
    go = torch.randn(loss.shape, generator=gen, dtype=torch.float64)
    (g,) = torch.autograd.grad(loss, x, go, create_graph=True)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ((loss * go).sum() + (v * g).sum() + (g**2).sum()).backward()
    return g.detach(), x.grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_double_backward_matches_torch(shape, kind, name, reduction):
    # Fails on the old adapter: once_differentiable left the penalty's second-order term out
    # (differences up to 0.28 in float64) or raised.
    x, target, opts = _case(shape, kind, name, reduction)
    key = (shape, kind, name, reduction)
    g, gg = _penalty_grads(xt.cross_entropy, x, target, opts, key)
    ref_g, ref_gg = _penalty_grads(_torch_loss, x, target, opts, key)
    msg = f"shape {shape}, {kind} targets, options {opts}"
    torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12, msg=msg)
    torch.testing.assert_close(gg, ref_gg, rtol=1e-10, atol=1e-12, msg=msg)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["plain", "weight-smoothing-ignore", "all"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_gradgradcheck(kind, name, reduction):
    x, target, opts = _case((4, 5), kind, name, reduction)
    fn = lambda z: xt.cross_entropy(z, target, **opts)
    assert torch.autograd.gradgradcheck(fn, (x,), check_batched_grad=True)


def test_hessian_vector_product_matches_torch():
    x, target, opts = _case((8, 11), "index", "all", "mean")
    v = torch.randn(x.shape, generator=_seed("hvp"), dtype=torch.float64)
    ours = torch.autograd.functional.hvp(lambda z: xt.cross_entropy(z, target, **opts), x, v)[1]
    ref = torch.autograd.functional.hvp(lambda z: _torch_loss(z, target, **opts), x, v)[1]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def _penalty_training(loss_fn, steps=20):
    """A small classifier trained with loss + 0.5 |d loss / d logits|^2 (SGD)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 7))
    model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = _seed("penalty-data")
    x = torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (64,), generator=gen)
    y[::9] = -100
    losses = []
    for _ in range(steps):
        logits = model(x)
        loss = loss_fn(logits, y, label_smoothing=0.1)
        (g,) = torch.autograd.grad(loss, logits, create_graph=True)
        total = loss + 0.5 * (g**2).sum() * 64
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    return losses, [p.detach().clone() for p in model.parameters()]


def test_gradient_penalty_training_matches_torch():
    ours, ours_params = _penalty_training(xt.cross_entropy)
    theirs, their_params = _penalty_training(F.cross_entropy)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-10, atol=0)
    for a, b in zip(ours_params, their_params):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_double_backward_16_bit(dtype):
    # the differentiable path computes in float32 and hands the gradient back in the input's dtype
    x, target, opts = _case((6, 9), "index", "all", "mean")
    x16 = x.detach().to(dtype).requires_grad_(True)
    key = ("16-bit", str(dtype))
    g, gg = _penalty_grads(xt.cross_entropy, x16, target, opts, key)
    ref_g, ref_gg = _penalty_grads(_torch_loss, x16.detach().double(), target, opts, key)
    assert g.dtype == dtype
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    torch.testing.assert_close(g.double(), ref_g, rtol=2 * ulp, atol=1e-3)
    torch.testing.assert_close(gg.double(), ref_gg, rtol=4 * ulp, atol=1e-2)


def test_autocast_and_inference_mode():
    # under CPU autocast the projection's logits are bfloat16; the loss comes back in float32
    lin = torch.nn.Linear(8, 11)
    gen = _seed("autocast")
    feats, y = torch.randn(6, 8, generator=gen), torch.randint(0, 11, (6,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = xt.cross_entropy(lin(feats), y), F.cross_entropy(lin(feats), y)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    ours.backward()
    assert lin.weight.grad is not None and lin.weight.grad.dtype == torch.float32
    with torch.inference_mode():
        y8 = y % 8
        torch.testing.assert_close(xt.cross_entropy(feats, y8), F.cross_entropy(feats, y8))


def test_first_order_backward_stays_fused(monkeypatch):
    # The plain backward runs the kernel's backward mode (from the kept lse), the differentiable
    # path only when create_graph asks for it.
    calls = []
    real = xentc.cross_entropy_grad
    monkeypatch.setattr(
        xentc, "cross_entropy_grad", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x, target, opts = _case((6, 5), "index", "all", "mean")
    xt.cross_entropy(x, target, **opts).backward()
    assert calls == [1], "first-order backward did not use the fused kernel"
    torch.autograd.grad(xt.cross_entropy(x, target, **opts), x, create_graph=True)
    assert calls == [1], "create_graph=True should take the differentiable path"


# ---- (b) torch.func ------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["plain", "weight-smoothing-ignore", "all"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_gradcheck_batched_grad(kind, name, reduction):
    # Fails on the old adapter: "Batching rule not implemented for aten::item".
    x, target, opts = _case((4, 5), kind, name, reduction)
    fn = lambda z: xt.cross_entropy(z, target, **opts)
    assert torch.autograd.gradcheck(fn, (x,), check_batched_grad=True)


@pytest.mark.parametrize("name", ["plain", "weight-smoothing-ignore", "all"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_vmap_per_sample_loss(kind, name):
    # a batch of 5 samples, each a (T=3, C=6) sequence: vmap over the per-sample mean loss
    x, target, opts = _case((15, 6), kind, name, "mean", requires_grad=False)
    xs, ts = x.view(5, 3, 6), target.view(5, 3, *target.shape[1:]).clone()
    if kind == "index":
        ts[:, 1] = 4  # no sample with every row ignored (its mean is nan, its gradient 0)
    ours = torch.func.vmap(lambda a, b: xt.cross_entropy(a, b, **opts))(xs, ts)
    ref = torch.stack([_torch_loss(a, b, **opts) for a, b in zip(xs, ts)])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-13)
    # per-sample gradients: vmap(grad)
    ours_g = torch.func.vmap(torch.func.grad(lambda a, b: xt.cross_entropy(a, b, **opts)))(xs, ts)
    ref_g = torch.func.vmap(torch.func.grad(lambda a, b: _torch_loss(a, b, **opts)))(xs, ts)
    torch.testing.assert_close(ours_g, ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_func_grad_and_jacrev(reduction):
    x, target, opts = _case((4, 6), "index", "all", reduction, requires_grad=False)
    ours = torch.func.jacrev(lambda z: xt.cross_entropy(z, target, **opts))(x)
    ref = torch.func.jacrev(lambda z: _torch_loss(z, target, **opts))(x)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    if reduction != "none":
        ours = torch.func.grad(lambda z: xt.cross_entropy(z, target, **opts))(x)
        ref = torch.func.grad(lambda z: _torch_loss(z, target, **opts))(x)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@_INDUCTOR_WARNING
def test_forward_mode_jvp_hessian():
    # forward-mode AD (dual tensors, torch.func.jvp) and the Hessian (jacfwd over jacrev).
    # Fails on the old adapter: a dual tensor's tangent was silently dropped (None).
    import torch.autograd.forward_ad as fwAD

    x, target, opts = _case((4, 5), "index", "all", "mean", requires_grad=False)
    v = torch.randn(x.shape, generator=_seed("jvp"), dtype=torch.float64)
    ours = lambda z: xt.cross_entropy(z, target, **opts)
    ref = lambda z: _torch_loss(z, target, **opts)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ours(fwAD.make_dual(x, v))).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, torch.func.jvp(ref, (x,), (v,))[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.func.jvp(ours, (x,), (v,))[1], tangent, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.func.hessian(ours)(x), torch.func.hessian(ref)(x), rtol=1e-10, atol=1e-12
    )


def test_functional_call_per_sample_gradients():
    # the torch.func recipe for per-sample gradients of a model's parameters
    torch.manual_seed(1)
    model = torch.nn.Linear(8, 5).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = _seed("functional_call")
    x = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=gen)

    def per_sample(loss_fn):
        def loss_of(p, xi, yi):
            logits = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
            return loss_fn(logits, yi.unsqueeze(0), label_smoothing=0.1)

        return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, x, y)

    ours, ref = per_sample(xt.cross_entropy), per_sample(F.cross_entropy)
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-10, atol=1e-12, msg=k)


# ---- (c) torch.compile ---------------------------------------------------------------------------


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@_INDUCTOR_WARNING
@pytest.mark.parametrize("name", ["plain", "ignore_index", "weight-smoothing-ignore", "all"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_compile_training_step_matches_eager(name, reduction, fresh_dynamo):
    torch.manual_seed(2)
    c = 9
    lin = torch.nn.Linear(12, c).double()
    _, target, opts = _case((4 * 5, c), "index", name, reduction, requires_grad=False)
    feats = torch.randn(4, 5, 12, generator=_seed("compile-feats"), dtype=torch.float64)

    def step(f, t):
        logits = lin(f).view(-1, c)  # a language model's call: logits.view(-1, V)
        loss = xt.cross_entropy(logits, t, **opts)
        return loss.sum() if reduction == "none" else loss

    explanation = torch._dynamo.explain(step)(feats, target)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (compiled, step):
        lin.zero_grad()
        loss = fn(feats, target)
        loss.backward()
        results.append((loss.detach(), lin.weight.grad.clone(), lin.bias.grad.clone()))
    msg = f"options {opts}"
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=msg)
    lin.zero_grad()
    ref = _torch_loss(lin(feats).view(-1, c), target, **opts)
    torch.testing.assert_close(
        results[0][0], ref.sum() if reduction == "none" else ref, rtol=1e-12, atol=1e-13, msg=msg
    )


@_INDUCTOR_WARNING
def test_compile_probability_targets_and_module(fresh_dynamo):
    x, p, opts = _case((7, 6), "prob", "all", "mean")
    mod = xt.CrossEntropyLoss(**{k: v for k, v in opts.items() if k != "reduction"})
    compiled = torch.compile(mod, fullgraph=True)
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    compiled(a, p).backward()
    mod(b, p).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-13)


@_INDUCTOR_WARNING
def test_compile_dynamic_shapes_extras_inplace_and_target_gradient(fresh_dynamo):
    # dynamic batch sizes (one graph), the extra outputs, inplace_backward (made out-of-place
    # under compile: docs/torch.md) and a probability target that requires grad
    def step(z, t, p):
        loss, z_loss, lse = xt.cross_entropy(
            z * 2.0,
            t,
            label_smoothing=0.1,
            z_loss=1e-2,
            inplace_backward=True,
            return_z_loss=True,
            return_lse=True,
        )
        soft = xt.cross_entropy(z.transpose(1, 2), p, label_smoothing=0.1)
        return loss + soft, z_loss, lse

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for n in (3, 5, 8):
        gen = _seed("dynamic", n)
        x = torch.randn(n, 4, 6, generator=gen, dtype=torch.float64)
        t = torch.randint(0, 4, (n, 6), generator=gen)
        p = torch.rand(n, 6, 4, generator=gen, dtype=torch.float64).softmax(-1)
        results = []
        for fn in (compiled, step):
            a, b = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
            loss, z_loss, lse = fn(a, t, b)
            loss.backward()
            results.append((loss.detach(), z_loss, lse, a.grad, b.grad))
        for u, v in zip(*results):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-13, msg=f"n={n}")


@_INDUCTOR_WARNING
def test_compile_uses_the_fused_backward(monkeypatch, fresh_dynamo):
    calls = []
    real = xentc.cross_entropy_grad
    monkeypatch.setattr(
        xentc, "cross_entropy_grad", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x, target, opts = _case((6, 5), "index", "weight-smoothing-ignore", "mean")
    torch.compile(lambda z: xt.cross_entropy(z, target, **opts), fullgraph=True)(x).backward()
    assert calls == [1]


# ---- (d) errors of torch's types -----------------------------------------------------------------

ERRORS = {
    # case: (call arguments, the type torch raises, the type xentc's NumPy API raises)
    "index out of range": ((torch.randn(3, 4), torch.tensor([0, 1, 9])), {}, IndexError),
    "negative index": ((torch.randn(3, 4), torch.tensor([0, -5, 1])), {}, IndexError),
    "batch size": ((torch.randn(3, 4), torch.tensor([0, 1])), {}, ValueError),
    "spatial size": ((torch.randn(2, 4, 3), torch.zeros(2, 5, dtype=torch.long)), {}, RuntimeError),
    "reduction": ((torch.randn(3, 4), torch.tensor([0, 1, 2])), {"reduction": "avg"}, ValueError),
    "label_smoothing": (
        (torch.randn(3, 4), torch.tensor([0, 1, 2])),
        {"label_smoothing": 1.5},
        RuntimeError,
    ),
    "prob ignore_index": ((torch.randn(3, 4), torch.rand(3, 4)), {"ignore_index": 0}, RuntimeError),
    "weight length": (
        (torch.randn(3, 4), torch.tensor([0, 1, 2])),
        {"weight": torch.ones(5)},
        RuntimeError,
    ),
    "integer input": ((torch.randint(0, 3, (3, 4)), torch.tensor([0, 1, 2])), {}, RuntimeError),
    "prob shape": ((torch.randn(3, 4), torch.rand(3, 5)), {}, RuntimeError),
    "integer one-hot": ((torch.randn(3, 4), torch.zeros(3, 4, dtype=torch.long)), {}, RuntimeError),
}
NUMPY_TYPE = {"integer input": TypeError}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_torch_types(case):
    # Fails on the old adapter: ValueError where torch raises RuntimeError or IndexError, and
    # probability targets with ignore_index=0 were accepted.
    args, kwargs, torch_type = ERRORS[case]
    with pytest.raises(torch_type) as theirs:
        F.cross_entropy(*args, **kwargs)
    with pytest.raises(torch_type) as ours:
        xt.cross_entropy(*args, **kwargs)
    assert isinstance(ours.value, NUMPY_TYPE.get(case, ValueError)), (case, ours.value)
    assert isinstance(theirs.value, torch_type)


def test_probability_targets_negative_ignore_index_accepted_as_torch():
    x, p = torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        xt.cross_entropy(x, p, ignore_index=-1),
        F.cross_entropy(x, p, ignore_index=-1),
        rtol=1e-12,
        atol=0,
    )


# ---- (e) extra outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_return_z_loss_and_lse(kind, reduction):
    x, target, opts = _case((2, 6, 3), kind, "all", reduction)
    loss, z_loss, lse = xt.cross_entropy(x, target, **opts, return_z_loss=True, return_lse=True)
    u = opts["softcap"] * torch.tanh(x * opts["logit_scale"] / opts["softcap"])
    ref_lse = torch.logsumexp(u, dim=1)
    torch.testing.assert_close(lse, ref_lse.detach(), rtol=1e-12, atol=0)
    without = dict(opts, z_loss=0.0)
    ref_z = _torch_loss(x, target, **opts) - _torch_loss(x, target, **without)
    torch.testing.assert_close(z_loss, ref_z.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss, _torch_loss(x, target, **opts), rtol=1e-12, atol=1e-13)
    assert not z_loss.requires_grad and not lse.requires_grad
    only_z = xt.cross_entropy(x, target, **opts, return_z_loss=True)
    assert isinstance(only_z, tuple) and len(only_z) == 2
    only_lse = xt.cross_entropy(x, target, **opts, return_lse=True)
    torch.testing.assert_close(only_lse[1], lse, rtol=0, atol=0)


def test_return_z_loss_and_lse_under_vmap():
    x, target, opts = _case((4, 3, 6), "index", "all", "mean", requires_grad=False)
    opts.pop("ignore_index")  # no sample with every row ignored

    def per_sample(a, b):
        return xt.cross_entropy(a, b, **opts, return_z_loss=True, return_lse=True)

    loss, z_loss, lse = torch.func.vmap(per_sample)(x.transpose(1, 2), target)
    for k in range(4):
        ref = xt.cross_entropy(x[k].t(), target[k], **opts, return_z_loss=True, return_lse=True)
        for a, b in zip((loss[k], z_loss[k], lse[k]), ref):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-13)


def test_return_lse_float32_and_half():
    x = torch.randn(5, 7).to(torch.bfloat16)
    y = torch.randint(0, 7, (5,))
    _, lse = xt.cross_entropy(x, y, return_lse=True)
    assert lse.dtype == torch.float32
    torch.testing.assert_close(lse, torch.logsumexp(x.float(), dim=1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["plain", "weight", "smoothing", "all"])
def test_probability_target_gradient_matches_torch(name, reduction):
    # Fails on the old adapter: a target that requires grad was refused.
    x, p, opts = _case((5, 6), "prob", name, reduction)
    p = p.requires_grad_(True)
    go = torch.randn(
        5 if reduction == "none" else (), generator=_seed(name, reduction), dtype=torch.float64
    )
    gx, gp = torch.autograd.grad(xt.cross_entropy(x, p, **opts), (x, p), go)
    rx, rp = torch.autograd.grad(_torch_loss(x, p, **opts), (x, p), go)
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gp, rp, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b: xt.cross_entropy(a, b, **opts), (x, p), check_batched_grad=True
    )


# ---- (f) inplace_backward refusals ---------------------------------------------------------------

_REFUSED = {
    "leaf": lambda p: p.detach().clone().requires_grad_(True),
    "parameter": lambda p: p,
    "view of a parameter": lambda p: p.view(2, 3, 7)[1],
    "reshape of a parameter": lambda p: p.reshape(6, 7)[::2],
    "output saved by its producer (exp)": lambda p: torch.exp(p * 1.0),
    "output saved by its producer (sigmoid)": lambda p: torch.sigmoid(p * 1.0),
    "view of a saved output": lambda p: torch.exp(p * 1.0).view(2, 3, 7)[0],
    "expanded": lambda p: (p[:1] * 1.0).expand(6, 7),
}


@pytest.mark.parametrize("case", sorted(_REFUSED))
def test_inplace_backward_refuses_before_writing(case):
    # Fails on the old adapter: a leaf, a Parameter or a view of one was overwritten with its
    # gradient (issue 15, item 2).
    param = torch.nn.Parameter(torch.randn(6, 7, generator=_seed("inplace")))
    before = param.detach().clone()
    x = _REFUSED[case](param)
    x_before = x.detach().clone()
    y = torch.randint(0, 7, x.shape[:1], generator=_seed("inplace-y"))
    with pytest.raises(RuntimeError, match="inplace_backward=True") as info:
        xt.cross_entropy(x, y, inplace_backward=True)
    assert isinstance(info.value, ValueError)
    assert torch.equal(param.detach(), before), f"{case}: the parameter was written"
    assert torch.equal(x.detach(), x_before), f"{case}: the input was written"
    assert param.grad is None


def test_inplace_backward_sibling_saved_before_is_caught_by_autograd():
    # Logits another op saved for its backward before our call: our backward runs first and
    # overwrites them; autograd's version counter then refuses the other backward. The leaf
    # upstream is untouched and gets no gradient.
    leaf = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    before = leaf.detach().clone()
    z = leaf * 2.0
    other = (z**2).sum()
    loss = xt.cross_entropy(z, torch.arange(5), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()
    assert torch.equal(leaf.detach(), before) and leaf.grad is None


def test_inplace_backward_sibling_saved_after_is_correct():
    # An op recorded after ours runs its backward first and reads the logits intact.
    base = torch.randn(5, 8, dtype=torch.float64)
    y = torch.arange(5)
    leaf = base.clone().requires_grad_(True)
    z = leaf * 2.0
    loss = xt.cross_entropy(z, y, inplace_backward=True)
    (loss + (z**2).sum()).backward()
    ref = base.clone().requires_grad_(True)
    zr = ref * 2.0
    (F.cross_entropy(zr, y) + (zr**2).sum()).backward()
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-12, atol=1e-13)


def test_inplace_backward_with_create_graph_is_not_in_place():
    # the differentiable path never writes the input: double backward stays right
    x, target, opts = _case((6, 5), "index", "all", "mean")
    z = x * 1.0
    z_before = z.detach().clone()
    (g,) = torch.autograd.grad(
        xt.cross_entropy(z, target, **opts, inplace_backward=True), x, create_graph=True
    )
    (ref,) = torch.autograd.grad(_torch_loss(x, target, **opts), x, create_graph=True)
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(z.detach(), z_before)


# ---- (g) empty inputs ----------------------------------------------------------------------------

EMPTY_SHAPES = [(0, 5), (0, 5, 3), (2, 5, 0), (3, 5, 0, 2), (0, 5, 0)]


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_empty_inputs_as_torch(shape, kind, reduction, inplace):
    leaf = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x = leaf * 1.0
    if kind == "index":
        target = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    else:
        target = torch.rand(shape, dtype=torch.float64)
    loss = xt.cross_entropy(
        x, target, reduction=reduction, label_smoothing=0.1, inplace_backward=inplace
    )
    ref_leaf = leaf.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(ref_leaf, target, reduction=reduction, label_smoothing=0.1)
    msg = f"shape {shape}, {kind}, {reduction}"
    assert loss.shape == ref.shape and loss.dtype == ref.dtype, msg
    torch.testing.assert_close(loss, ref.detach(), equal_nan=True, msg=msg)  # nan, 0.0, empty
    loss.sum().backward()
    ref.sum().backward()
    assert leaf.grad.shape == shape and leaf.grad.numel() == 0, msg


def test_empty_language_model_batch():
    # (B, T=0, V) logits from an empty sequence batch, called both ways
    logits = torch.randn(4, 0, 11, requires_grad=True)
    y = torch.zeros(4, 0, dtype=torch.long)
    for x, t in ((logits.view(-1, 11), y.view(-1)), (logits.transpose(1, 2), y)):
        loss = xt.cross_entropy(x, t)
        assert loss.isnan()
        loss.backward()
        assert logits.grad.shape == logits.shape
        assert xt.cross_entropy(x, t, reduction="sum").item() == 0.0

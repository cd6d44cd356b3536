"""xentc.torch: a drop-in for torch.nn.functional.cross_entropy on CPU tensors.

    from xentc.torch import cross_entropy  # was: from torch.nn.functional import cross_entropy
    loss = cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
    loss.backward()

Same signature and layout as torch's (classes on dim 1: input (C,), (N, C) or (N, C, d1, ...);
class-index or class-probability targets), plus xentc's options: z_loss, softcap, logit_scale,
inplace_backward, and the extra outputs return_z_loss / return_lse. User guide: docs/torch.md.

How it runs. The loss is the custom operator `xentc::cross_entropy` (torch.library.custom_op),
so torch.compile sees one opaque node with a fake implementation (shapes only) and an autograd
formula, and traces a training step around it without a graph break. The operator runs xentc's
kernels on `Tensor.numpy()` views of the tensors (no copy, whatever the strides: the class dim is
moved last with movedim, a view) and keeps each row's log-sum-exp in float64 (n_rows floats, not
an N x C softmax).

The backward has two paths, chosen when it runs:
- first order (the usual `loss.backward()`; grad mode is off inside a backward unless
  create_graph=True): the operator `xentc::cross_entropy_backward` writes the gradient in one
  pass over the logits from the kept lse (the kernel's backward mode, src_c/xc_api.h), scaled by
  grad_output. inplace_backward=True writes it over the input's own storage (flash-attn's option
  of the same name).
- differentiable (create_graph=True, a batched grad_output as gradcheck's check_batched_grad and
  torch.func send, or probability targets that require grad): the gradient written out in closed
  form with torch operations (_grads_torch), so autograd differentiates it again (double
  backward, Hessian-vector products) and vmap batches it. It costs a few N x C temporaries, paid
  only when a second derivative or a target gradient is asked for.
Under torch.func transforms (vmap, grad, jacrev over the inputs) the loss itself is computed by
the same closed form in torch operations (_loss_rows_torch): the kernels read memory through
NumPy and cannot see a batched or wrapped tensor.

Nothing here is compiled against PyTorch: `import xentc` never imports torch; this module does.
The kernels run with torch.get_num_threads() threads. CPU tensors only. float16 / bfloat16
inputs go to the kernels as np.float16 / ml_dtypes.bfloat16 views; their gradient comes back in
the input's dtype and their loss in float32 (as autocast computes a cross-entropy in float32).
Errors are instances of both xentc's documented type and the type torch raises for the same
mistake (CrossEntropyError and friends below).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch

import xentc
from xentc._typing import LossLse

__all__ = [
    "cross_entropy",
    "CrossEntropyLoss",
    "linear_cross_entropy",
    "CrossEntropyError",
    "CrossEntropyIndexError",
    "CrossEntropyTypeError",
]

_HALF = (torch.float16, torch.bfloat16)


# ---- errors: xentc's type and torch's at once ---------------------------------------------------


class CrossEntropyError(ValueError, RuntimeError):
    """A bad argument: a ValueError (the NumPy API's contract) that is also the RuntimeError torch
    raises for most cross-entropy mistakes (torch itself raises ValueError for some: both are
    caught)."""


class CrossEntropyIndexError(IndexError, CrossEntropyError):
    """A class index outside [0, C) that is not ignore_index: torch raises IndexError."""


class CrossEntropyTypeError(TypeError, RuntimeError):
    """A tensor of a dtype the loss cannot take: xentc's TypeError, torch's RuntimeError."""


def _torch_type(exc, target, n_classes, ignore_index):
    """xentc's exception re-raised as the matching CrossEntropy*Error (same message)."""
    if isinstance(exc, TypeError):
        return CrossEntropyTypeError(str(exc))
    if (
        not target.is_floating_point()
        and target.numel()
        and bool(((target != ignore_index) & ((target < 0) | (target >= n_classes))).any())
    ):
        return CrossEntropyIndexError(str(exc))
    return CrossEntropyError(str(exc))


# ---- tensors <-> ndarrays -----------------------------------------------------------------------


def _numpy_view(t, name):
    """`t` (a CPU tensor of any strides) as an ndarray sharing its memory."""
    t = t.detach()
    if t.is_neg():
        t = t.resolve_neg()  # a lazily negated view (torch's neg bit): NumPy cannot see the bit
    if t.dtype == torch.bfloat16:
        # NumPy has no bfloat16: the bits go through int16 and come out as ml_dtypes' type.
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return t.numpy()
    except (TypeError, RuntimeError) as exc:
        raise CrossEntropyTypeError(
            f"{name} must be a tensor NumPy can view (float, integer); got {t.dtype}: {exc}"
        ) from None


def _from_numpy(a, dtype):
    """An ndarray of the kernels as a tensor of `dtype`, sharing its memory."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _class_last(t, ndim):
    """A tensor in torch's layout (classes on dim 1, or dim 0 of a 1-D input) with the classes
    moved last: a view."""
    return t.movedim(1, -1) if ndim >= 2 else t


def _class_last_back(t, ndim):
    return t.movedim(-1, 1) if ndim >= 2 else t


def _lead_shape(shape):
    """The loss's shape for reduction='none': the input's without the class dim."""
    return tuple(shape[:1]) + tuple(shape[2:]) if len(shape) >= 2 else ()


def _loss_dtype(dtype):
    return torch.float32 if dtype in _HALF else dtype


def _kernel_args(input, target, weight):
    logits = _numpy_view(_class_last(input, input.ndim), "input")
    soft = target.is_floating_point()
    tgt = _numpy_view(_class_last(target, target.ndim) if soft else target, "target")
    w = None if weight is None else _numpy_view(weight, "weight")
    return logits, tgt, w


def _options(ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale):
    return {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "logit_scale": logit_scale,
    }


def _n_rows(input):
    return math.prod(_lead_shape(input.shape))


# ---- the operators -------------------------------------------------------------------------------
# One schema for both: (input, target, weight, then the scalar options). The loss operator returns
# (loss, lse): lse is float64, of the loss's 'none' shape, kept for the backward and for
# return_lse / return_z_loss.


@torch.library.custom_op("xentc::cross_entropy", mutates_args=())
def _xent_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    logit_scale: float,
    inplace_backward: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    opts = _options(ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale)
    lead = _lead_shape(input.shape)
    loss_dtype = _loss_dtype(input.dtype)
    if _n_rows(input) == 0 and input.shape[1 if input.ndim >= 2 else 0] > 0:
        # No rows (N == 0 or a spatial dim of 0): torch's results, mean of nothing is nan. The
        # kernels are not called; their NumPy contract is the other API's business.
        if reduction == "none":
            loss = torch.empty(lead, dtype=loss_dtype)
        else:
            loss = torch.tensor(math.nan if reduction == "mean" else 0.0, dtype=loss_dtype)
        return loss, torch.empty(lead, dtype=torch.float64)
    logits, tgt, w = _kernel_args(input, target, weight)
    try:
        loss_np, lse_np = cast(
            LossLse,
            xentc.cross_entropy(
                logits,
                tgt,
                weight=w,
                **opts,
                return_lse=True,
                lse_dtype=np.float64,
                n_threads=torch.get_num_threads(),
            ),
        )
    except (ValueError, TypeError) as exc:
        n_classes = input.shape[1 if input.ndim >= 2 else 0]
        raise _torch_type(exc, target, n_classes, ignore_index) from None
    lse = torch.from_numpy(lse_np)
    if reduction == "none":
        return torch.from_numpy(np.asarray(loss_np)).to(loss_dtype), lse
    return torch.tensor(loss_np, dtype=loss_dtype), lse


@_xent_op.register_fake
def _xent_fake(
    input,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    softcap,
    logit_scale,
    inplace_backward,
):
    lead = _lead_shape(input.shape)
    loss_shape = lead if reduction == "none" else ()
    return (
        input.new_empty(loss_shape, dtype=_loss_dtype(input.dtype)),
        input.new_empty(lead, dtype=torch.float64),
    )


def _grad_strides(shape):
    """The strides of the gradient the backward operator returns: C-contiguous with the classes
    last (as the kernel writes it), then the class dim moved back to dim 1."""
    last = list(shape[:1]) + list(shape[2:]) + list(shape[1:2]) if len(shape) >= 2 else list(shape)
    strides, step = [0] * len(last), 1
    for k in range(len(last) - 1, -1, -1):
        strides[k] = step
        step *= max(last[k], 1)
    if len(shape) >= 2:
        strides = strides[:1] + strides[-1:] + strides[1:-1]
    return tuple(strides)


@torch.library.custom_op("xentc::cross_entropy_backward", mutates_args=())
def _xent_backward_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    grad_loss: torch.Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    logit_scale: float,
) -> torch.Tensor:
    """d loss / d input times grad_loss, from the forward's float64 lse (first order only)."""
    if input.numel() == 0:
        return torch.empty_strided(input.shape, _grad_strides(input.shape), dtype=input.dtype)
    opts = _options(ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale)
    logits, tgt, w = _kernel_args(input, target, weight)
    go = _numpy_view(grad_loss, "grad_output") if reduction == "none" else float(grad_loss)
    g = xentc.cross_entropy_grad(
        logits,
        tgt,
        lse.numpy(),
        weight=w,
        **opts,
        grad_output=go,
        n_threads=torch.get_num_threads(),
    )
    return _class_last_back(_from_numpy(g, input.dtype), input.ndim)


@_xent_backward_op.register_fake
def _xent_backward_fake(
    input,
    target,
    weight,
    lse,
    grad_loss,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    softcap,
    logit_scale,
):
    return torch.empty_strided(
        input.shape, _grad_strides(input.shape), dtype=input.dtype, device=input.device
    )


def _setup_context(ctx, inputs, output):
    input, target, weight, *scalars = inputs
    ctx.save_for_backward(input, target, weight, output[1])
    ctx.scalars = scalars[:6]  # ignore_index ... logit_scale, the operators' order
    ctx.inplace_backward = scalars[6]
    ctx.mark_non_differentiable(output[1])


def _batched(t):
    """A tensor torch.func wraps (vmap's batched, grad's tracking): the kernels cannot read it."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _needs_torch_ops(t):
    """A tensor the operator cannot take: torch.func-wrapped, or a forward-mode AD dual tensor
    (the operator has no forward-mode formula; torch's operations do)."""
    return _batched(t) or torch.autograd.forward_ad.unpack_dual(t).tangent is not None


def _xent_autograd_backward(ctx, grad_loss, grad_lse):
    input, target, weight, lse = ctx.saved_tensors
    need_input, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    none = (None,) * (len(ctx.needs_input_grad) - 2)
    if not (need_input or need_target):
        return (None, None, *none)
    differentiable = (
        torch.is_grad_enabled()
        or need_target
        or (not torch.compiler.is_compiling() and _batched(grad_loss))
    )
    if differentiable:
        # create_graph=True, a batched grad_output, or a target gradient: the closed form in torch
        # operations, which autograd can differentiate again and vmap can batch.
        g_input, g_target = _grads_torch(
            input, target, weight, grad_loss, *ctx.scalars, need_target=need_target
        )
        return (g_input if need_input else None, g_target, *none)
    if ctx.inplace_backward and not torch.compiler.is_compiling():
        return (_inplace_grad(input, target, weight, lse, grad_loss, ctx.scalars), None, *none)
    g = _xent_backward_op(input, target, weight, lse, grad_loss, *ctx.scalars)
    return (g, None, *none)


_xent_op.register_autograd(_xent_autograd_backward, setup_context=_setup_context)


def _inplace_grad(input, target, weight, lse, grad_loss, scalars):
    """The first-order gradient written over the input's storage (checked at the call:
    _check_inplace)."""
    if input.numel() == 0:
        return input.detach()
    opts = _options(*scalars)
    logits, tgt, w = _kernel_args(input, target, weight)
    go = _numpy_view(grad_loss, "grad_output") if opts["reduction"] == "none" else float(grad_loss)
    xentc.cross_entropy_grad(
        logits,
        tgt,
        lse.numpy(),
        weight=w,
        **opts,
        grad_output=go,
        n_threads=torch.get_num_threads(),
        out=logits,
    )
    # The input now holds its gradient. An in-place op on an empty view of it bumps its version
    # counter, so any other op that saved these logits for its own backward raises autograd's
    # "modified by an inplace operation" instead of reading a gradient as logits.
    input.detach().narrow(0, 0, 0).zero_()
    return input.detach()


# ---- the closed form in torch operations ---------------------------------------------------------
# Rows r, classes j, with the classes last: u = softcap * tanh(s * z / softcap) (or u = s * z),
# lse_r = logsumexp_j u_rj, p = softmax(u), C classes, W = sum_j w_j (C without weights).
# Index targets y, counted rows m_r = [y_r != ignore_index], eps = label_smoothing:
#   loss_r = m_r [(1 - eps) w_y (lse_r - u_ry) + eps / C sum_j w_j (lse_r - u_rj)]
#            + zl m_r w_y lse_r^2
#   dloss_r/du_rj = m_r [((1 - eps) w_y + eps W / C) p_rj - (1 - eps) w_y [j = y] - eps w_j / C]
#                   + 2 zl m_r w_y lse_r p_rj
#   'mean' divides by D = sum_r m_r w_y (torch's denominator).
# Probability targets t, t' = (1 - eps) t + eps / C:
#   loss_r = sum_j w_j t'_rj (lse_r - u_rj) + zl lse_r^2;  D = the number of rows
#   dloss_r/du_rj = (sum_k w_k t'_rk) p_rj - w_j t'_rj + 2 zl lse_r p_rj
#   dloss_r/dt_rj = (1 - eps) w_j (lse_r - u_rj)
# Chain rule through the transform: du/dz = s (1 - (u / softcap)^2), or s.
# A zero 'mean' denominator gives a zero gradient (every counted weight is 0: as the kernels).


def _prepare(input, target, weight, softcap, logit_scale):
    """(z, u, t, w, C, index?) with the classes last, in the computing dtype."""
    dtype = _loss_dtype(input.dtype)
    z = _class_last(input, input.ndim).to(dtype)
    index = not target.is_floating_point()
    t = target if index else _class_last(target, target.ndim).to(dtype)
    w = None if weight is None else weight.to(dtype)
    a = z * logit_scale if logit_scale != 1.0 else z
    u = softcap * torch.tanh(a / softcap) if softcap is not None else a
    return z, u, t, w, z.shape[-1], index


def _row_weights(t, w, index, ignore_index, lead_shape, dtype):
    """(each row's weight m_r w_y, or 1 for probabilities; the 'mean' denominator D): N-sized."""
    if not index:
        rows = torch.ones(lead_shape, dtype=dtype, device=t.device)
        return rows, torch.tensor(float(rows.numel()), dtype=dtype)
    counted = t != ignore_index
    y = torch.where(counted, t, torch.zeros_like(t)).long()
    wy = w[y] if w is not None else torch.ones(lead_shape, dtype=dtype, device=t.device)
    row_w = torch.where(counted, wy, torch.zeros_like(wy))
    return row_w, row_w.sum()


def _reduce(rows, reduction, denominator):
    if reduction == "none":
        return rows
    total = rows.sum()
    return total if reduction == "sum" else total / denominator


def _loss_rows_torch(
    input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale
):
    """The loss in torch operations (for torch.func transforms): xentc's semantics."""
    _, u, t, w, n_classes, index = _prepare(input, target, weight, softcap, logit_scale)
    eps = label_smoothing
    row_w, denominator = _row_weights(t, w, index, ignore_index, u.shape[:-1], u.dtype)
    lse = torch.logsumexp(u, dim=-1)
    neg_logp = lse.unsqueeze(-1) - u
    if index:
        counted = t != ignore_index
        y = torch.where(counted, t, torch.zeros_like(t)).long()
        loss = (1 - eps) * row_w * neg_logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        if eps:
            smooth = (neg_logp * w).sum(-1) if w is not None else neg_logp.sum(-1)
            loss = loss + torch.where(counted, eps / n_classes * smooth, torch.zeros_like(smooth))
    else:
        tp = (1 - eps) * t + eps / n_classes if eps else t
        loss = (neg_logp * (tp * w if w is not None else tp)).sum(-1)
    if z_loss:
        loss = loss + z_loss * row_w * lse * lse
    return _reduce(loss, reduction, denominator)


def _grads_torch(
    input,
    target,
    weight,
    grad_loss,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    softcap,
    logit_scale,
    need_target=False,
):
    """(d loss / d input, d loss / d target or None) times grad_loss, in torch operations
    (differentiable again; see the formulas above). Written to keep the N x C temporaries few
    (softmax, one product, the one-hot part as a scatter_add): this is the double-backward
    path's forward, and at a language model's vocabulary each one is N x V."""
    _, u, t, w, n_classes, index = _prepare(input, target, weight, softcap, logit_scale)
    eps = label_smoothing
    row_w, denominator = _row_weights(t, w, index, ignore_index, u.shape[:-1], u.dtype)
    p = torch.softmax(u, dim=-1)
    go = grad_loss.to(u.dtype)
    if reduction == "mean":
        go = torch.where(denominator != 0, go / denominator, torch.zeros_like(go))
    scale = go if reduction == "none" else go.expand(u.shape[:-1])  # one per row
    if index:
        counted = (t != ignore_index).to(u.dtype)
        y = torch.where(t != ignore_index, t, torch.zeros_like(t)).long()
        w_total = w.sum() if w is not None else float(n_classes)
        coef = (1 - eps) * row_w + (eps / n_classes) * w_total * counted
    else:
        tp = (1 - eps) * t + eps / n_classes if eps else t
        q = tp * w if w is not None else tp
        coef = q.sum(-1)
    if z_loss:
        coef = coef + 2 * z_loss * row_w * torch.logsumexp(u, dim=-1)
    g_u = p * (coef * scale).unsqueeze(-1)
    if index:
        if eps:
            smooth = w if w is not None else torch.ones((), dtype=u.dtype)
            g_u = g_u - (eps / n_classes) * smooth * (counted * scale).unsqueeze(-1)
        g_u = g_u.scatter_add(-1, y.unsqueeze(-1), (-(1 - eps) * row_w * scale).unsqueeze(-1))
    else:
        g_u = g_u - q * scale.unsqueeze(-1)
    if softcap is not None:
        g_z = g_u * (logit_scale * (1 - (u / softcap) ** 2))
    else:
        g_z = g_u * logit_scale if logit_scale != 1.0 else g_u
    g_input = _class_last_back(g_z.to(input.dtype), input.ndim)
    g_target = None
    if need_target and not index:
        neg_logp = torch.logsumexp(u, dim=-1).unsqueeze(-1) - u
        gt = (1 - eps) * neg_logp * scale.unsqueeze(-1)
        gt = gt * w if w is not None else gt
        g_target = _class_last_back(gt.to(target.dtype), target.ndim)
    return g_input, g_target


# ---- inplace_backward: refuse, before anything is written, what would corrupt data ---------------


def _saved_tensors_of(node):
    """The tensors an autograd node saved for its backward (its `_saved_*` attributes)."""
    if node is None:
        return
    for name in dir(node):
        if not name.startswith("_saved_"):
            continue
        try:
            value = getattr(node, name)
        except RuntimeError:  # already freed (its backward ran)
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, torch.Tensor):
                yield name[len("_saved_") :], v


def _check_inplace(input):
    """inplace_backward=True writes the gradient over `input`'s storage. Refuse, at the call
    (before any kernel runs, so nothing is written), the storages whose overwrite would corrupt
    data: torch refuses an in-place op on a leaf that requires grad, or on a view of one, for the
    same reason."""
    if not input.requires_grad:
        return  # no backward: nothing will be written
    hint = "; pass inplace_backward=False (the default), or a tensor nothing else needs"
    if input.is_leaf:
        kind = "an nn.Parameter" if isinstance(input, torch.nn.Parameter) else "a leaf tensor"
        raise CrossEntropyError(
            f"inplace_backward=True must not get {kind} that requires grad as input: its data "
            f"would be overwritten by its own gradient{hint}"
        )
    base = input._base
    if base is not None and base.requires_grad and base.is_leaf:
        kind = "an nn.Parameter" if isinstance(base, torch.nn.Parameter) else "a leaf tensor"
        raise CrossEntropyError(
            f"inplace_backward=True must not get a view of {kind} that requires grad as input: "
            f"the leaf's data would be overwritten by the gradient{hint}"
        )
    if torch._debug_has_internal_overlap(input) == 1:
        raise CrossEntropyError(
            f"inplace_backward=True needs an input whose elements are distinct in memory; got "
            f"strides {input.stride()} (an expanded tensor){hint}"
        )
    storage = input.untyped_storage().data_ptr()
    for holder in (input, base):
        node = None if holder is None else holder.grad_fn
        for name, saved in _saved_tensors_of(node):
            if saved.untyped_storage().data_ptr() == storage:
                raise CrossEntropyError(
                    f"inplace_backward=True must not get an input whose storage "
                    f"{type(node).__name__} saved for its own backward (as '{name}'): that "
                    f"backward would read the gradient instead of its values{hint}"
                )


# ---- the functional and the module ---------------------------------------------------------------


def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise CrossEntropyTypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.device.type != "cpu":
        raise CrossEntropyError(
            f"{name} must be on the CPU (xentc's kernels run on the CPU; use "
            f"torch.nn.functional.cross_entropy for {t.device.type} tensors); got device "
            f"{t.device}"
        )
    if t.layout != torch.strided:
        raise CrossEntropyError(f"{name} must be a dense (strided) tensor; got layout {t.layout}")
    return t


def _check_target(target, ignore_index):
    target = _check_tensor(target, "target")
    if target.is_floating_point():
        if ignore_index >= 0:
            # torch's rule and message: ignore_index plays no part with probabilities, and a
            # non-negative one is refused rather than silently ignored
            raise CrossEntropyError(
                f"ignore_index is not supported for floating point target (probabilities); "
                f"got ignore_index={ignore_index}"
            )
    if target.dtype in _HALF:
        # 16-bit probabilities (torch wants the input's dtype): xentc reads float32 or float64
        # targets, and a float32 copy holds every 16-bit value exactly
        target = target.float()
    return target


def _extras(
    loss, lse, input, target, weight, reduction, z_loss, ignore_index, return_z_loss, return_lse
):
    """(loss, [z_loss], [lse]) as asked; the extra outputs carry no gradient."""
    out = [loss]
    if not (return_z_loss or return_lse):
        return loss
    lse = lse.detach()
    if return_z_loss:
        if target.is_floating_point():
            row_w = torch.ones_like(lse)
            denominator = lse.new_tensor(float(lse.numel()))
        else:
            counted = target != ignore_index
            wy = (
                weight.to(lse.dtype)[torch.where(counted, target, 0).long()]
                if weight is not None
                else torch.ones_like(lse)
            )
            row_w = torch.where(counted, wy, torch.zeros_like(wy))
            denominator = row_w.sum()
        zl = z_loss * row_w * lse * lse
        zl = _reduce(zl, reduction, denominator)
        out.append(zl.to(loss.dtype))
    if return_lse:
        out.append(lse.to(loss.dtype))
    return tuple(out)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    inplace_backward: bool = False,
    return_z_loss: bool = False,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """`torch.nn.functional.cross_entropy`, computed by xentc's fused CPU kernels.

    A drop-in: the same signature, layout (classes on dim 1) and semantics as torch's, composing
    with autograd to any order, `torch.func` and `torch.compile` (the loss is the registered
    operator ``xentc::cross_entropy``). docs/torch.md has the details and the differences.

    Parameters
    ----------
    input : torch.Tensor
        ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``; float32, float64, float16 or bfloat16; on
        the CPU, any strides.
    target : torch.Tensor
        Class indices of shape ``()``, ``(N,)`` or ``(N, d1, ...)`` (any integer dtype), or
        class probabilities of `input`'s shape (floating; they may require grad).
    weight : torch.Tensor, optional
        Per-class weights, shape ``(C,)``, as torch's (not differentiated: one that requires
        grad is an error).
    size_average, reduce : bool, optional
        torch's legacy reduction arguments.
    ignore_index : int, default -100
        The index target of positions that do not count.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As torch's.
    label_smoothing : float, default 0.0
        In [0, 1], as torch's.
    z_loss : float, default 0.0
        Adds ``z_loss * lse**2`` per counted position (PaLM's z-loss).
    softcap : float, optional
        The loss is that of ``softcap * tanh(logit_scale * input / softcap)``.
    logit_scale : float, default 1.0
        Multiplies the logits before the softcap.
    inplace_backward : bool, default False
        The backward writes the gradient over `input`'s storage and returns it as its gradient
        (refused, before anything is written, for a leaf that requires grad, a view of one, or
        logits another node saved for its backward).
    return_z_loss, return_lse : bool, default False
        Also return the z-loss term (reduced as the loss) and each position's log-sum-exp (the
        shape of the ``'none'`` loss), without gradient.

    Returns
    -------
    loss : torch.Tensor
        A 0-d tensor for ``'mean'`` / ``'sum'``, the per-position losses for ``'none'``
        (float32 for 16-bit input). With `return_z_loss` / `return_lse`: ``(loss, z_loss,
        lse)``, the ones asked for, in that order.

    Raises
    ------
    CrossEntropyError
        A ValueError that is also the RuntimeError torch raises: shapes that do not fit, an
        option out of range, probability targets with a non-default `ignore_index`, a refused
        `inplace_backward`, a tensor on another device.
    CrossEntropyIndexError
        A class index outside ``[0, C)`` that is not `ignore_index` (torch's IndexError).
    CrossEntropyTypeError
        A dtype the loss cannot take (a TypeError that is also torch's RuntimeError).

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from xentc.torch import cross_entropy
    >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
    >>> target = torch.tensor([0, 1])
    >>> loss = cross_entropy(logits, target, label_smoothing=0.1)
    >>> loss.backward()
    >>> bool(torch.isclose(loss, F.cross_entropy(logits, target, label_smoothing=0.1)))
    True
    >>> loss, z = cross_entropy(logits, target, z_loss=1e-4, return_z_loss=True)
    >>> tuple(z.shape)
    ()
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    input = _check_tensor(input, "input")
    if input.ndim == 0:
        raise CrossEntropyError(
            "input must have at least one dimension (the classes); got a 0-d tensor"
        )
    target = _check_target(target, ignore_index)
    if weight is not None:
        weight = _check_tensor(weight, "weight")
        if weight.requires_grad:
            raise CrossEntropyError(
                "weight must not require grad (xentc computes no gradient "
                "for the class weights); detach it"
            )
        if weight.dtype in _HALF:
            weight = weight.float()  # C numbers, exactly; xentc reads floating NumPy dtypes
    compiling = torch.compiler.is_compiling()
    if not compiling and any(_needs_torch_ops(t) for t in (input, target, weight) if t is not None):
        # torch.func's vmap / grad / jacrev / jvp, forward-mode AD: the closed form in torch ops
        if reduction not in ("none", "mean", "sum"):
            raise CrossEntropyError(f"{reduction} is not a valid value for reduction")
        loss = _loss_rows_torch(
            input,
            target,
            weight,
            ignore_index,
            reduction,
            float(label_smoothing),
            float(z_loss),
            softcap,
            float(logit_scale),
        )
        if not (return_z_loss or return_lse):
            return loss
        u = _prepare(input, target, weight, softcap, float(logit_scale))[1]
        return _extras(
            loss,
            torch.logsumexp(u, dim=-1),
            input,
            target,
            weight,
            reduction,
            float(z_loss),
            ignore_index,
            return_z_loss,
            return_lse,
        )
    if inplace_backward and compiling:
        inplace_backward = False  # torch.compile: the gradient is a fresh tensor (docs/torch.md)
    if inplace_backward:
        _check_inplace(input)
    loss, lse = _xent_op(
        input,
        target,
        weight,
        int(ignore_index),
        str(reduction),
        float(label_smoothing),
        float(z_loss),
        None if softcap is None else float(softcap),
        float(logit_scale),
        bool(inplace_backward),
    )
    return _extras(
        loss,
        lse,
        input,
        target,
        weight,
        reduction,
        float(z_loss),
        ignore_index,
        return_z_loss,
        return_lse,
    )


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """`torch.nn.CrossEntropyLoss` computed by `xentc.torch.cross_entropy`.

    The same constructor (and so the same ``weight`` buffer, ``state_dict`` and ``isinstance``)
    as torch's, plus xentc's keyword options.

    Parameters
    ----------
    weight, size_average, ignore_index, reduce, reduction, label_smoothing
        As `torch.nn.CrossEntropyLoss`.
    z_loss, softcap, logit_scale, inplace_backward, return_z_loss, return_lse
        As `cross_entropy`.

    Attributes
    ----------
    z_loss, softcap, logit_scale, inplace_backward, return_z_loss, return_lse
        The options each call passes to `cross_entropy`.

    Examples
    --------
    >>> import torch
    >>> from xentc.torch import CrossEntropyLoss
    >>> criterion = CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)
    >>> isinstance(criterion, torch.nn.CrossEntropyLoss)
    True
    >>> loss = criterion(torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, -100, 1, 2]))
    >>> loss.shape
    torch.Size([])
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        logit_scale: float = 1.0,
        inplace_backward: bool = False,
        return_z_loss: bool = False,
        return_lse: bool = False,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.softcap = softcap
        self.logit_scale = logit_scale
        self.inplace_backward = inplace_backward
        self.return_z_loss = return_z_loss
        self.return_lse = return_lse

    # With return_z_loss / return_lse it returns a tuple (as Liger's and flash-attn's losses do),
    # where torch's returns a tensor.
    def forward(  # type: ignore[override]
        self, input: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            logit_scale=self.logit_scale,
            inplace_backward=self.inplace_backward,
            return_z_loss=self.return_z_loss,
            return_lse=self.return_lse,
        )

    def extra_repr(self):
        extras = [f"reduction={self.reduction!r}"]
        if self.z_loss:
            extras.append(f"z_loss={self.z_loss}")
        if self.softcap is not None:
            extras.append(f"softcap={self.softcap}")
        if self.logit_scale != 1.0:
            extras.append(f"logit_scale={self.logit_scale}")
        for flag in ("inplace_backward", "return_z_loss", "return_lse"):
            if getattr(self, flag):
                extras.append(f"{flag}=True")
        return ", ".join(extras)


# The fused linear + cross-entropy (xentc/_torch_linear.py), which uses the helpers above.
from ._torch_linear import linear_cross_entropy  # noqa: E402

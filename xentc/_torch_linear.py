"""xentc.torch.linear_cross_entropy: torch.nn.functional.linear_cross_entropy on CPU tensors,
computed by xentc.linear_cross_entropy (issue 19). Imported by xentc/torch.py, which exports it.

The logits `input @ linear_weight.T + linear_bias` are never held whole: xentc makes them a
chunk of rows at a time. For 'mean' and 'sum' the forward computes the gradients too (the chunk's
gradient is taken back through the projection while the chunk is in cache, as Liger-Kernel's
fused linear cross-entropy does) and the backward scales them by the incoming scalar; for 'none'
the backward runs the fused pass again with the incoming per-row gradient. A second derivative
is not computed: a backward that would need one (create_graph=True) raises.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _linear
from .torch import (
    CrossEntropyError,
    _check_target,
    _check_tensor,
    _from_numpy,
    _numpy_view,
    _torch_type,
)

__all__ = ["linear_cross_entropy"]

_HALF = (torch.float16, torch.bfloat16)


def _arrays(input, linear_weight, linear_bias, target, weight):
    """The tensors as the ndarrays xentc reads (views, no copies)."""
    b = None if linear_bias is None else _numpy_view(linear_bias, "linear_bias")
    w = None if weight is None else _numpy_view(weight, "weight")
    return (
        _numpy_view(input, "input"),
        _numpy_view(linear_weight, "linear_weight"),
        b,
        _numpy_view(target, "target"),
        w,
    )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, target, weight, options):
        h, lw, lb, t, w = _arrays(input, linear_weight, linear_bias, target, weight)
        kw = dict(options, bias=lb, class_weight=w)
        ctx.options, ctx.dtypes = options, (input.dtype, linear_weight.dtype)
        ctx.grads = None
        wanted = ctx.needs_input_grad[:3]
        if any(wanted) and options["reduction"] != "none":
            loss, gh, gw, gb = _linear.linear_cross_entropy_with_grad(h, lw, t, **kw)
            ctx.grads = (gh, gw, gb)
        else:
            loss = _linear.linear_cross_entropy(h, lw, t, **kw)
            if any(wanted):
                ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
        if isinstance(loss, np.ndarray):
            return torch.from_numpy(loss)
        return torch.tensor(loss, dtype=torch.float32 if input.dtype in _HALF else input.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        # Autograd runs a backward with grad mode on only for create_graph=True: gradients that
        # do not require grad would then silently drop the second-order terms.
        if torch.is_grad_enabled():
            raise CrossEntropyError(
                "xentc.torch.linear_cross_entropy has no second derivative; got a backward with "
                "create_graph=True (use torch.nn.functional.linear_cross_entropy for it)"
            )
        if ctx.grads is not None:
            # 'mean' / 'sum': the gradients of the forward, times the incoming scalar (in their own
            # dtype, so that 16-bit gradients stay 16-bit)
            scale = float(grad_loss.detach())
            grads = [g if g is None or scale == 1.0 else g * g.dtype.type(scale) for g in ctx.grads]
        else:
            input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
            h, lw, lb, t, w = _arrays(input, linear_weight, linear_bias, target, weight)
            grad_output = grad_loss.detach().to(torch.float64).numpy()
            _, *grads = _linear.linear_cross_entropy_with_grad(
                h, lw, t, bias=lb, class_weight=w, grad_output=grad_output, **ctx.options
            )
        dtypes = (ctx.dtypes[0], ctx.dtypes[1], ctx.dtypes[1])
        out = [
            None if g is None or not need else _from_numpy(np.ascontiguousarray(g), dtype)
            for g, need, dtype in zip(grads, ctx.needs_input_grad[:3], dtypes)
        ]
        return (*out, None, None, None)


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: object = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """`torch.nn.functional.linear_cross_entropy`, computed by `xentc.linear_cross_entropy`.

    The loss of ``input @ linear_weight.T + linear_bias`` without its N x C logits: xentc makes
    them a chunk of rows at a time (docs/linear.md).

    Parameters
    ----------
    input : torch.Tensor
        ``(N, D)`` or ``(D,)`` hidden states, float32, float64, float16 or bfloat16, on the CPU.
    linear_weight : torch.Tensor
        ``(C, D)``, `input`'s dtype (``torch.nn.Linear``'s weight).
    target : torch.Tensor
        Class indices ``(N,)`` (or ``()``), or class probabilities ``(N, C)``.
    linear_bias : torch.Tensor, optional
        ``(C,)``, `input`'s dtype.
    weight : torch.Tensor, optional
        Per-class weights ``(C,)``, as torch's.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As torch's.
    ignore_index : int, optional
        torch's default: -100 for class indices.
    label_smoothing : float, default 0.0
        As torch's.
    options : optional
        torch's chunking options (``LinearCrossEntropyOptions``): accepted and ignored, xentc
        always chunks (`chunk_bytes` sets the chunk).
    z_loss, softcap, logit_scale : float
        As in `xentc.torch.cross_entropy`.
    chunk_bytes : int, optional
        The budget of one chunk of logits (default: 128 MiB or 1024 rows, whichever is more).

    Returns
    -------
    torch.Tensor
        A 0-d loss for ``'mean'`` / ``'sum'``, one per row for ``'none'`` (float32 for 16-bit
        input). Its backward gives the gradients of `input`, `linear_weight` and `linear_bias`;
        a second derivative raises.

    Raises
    ------
    CrossEntropyError, CrossEntropyIndexError, CrossEntropyTypeError
        As `xentc.torch.cross_entropy`, for the same mistakes.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from xentc.torch import linear_cross_entropy
    >>> hidden = torch.randn(64, 32, requires_grad=True)
    >>> head = torch.nn.Linear(32, 1000)
    >>> target = torch.randint(0, 1000, (64,))
    >>> loss = linear_cross_entropy(hidden, head.weight, target, linear_bias=head.bias)
    >>> loss.backward()
    >>> want = F.cross_entropy(head(hidden), target)
    >>> bool(torch.isclose(loss, want, rtol=1e-5))
    True
    """
    del options  # torch's chunking options: xentc chunks by chunk_bytes
    _check_tensor(input, "input")
    _check_tensor(linear_weight, "linear_weight")
    if input.ndim not in (1, 2):
        raise CrossEntropyError(
            f"input must have shape (N, D) or (D,); got {tuple(input.shape)} (flatten the "
            f"leading axes, as for a language model's tokens)"
        )
    if linear_bias is not None:
        _check_tensor(linear_bias, "linear_bias")
    if weight is not None:
        _check_tensor(weight, "weight")
        if weight.requires_grad:  # as xentc.torch.cross_entropy: class weights get no gradient
            raise CrossEntropyError("weight must not require grad; got one that does")
    if ignore_index is None:
        ignore_index = -100  # torch's default for class indices (probabilities ignore it)
    target = _check_target(target, ignore_index)
    opts = {
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "logit_scale": logit_scale,
        "chunk_bytes": chunk_bytes,
        "n_threads": torch.get_num_threads(),
    }
    try:
        return _LinearCrossEntropy.apply(input, linear_weight, linear_bias, target, weight, opts)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, (CrossEntropyError, RuntimeError)):
            raise
        raise _torch_type(exc, target, linear_weight.shape[0], ignore_index) from None

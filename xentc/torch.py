"""xentc.torch: a drop-in for torch.nn.functional.cross_entropy on CPU tensors.

    from xentc.torch import cross_entropy  # was: from torch.nn.functional import cross_entropy
    loss = cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
    loss.backward()

Same signature and layout as torch's (classes on dim 1: input (C,), (N, C) or (N, C, d1, ...);
class-index or class-probability targets), plus xentc's options: z_loss, softcap, logit_scale and
inplace_backward. A torch.autograd.Function runs xentc's kernels on `Tensor.numpy()` views of the
tensors, so no tensor is copied, whatever its strides (the class dim is moved last with movedim, a
view). The forward keeps each row's log-sum-exp in float64 (n_rows floats, not a softmax of
N x C); the backward writes the gradient in one pass over the logits from it (the kernel's
backward mode, src_c/xc_api.h), scaled by grad_output (a scalar for 'mean' / 'sum', one per
element for 'none'). inplace_backward=True writes that gradient over the input's own storage
(flash-attn's option of the same name): the logits must then not be needed by anything else.

Nothing here is compiled against PyTorch: `import xentc` never imports torch; this module does.
The kernels run with torch.get_num_threads() threads. CPU tensors only: CUDA, meta and other
devices, sparse layouts, and a weight or target that requires grad are errors that say so.
float16 / bfloat16 inputs go to the kernels as np.float16 / ml_dtypes.bfloat16 views; their
gradient comes back in the input's dtype and their loss in float32 (as autocast computes a
cross-entropy in float32).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _api

__all__ = ["cross_entropy", "CrossEntropyLoss"]

_HALF = (torch.float16, torch.bfloat16)


def _numpy_view(t, name):
    """`t` (a CPU tensor of any strides) as an ndarray sharing its memory."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        # NumPy has no bfloat16: the bits go through int16 and come out as ml_dtypes' type.
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return t.numpy()
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a tensor NumPy can view (float, integer); got "
                        f"{t.dtype}: {exc}") from None


def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{name} must be on the CPU (xentc's kernels run on the CPU; use "
            f"torch.nn.functional.cross_entropy for {t.device.type} tensors); got device "
            f"{t.device}")
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor; got layout {t.layout}")
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t


def _class_last(t, ndim):
    """A tensor in torch's layout (classes on dim 1, or dim 0 of a 1-D input) with the classes
    moved last: a view."""
    return t.movedim(1, -1) if ndim >= 2 else t


class _CrossEntropyFunction(torch.autograd.Function):
    """loss = xentc cross-entropy of input (classes on dim 1) against target."""

    @staticmethod
    def forward(ctx, input, target, weight, options, inplace_backward):
        logits = _numpy_view(_class_last(input, input.ndim), "input")
        soft = target.is_floating_point()
        tgt = _numpy_view(_class_last(target, target.ndim) if soft else target, "target")
        w = None if weight is None else _numpy_view(weight, "weight")
        options = dict(options, n_threads=torch.get_num_threads())
        loss, lse = _api._cross_entropy_lse64(logits, tgt, weight=w, **options)
        ctx.save_for_backward(input, target, weight)
        ctx.lse = lse
        ctx.options = options
        ctx.inplace_backward = inplace_backward
        loss_dtype = torch.float32 if input.dtype in _HALF else input.dtype
        if options["reduction"] == "none":
            return torch.from_numpy(np.asarray(loss)).to(loss_dtype)
        return torch.tensor(loss, dtype=loss_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable  # a double backward raises, never silently 0
    def backward(ctx, grad_loss):
        input, target, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        logits = _numpy_view(_class_last(input, input.ndim), "input")
        soft = target.is_floating_point()
        tgt = _numpy_view(_class_last(target, target.ndim) if soft else target, "target")
        w = None if weight is None else _numpy_view(weight, "weight")
        if ctx.options["reduction"] == "none":
            go = _numpy_view(grad_loss, "grad_output")
        else:
            go = float(grad_loss)
        if ctx.inplace_backward:
            _api._grad_from_lse(logits, tgt, ctx.lse, weight=w, **ctx.options, grad_output=go,
                                out=logits)
            # The input now holds its gradient. An in-place op on an empty view of it bumps its
            # version counter, so any other op that saved these logits for its own backward
            # raises autograd's "modified by an inplace operation" instead of reading a gradient
            # as logits.
            input.detach().narrow(0, 0, 0).zero_()
            grad = input.detach()
        else:
            g = _api._grad_from_lse(logits, tgt, ctx.lse, weight=w, **ctx.options,
                                    grad_output=go)
            grad = _class_last_back(_from_numpy(g, input.dtype), input.ndim)
        return grad, None, None, None, None


def _from_numpy(a, dtype):
    """The gradient ndarray as a tensor of `dtype`, sharing its memory."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _class_last_back(t, ndim):
    return t.movedim(-1, 1) if ndim >= 2 else t


def _check_target(target):
    target = _check_tensor(target, "target")
    if target.requires_grad:
        raise ValueError("target must not require grad (xentc computes no gradient for the "
                         "target probabilities); detach it")
    if target.dtype in _HALF:
        # 16-bit probabilities (torch wants the input's dtype): xentc reads float32 or float64
        # targets, and a float32 copy holds every 16-bit value exactly
        target = target.float()
    return target


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0, *, z_loss=0.0, softcap=None,
                  logit_scale=1.0, inplace_backward=False):
    """torch.nn.functional.cross_entropy, computed by xentc's fused CPU kernels.

    input: (C,), (N, C) or (N, C, d1, ...), float32, float64, float16 or bfloat16; target:
    class indices of shape (), (N) or (N, d1, ...), or class probabilities of input's shape.
    weight, ignore_index, reduction, label_smoothing and the legacy size_average / reduce: as
    torch. Extras: z_loss (adds z_loss * lse**2 per counted row), softcap and logit_scale (the
    loss of softcap * tanh(logit_scale * input / softcap)), inplace_backward (the backward
    writes the gradient over input's storage and returns it).
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    input = _check_tensor(input, "input")
    target = _check_target(target)
    if weight is not None:
        weight = _check_tensor(weight, "weight")
        if weight.requires_grad:
            raise ValueError("weight must not require grad (xentc computes no gradient for the "
                             "class weights); detach it")
        if weight.dtype in _HALF:
            weight = weight.float()  # C numbers, exactly; xentc reads floating NumPy dtypes
    if input.ndim == 0:
        raise ValueError("input must have at least one dimension (the classes); got a 0-d tensor")
    options = {"ignore_index": ignore_index, "reduction": reduction,
               "label_smoothing": label_smoothing, "z_loss": z_loss, "softcap": softcap,
               "logit_scale": logit_scale}
    return _CrossEntropyFunction.apply(input, target, weight, options, bool(inplace_backward))


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss computed by xentc.torch.cross_entropy: the same constructor
    (and so the same weight buffer, state_dict and isinstance), plus z_loss, softcap,
    logit_scale and inplace_backward."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0, *, z_loss=0.0, softcap=None,
                 logit_scale=1.0, inplace_backward=False):
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.softcap = softcap
        self.logit_scale = logit_scale
        self.inplace_backward = inplace_backward

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             z_loss=self.z_loss, softcap=self.softcap,
                             logit_scale=self.logit_scale,
                             inplace_backward=self.inplace_backward)

    def extra_repr(self):
        extras = [f"reduction={self.reduction!r}"]
        if self.z_loss:
            extras.append(f"z_loss={self.z_loss}")
        if self.softcap is not None:
            extras.append(f"softcap={self.softcap}")
        if self.logit_scale != 1.0:
            extras.append(f"logit_scale={self.logit_scale}")
        if self.inplace_backward:
            extras.append("inplace_backward=True")
        return ", ".join(extras)

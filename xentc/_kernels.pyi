"""Type stub of the compiled module xentc/_kernels.pyx (thin Cython over src_c/xc_api.h).

Private: the arrays arrive checked by xentc/_validate.py; a Matrix is _validate.Matrix (array,
row offsets, row step, class step)."""

from typing import Any

import numpy as np

# A plan is _validate.XentPlan or _validate.ShardPlan; a Matrix is _validate.Matrix.
HALF_NONE: int
HALF_F16: int
HALF_BF16: int
MATH_CODES: dict[str, int]

def xent(
    plan: Any,
    *,
    grad: Any = ...,
    grad_fresh: bool = ...,
    grad_scale: float = ...,
    row_grad_scale: np.ndarray | None = ...,
    loss_out: np.ndarray | None = ...,
    lse_out: np.ndarray | None = ...,
    want_sum: bool = ...,
) -> float | None: ...
def xent_backward(
    plan: Any,
    lse_in: np.ndarray,
    *,
    grad: Any,
    grad_fresh: bool,
    grad_scale: float = ...,
    row_grad_scale: np.ndarray | None = ...,
) -> None: ...
def shard_stats(
    plan: Any,
    *,
    want_gap: bool,
    max_out: np.ndarray,
    sum_out: np.ndarray,
    target_logit_out: np.ndarray,
    pivot_weight_out: np.ndarray,
    weight_sum_out: np.ndarray,
    gap_out: np.ndarray | None,
    pivot_out: np.ndarray,
) -> None: ...
def shard_grad(
    plan: Any,
    *,
    grad: Any,
    row_max: np.ndarray,
    p_scale: np.ndarray,
    t_scale: np.ndarray,
    t_floor: np.ndarray,
    exact_grad: np.ndarray,
    fill: np.ndarray,
    exact_class: np.ndarray,
    use_fill: np.ndarray,
) -> None: ...
def lse_rows(x: Any, n_rows: int, n_classes: int, lse_out: np.ndarray, n_threads: int) -> None: ...
def softmax_rows(
    x: Any, n_rows: int, n_classes: int, out: Any, log_softmax: bool, n_threads: int
) -> None: ...
def openmp_enabled() -> bool: ...
def openmp_version() -> int: ...
def openmp_max_threads() -> int: ...
def openmp_entry_address() -> int: ...
def fork_pools_released() -> int: ...
def bandwidth_read(x: np.ndarray, n_threads: int) -> float: ...
def bandwidth_copy(src: np.ndarray, dst: np.ndarray, n_threads: int) -> None: ...
def _math(name: str, x: np.ndarray) -> np.ndarray: ...
def isa_compiled() -> list[str]: ...
def isa_supported() -> list[str]: ...
def isa_active() -> str: ...
def _use_isa(name: str) -> None: ...

"""xentc: fused softmax cross-entropy kernels for NumPy arrays (classes on the last axis).

The loss, the log-sum-exp and the gradient of ``(..., C)`` logits in one pass over memory, in C
kernels with the GIL released and OpenMP across rows; every option follows
``torch.nn.functional.cross_entropy``. The contract is the semantics page of the docs.

Functions
---------
cross_entropy
    The loss (and optionally each row's log-sum-exp).
cross_entropy_with_grad
    The loss and its gradient with respect to the logits, in one pass; ``out=`` in place.
cross_entropy_grad
    That gradient later, from the lse the loss call kept (autograd's backward).
logsumexp, softmax, log_softmax
    As ``scipy.special``'s, along any axis.
shard_stats, combine_shards, shard_grad
    The same loss and gradient from blocks of classes (vocabulary shards).
show_config
    The build, the kernels in use, the default thread count.

Submodules (imported on their own, each with its optional dependency): ``xentc.dask`` (dask
arrays, ``.npy`` files on disk) and ``xentc.torch`` (a drop-in for ``F.cross_entropy``).

Examples
--------
>>> import numpy as np
>>> import xentc
>>> logits = np.zeros((2, 4), dtype=np.float32)
>>> round(xentc.cross_entropy(logits, np.array([0, 3])), 6)  # log(4)
1.386294
"""

import os as _os

from ._api import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    log_softmax,
    logsumexp,
    softmax,
)
from ._config import apply_xentc_isa as _apply_xentc_isa
from ._config import show_config
from ._linear import linear_cross_entropy, linear_cross_entropy_with_grad
from ._shards import ShardStats, ShardTotals, combine_shards, shard_grad, shard_stats

__version__ = "0.1.0"

# XENTC_ISA=baseline|avx2|avx512 (aarch64: baseline|neon|sve) narrows the set chosen at import.
_apply_xentc_isa(_os.environ.get("XENTC_ISA", "").strip().lower())

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "cross_entropy_grad",
    "logsumexp",
    "softmax",
    "log_softmax",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "show_config",
    "shard_stats",
    "combine_shards",
    "shard_grad",
    "ShardStats",
    "ShardTotals",
    "__version__",
]

"""xentc: fused softmax cross-entropy kernels for NumPy arrays (classes on the last axis)."""

import os as _os

from ._api import cross_entropy, cross_entropy_with_grad, log_softmax, logsumexp, softmax
from ._config import apply_xentc_isa as _apply_xentc_isa
from ._config import show_config
from ._linear import linear_cross_entropy, linear_cross_entropy_with_grad
from ._shards import ShardStats, ShardTotals, combine_shards, shard_grad, shard_stats

__version__ = "0.1.0"

# XENTC_ISA=baseline|avx2|avx512 narrows the instruction set chosen at import.
_apply_xentc_isa(_os.environ.get("XENTC_ISA", "").strip().lower())

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
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

"""xentc: fused softmax cross-entropy kernels for NumPy arrays (classes on the last axis)."""

from ._api import cross_entropy, cross_entropy_with_grad, log_softmax, logsumexp, softmax
from ._config import show_config

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "logsumexp",
    "softmax",
    "log_softmax",
    "show_config",
    "__version__",
]

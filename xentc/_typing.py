"""Type aliases of the public signatures (xentc/py.typed: the package ships its annotations)."""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["ArrayLike", "DTypeLike", "FloatArray", "Loss", "Reduction"]

FloatArray = NDArray[np.floating]
# A Python float for 'mean' / 'sum', an array of row losses for 'none'.
Loss = Union[float, FloatArray]
Reduction = Literal["mean", "sum", "none"]
# (loss, lse) with return_lse=True
LossLse = tuple[Loss, FloatArray]

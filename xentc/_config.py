"""show_config(): what was built and what a call will use, like numpy.show_runtime()."""

import os
import platform

import numpy as np

from . import _kernels
from ._threads import default_n_threads

INSTRUCTION_SETS = ("baseline", "avx2", "avx512")  # narrowest first


def apply_xentc_isa(requested):
    """Use the best supported instruction set no wider than `requested` (the XENTC_ISA
    environment variable narrows the choice made at import, as NumPy's NPY_DISABLE_CPU_FEATURES
    does). An empty value keeps the best."""
    if not requested:
        return
    if requested not in INSTRUCTION_SETS:
        raise ValueError(f"XENTC_ISA must be one of {list(INSTRUCTION_SETS)}; got {requested!r}")
    allowed = INSTRUCTION_SETS[: INSTRUCTION_SETS.index(requested) + 1]
    _kernels._use_isa([isa for isa in _kernels.isa_supported() if isa in allowed][-1])


def config():
    """The facts show_config() prints, as a dict."""
    from . import __version__

    n_threads, how = default_n_threads()
    openmp = _kernels.openmp_enabled()
    return {
        "xentc": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "openmp": "on" if openmp else "off (serial build)",
        "default n_threads": f"{n_threads} ({how})" if openmp else "1 (serial build)",
        "kernels compiled": ", ".join(_kernels.isa_compiled()),
        "CPU supports": ", ".join(_kernels.isa_supported()),
        "kernels in use": _kernels.isa_active()
        + (f" (XENTC_ISA={os.environ['XENTC_ISA']})" if os.environ.get("XENTC_ISA") else ""),
    }


def show_config():
    """Print xentc's build and runtime configuration."""
    for key, value in config().items():
        print(f"{key + ':':<20}{value}")

"""show_config(): what was built and what a call will use, like numpy.show_runtime()."""

import platform

import numpy as np

from . import _kernels
from ._threads import default_n_threads


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
        "kernels": "baseline (portable C, compiler-vectorised)",
    }


def show_config():
    """Print xentc's build and runtime configuration."""
    for key, value in config().items():
        print(f"{key + ':':<20}{value}")

"""How many threads a call uses: the argument, else OMP_NUM_THREADS, else the usable cores.

The same order as scikit-learn's `_openmp_effective_n_threads`. Results never depend on the
answer (the kernels are bitwise deterministic across thread counts); only the speed does.
"""

import os

from . import _kernels


def usable_cores():
    """Cores this process may run on (its affinity mask), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_n_threads():
    """(count, how it was chosen) for n_threads=None."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        # OpenMP allows a list ("4,2") for nested levels; the first entry is the outer team.
        try:
            value = int(env.split(",")[0])
        except ValueError:
            value = 0
        if value >= 1:
            return value, "OMP_NUM_THREADS"
    return usable_cores(), "usable cores"


def effective_n_threads(count):
    """The team the kernels get for a validated count: a serial build runs on the calling thread."""
    return min(count, 1 << 16) if _kernels.openmp_enabled() else 1

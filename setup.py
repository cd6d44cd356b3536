"""Build of xentc's extension: the C kernels of src_c/ behind the Cython module xentc._kernels.

Environment switches (read at build time):
  XENTC_NO_OPENMP=1       build the kernels serially on purpose (n_threads is then always 1)
  XENTC_FAIL_NO_OPENMP=1  fail, instead of warning and building serially, when OpenMP is missing
                          (CI sets it, so a broken OpenMP probe cannot pass unnoticed)
The build never uses -march=native: the wheel must run on every CPU of its platform.
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0 && omp_get_max_threads() > 0);
    return 0;
}
"""


def flag_on(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def compiler_command():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def openmp_flags():
    """(compile flags, link flags) for OpenMP, or ([], []) after a warning when unavailable."""
    if flag_on("XENTC_NO_OPENMP"):
        print("xentc: XENTC_NO_OPENMP is set: building the kernels without OpenMP")
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    candidates = [["-fopenmp"], ["-Xpreprocessor", "-fopenmp"]]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for flags in candidates:
            link = ["-lomp"] if flags[0] == "-Xpreprocessor" else flags
            cmd = compiler_command() + flags + [src, "-o", exe] + link
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == b"1":
                return flags, link
    message = "xentc: the compiler cannot build and run an OpenMP program: building serially"
    if flag_on("XENTC_FAIL_NO_OPENMP"):
        raise RuntimeError(message + " (XENTC_FAIL_NO_OPENMP is set)")
    warnings.warn(message, stacklevel=1)
    return [], []


def extension():
    omp_compile, omp_link = openmp_flags()
    if sys.platform == "win32":
        base = ["/O2", "/fp:precise"]
    else:
        # -fno-trapping-math lets gcc turn the selects in xc_math.h's exp into blends, so the row
        # loops vectorise; the kernels never rely on floating-point traps. No -ffast-math: NaN
        # and inf must keep their IEEE meaning (the spec's NaN-row and masked-class rules).
        base = ["-O3", "-fno-trapping-math", "-std=c99"]
    return Extension(
        "xentc._kernels",
        sources=["xentc/_kernels.pyx", "src_c/xc_kernels_base.c", "src_c/xc_bandwidth.c"],
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=base + omp_compile,
        extra_link_args=omp_link,
        depends=[os.path.join("src_c", f) for f in os.listdir("src_c")],
    )


setup(
    ext_modules=cythonize(
        [extension()],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False},
    )
)

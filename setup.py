"""Build of xentc's extension: the C kernels of src_c/ behind the Cython module xentc._kernels.

Environment switches (read at build time):
  XENTC_NO_OPENMP=1       build the kernels serially on purpose (n_threads is then always 1)
  XENTC_FAIL_NO_OPENMP=1  fail, instead of warning and building serially, when OpenMP is missing
                          (CI sets it, so a broken OpenMP probe cannot pass unnoticed)
  XENTC_SANITIZE=1        a debugging build under AddressSanitizer and UndefinedBehaviorSanitizer
                          (gcc or clang): every C file with -fsanitize=address,undefined
                          -fno-omit-frame-pointer -g -O1 -fno-wrapv, linked with -fsanitize=...
                          It imports only with the ASan runtime preloaded: tools/sanitize_run.py
                          does that (README, "Hardening").
The probes below also read CFLAGS, CPPFLAGS and LDFLAGS (and ARCHFLAGS on macOS), as the build
itself does: that is how a libomp outside the compiler's search path is found (README, "Install").
The build never uses -march=native: the wheel must run on every CPU of its platform. Instead the
kernels are compiled once per instruction set and dtype (src_c/xc_{f32,f64}_{base,avx2,avx512}.c
on x86-64, src_c/xc_{f32,f64}_{base,neon,sve}.c on aarch64; the two dtypes of a set form one
static library with that set's flags, built only where the compiler accepts the flags) and
src_c/xc_dispatch.c picks the best set the CPU runs, at import.
  XENTC_CROSS_EMULATOR    a command that runs the target's programs (e.g. "qemu-aarch64-static
                          -L ROOT"): the OpenMP probe runs its program through it, when the build
                          runs under emulation without binfmt_misc (tools/aarch64/).
Every build writes xentc/_build_info.py beside the extension (build_ext_with_record below): the
compiler, its version and each part's flags, for xentc.show_config().
"""

import concurrent.futures
import os
import pprint
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_clib import build_clib
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    /* OpenMP 5.0's pause (GCC >= 9, LLVM >= 8): src_c/xc_fork.c calls it before every fork. */
    int paused = omp_pause_resource_all(omp_pause_soft) == 0;
    printf("%d\n", n > 0 && omp_get_max_threads() > 0 && paused);
    return 0;
}
"""


def flag_on(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def compiler_command():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def env_flags(*names):
    """The flags in these environment variables. The build's compiler reads CPPFLAGS, CFLAGS and
    LDFLAGS (and ARCHFLAGS on macOS); the probes must too, or they would test another compiler
    than the build's: without Homebrew's libomp paths, or for the host's architecture when
    cibuildwheel cross-compiles x86_64 wheels on an arm64 Mac."""
    flags = []
    for name in names:
        if name != "ARCHFLAGS" or sys.platform == "darwin":
            flags += shlex.split(os.environ.get(name, ""))
    return flags


def compile_env_flags():
    return env_flags("CPPFLAGS", "CFLAGS", "ARCHFLAGS")


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
            cmd = (
                compiler_command()
                + compile_env_flags()
                + flags
                + [src, "-o", exe]
                + link
                + env_flags("LDFLAGS")
            )
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                runner = shlex.split(os.environ.get("XENTC_CROSS_EMULATOR", ""))
                out = subprocess.run([*runner, exe], check=True, capture_output=True, timeout=120)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == b"1":
                return flags, link
    message = "xentc: the compiler cannot build and run an OpenMP program: building serially"
    if flag_on("XENTC_FAIL_NO_OPENMP"):
        raise RuntimeError(message + " (XENTC_FAIL_NO_OPENMP is set)")
    warnings.warn(message, stacklevel=1)
    return [], []


# Instruction sets beyond the baseline: (name, gcc/clang flags, MSVC flags). A set is built only
# when the compiler accepts its flags (probed, as c-blosc2's COMPILER_SUPPORT_* checks do).
# -mf16c in both: the float16 logits' conversions (src_c/xc_half.h); gcc's -mavx512f does not imply
# it, and xc_cpu.c requires the F16C bit for either set (every AVX2 CPU has it).
ISA_FLAGS = [
    ("avx2", ["-mavx2", "-mfma", "-mf16c"], ["/arch:AVX2"]),
    (
        "avx512",
        [
            "-mavx512f",
            "-mavx512dq",
            "-mavx512bw",
            "-mavx512vl",
            "-mfma",
            "-mf16c",
            "-mprefer-vector-width=512",
        ],
        ["/arch:AVX512"],
    ),
]


# aarch64's sets beyond the baseline (which is ARMv8.0 with Advanced SIMD, NEON, already):
# neon: the baseline's flags, with float16 converted by NEON's FCVTL/FCVTN (src_c/xc_half.h;
# -mtune=neoverse-n1 was tried: the same float32 loops, and 37 instead of 27 instructions per
# float64 logit, tools/aarch64/insn_counts.py); sve: vector-length agnostic SVE (Graviton 3 and
# 4, Grace, A64FX), every SVE CPU being ARMv8.2 or later, tuned for Neoverse V1 (Graviton 3).
AARCH64_ISA_FLAGS = [
    ("neon", [], []),
    ("sve", ["-march=armv8.2-a+sve", "-mtune=neoverse-v1"], []),
]


def compiler_accepts(flags):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int probe(int x) { return x + 1; }\n")
        cmd = (
            compiler_command()
            + compile_env_flags()
            + flags
            + ["-c", src, "-o", os.path.join(tmp, "probe.o")]
        )
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
    return True


def is_x86_64():
    # The target's architecture, not the build machine's (platform.machine()): sysconfig honours
    # _PYTHON_HOST_PLATFORM, which cibuildwheel sets when it cross-compiles on macOS.
    return sysconfig.get_platform().rsplit("-", 1)[-1].lower() in {"x86_64", "amd64"}


def is_aarch64():
    return sysconfig.get_platform().rsplit("-", 1)[-1].lower() in {"aarch64", "arm64"}


def sanitize_flags():
    """(compile flags, link flags) of the sanitizer build (XENTC_SANITIZE=1), else ([], []).

    OpenMP stays on: gcc's libgomp starts its threads through pthread_create, which the preloaded
    ASan runtime intercepts, so the threaded paths (per-thread scratch rows, split rows) are
    checked too, and no report came from libgomp itself (README, "Hardening"). A compiler whose
    OpenMP runtime disagrees with ASan can still build it serially with XENTC_NO_OPENMP=1."""
    if not flag_on("XENTC_SANITIZE"):
        return [], []
    if sys.platform == "win32":
        raise RuntimeError("xentc: XENTC_SANITIZE=1 needs gcc or clang (-fsanitize)")
    sanitizers = "-fsanitize=address,undefined"
    # -O1 after the -O3 of base_flags (the last -O wins): fast enough for the whole test suite,
    # and the reports' line numbers still match the source. -fno-wrapv undoes the -fwrapv of
    # Python's own CFLAGS, under which signed overflow is defined and UBSan never reports it:
    # an index computation that overflows int64 (or a narrowing int) must show.
    return [sanitizers, "-fno-omit-frame-pointer", "-g", "-O1", "-fno-wrapv"], [sanitizers]


SANITIZE_COMPILE, SANITIZE_LINK = sanitize_flags()


# gcc/clang flags of every translation unit (base_flags() says why each). A literal, so that the
# tools that compile the kernels outside setup.py read it from here (tools/kernel_flags.py).
KERNEL_FLAGS = ["-O3", "-fno-trapping-math", "-ffp-contract=fast", "-std=c99"]


def base_flags():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    # -fno-trapping-math lets gcc turn the selects in xc_math.h's exp into blends, so the row
    # loops vectorise; the kernels never rely on floating-point traps. -ffp-contract=fast lets
    # the FMA builds fuse the exp's multiply-adds (strict -std=c99 turns contraction off: the
    # AVX2+FMA and AVX-512 kernels had no FMA at all). No -ffast-math: NaN and inf must keep
    # their IEEE meaning (the spec's NaN-row and masked-class rules).
    return [*KERNEL_FLAGS, *SANITIZE_COMPILE]


def flags_stamp(name, flags):
    """A file whose modification time says when `flags` last changed, for the dependency checks.

    setuptools rebuilds an object only when a source or listed dependency is newer than it; the
    flags are not part of that check. pip builds in the source tree, so without this a serial
    rebuild (XENTC_NO_OPENMP=1) after an OpenMP one would link the stale OpenMP objects."""
    path = os.path.join("build", "xentc-flags", name + ".txt")
    text = "\n".join(flags) + "\n"
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def kernel_libraries(omp_compile):
    """build_clib entries: the baseline kernels, then each instruction set the compiler takes."""
    headers = [os.path.join("src_c", f) for f in os.listdir("src_c") if f.endswith((".h", ".inc"))]
    sets = [("base", [], [])]
    if is_x86_64():
        sets += ISA_FLAGS
    elif is_aarch64() and sys.platform.startswith("linux"):
        # Linux only: src_c/xc_cpu.c reads the kernel's hwcaps; macOS arm64 keeps the baseline.
        sets += AARCH64_ISA_FLAGS
    libraries, macros = [], []
    for name, gcc_flags, msvc_flags in sets:
        flags = msvc_flags if sys.platform == "win32" else gcc_flags
        if flags and sys.platform != "win32" and not compiler_accepts(flags):
            print(f"xentc: the compiler rejects {' '.join(flags)}: no {name} kernels")
            continue
        cflags = base_flags() + flags + omp_compile
        libraries.append(
            (
                f"xc_kernels_{name}",
                {
                    # one translation unit per dtype (src_c/xc_kernels.h)
                    "sources": [f"src_c/xc_{dtype}_{name}.c" for dtype in ("f32", "f64")],
                    "include_dirs": ["src_c"],
                    "cflags": cflags,
                    "obj_deps": {"": [*headers, flags_stamp(f"xc_kernels_{name}", cflags)]},
                },
            )
        )
        if name != "base":
            macros.append((f"XC_HAVE_{name.upper()}", "1"))
    return libraries, macros


def extension(macros, omp_compile, omp_link):
    stamp = flags_stamp(
        "extension",
        base_flags()
        + omp_compile
        + omp_link
        + SANITIZE_LINK
        + [f"-D{name}={value}" for name, value in macros],
    )
    return Extension(
        "xentc._kernels",
        sources=[
            "xentc/_kernels.pyx",
            "src_c/xc_dispatch.c",
            "src_c/xc_cpu.c",
            "src_c/xc_bandwidth.c",
            "src_c/xc_fork.c",
        ],
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), *macros],
        extra_compile_args=base_flags() + omp_compile,
        extra_link_args=omp_link + SANITIZE_LINK,
        depends=[*(os.path.join("src_c", f) for f in os.listdir("src_c")), stamp],
    )


def compiler_version(executable):
    """The compiler's own first line about itself: gcc and clang print it for --version on stdout;
    MSVC's cl rejects the option but prints its banner on stderr first."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for stream in (out.stdout, out.stderr):
        for line in stream.splitlines():
            if line.strip():
                return line.strip()
    return "unknown"


def isa_label(library):
    """xc_kernels_base -> baseline, xc_kernels_avx2 -> avx2: the names show_config() uses."""
    short = library.removeprefix("xc_kernels_")
    return "baseline" if short == "base" else short


def build_record(compiler, distribution, extension_module, omp_compile, omp_link):
    """What show_config() reports about this build (a dict of plain literals)."""
    command = list(getattr(compiler, "compiler_so", None) or [])
    if command:  # unix-style compilers; a compiler cache may lead the command
        wrapped = os.path.basename(command[0]) in {"ccache", "sccache"} and len(command) > 1
        executable = command[1] if wrapped else command[0]
    else:  # MSVC
        executable = getattr(compiler, "cc", None) or "cl.exe"
        command = [executable, *getattr(compiler, "compile_options", [])]
    if omp_compile or omp_link:
        openmp = "on"
    elif flag_on("XENTC_NO_OPENMP"):
        openmp = "off: XENTC_NO_OPENMP=1 at build time"
    else:
        openmp = "off: the compiler could not build and run an OpenMP program"
    return {
        "version": distribution.get_version(),
        "platform": sysconfig.get_platform(),
        "compiler": compiler_version(executable),
        # Python's own flags (sysconfig, CFLAGS/CPPFLAGS from the environment): every C file
        # of the build gets them before its own.
        "compiler_command": " ".join(command),
        "extension_flags": list(extension_module.extra_compile_args or []),
        "link_flags": list(extension_module.extra_link_args or []),
        "kernel_flags": {
            isa_label(name): list(info.get("cflags", []))
            for name, info in distribution.libraries or []
        },
        "openmp": openmp,
        "openmp_compile_flags": list(omp_compile),
        "openmp_link_flags": list(omp_link),
        "cython": Cython.__version__,
        "numpy": np.__version__,
    }


class build_clib_fresh(build_clib):
    """build_clib that starts each static library afresh. `ar -cr` adds to an archive already in
    build/ and never drops a member, so an object whose source left the library (the kernels'
    move from one file per ISA to one per (ISA, dtype)) stayed in it and clashed at link. The
    objects themselves are still reused while they are up to date."""

    def build_libraries(self, libraries):
        for name, _ in libraries:
            archive = os.path.join(self.build_clib, self.compiler.library_filename(name))
            if os.path.exists(archive):
                os.remove(archive)
        # The instruction-set libraries are independent and each takes seconds to compile: one
        # thread per library, as many at once as the cores allow (each waits on its compiler
        # process; setuptools' own checks and archiving stay per library).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        build_one = super().build_libraries
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, cores or 1)) as pool:
            done = [pool.submit(build_one, [library]) for library in libraries]
            for future in done:
                future.result()


class build_ext_with_record(build_ext):
    """build_ext that also writes xentc/_build_info.py beside the extension, for show_config().
    Generated by each build (it is in neither git nor the sdist), so a wheel built from the sdist
    records its own compiler and flags."""

    def record_path(self):
        if self.inplace:
            package_dir = self.get_finalized_command("build_py").get_package_dir("xentc")
        else:
            package_dir = os.path.join(self.build_lib, "xentc")
        return os.path.join(package_dir, "_build_info.py")

    def run(self):
        super().run()
        record = build_record(
            self.compiler, self.distribution, self.extensions[0], OMP_COMPILE, OMP_LINK
        )
        path = self.record_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(
                '"""How this copy of xentc was built: written by setup.py (build_ext), read '
                'by xentc.show_config()."""\n\n'
            )
            f.write(f"BUILD = {pprint.pformat(record, width=96, sort_dicts=False)}\n")

    def get_outputs(self):
        return [*super().get_outputs(), self.record_path()]


OMP_COMPILE, OMP_LINK = openmp_flags()
LIBRARIES, ISA_MACROS = kernel_libraries(OMP_COMPILE)

setup(
    cmdclass={"build_clib": build_clib_fresh, "build_ext": build_ext_with_record},
    libraries=LIBRARIES,
    ext_modules=cythonize(
        [extension(ISA_MACROS, OMP_COMPILE, OMP_LINK)],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False},
    ),
)

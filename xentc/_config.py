"""show_config(): what was built and what a call will use, like numpy.show_runtime()."""

import ctypes
import os
import platform
import sys

import numpy as np

from . import _kernels
from ._threads import default_n_threads

# The names XENTC_ISA takes on this machine's architecture, narrowest first (src_c/xc_dispatch.c's
# table: x86-64 builds avx2 and avx512, aarch64 Linux neon and sve, beyond the baseline).
if platform.machine().lower() in {"aarch64", "arm64"}:
    INSTRUCTION_SETS = ("baseline", "neon", "sve")
else:
    INSTRUCTION_SETS = ("baseline", "avx2", "avx512")

# _OPENMP dates of the OpenMP specifications (MSVC's /openmp reports 2.0).
OPENMP_VERSIONS = {
    200203: "2.0",
    200505: "2.5",
    200805: "3.0",
    201107: "3.1",
    201307: "4.0",
    201511: "4.5",
    201811: "5.0",
    202011: "5.1",
    202111: "5.2",
    202411: "6.0",
}


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


def build_info():
    """The record setup.py wrote when it built the extension (compiler, flags, OpenMP), or {}."""
    try:
        from ._build_info import BUILD
    except ImportError:  # a build that bypassed setup.py's build_ext
        return {}
    return BUILD


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _library_at(address):
    """Path of the shared library that holds `address` in this process, or None if unknown."""
    if sys.platform == "win32":
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetModuleHandleExW.argtypes = [
            ctypes.c_uint32,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p),
        ]
        kernel32.GetModuleFileNameW.argtypes = [ctypes.c_void_p, ctypes.c_wchar_p, ctypes.c_uint32]
        module = ctypes.c_void_p()
        # FROM_ADDRESS | UNCHANGED_REFCOUNT: look the module up by an address inside it.
        if not kernel32.GetModuleHandleExW(0x4 | 0x2, address, ctypes.byref(module)):
            return None
        path = ctypes.create_unicode_buffer(32768)
        length = kernel32.GetModuleFileNameW(module, path, len(path))
        return path.value if length else None
    # dladdr: in libc since glibc 2.34 and on macOS; in libdl before.
    for name in (None, "libdl.so.2"):
        try:
            dladdr = ctypes.CDLL(name).dladdr
            break
        except (OSError, AttributeError):
            continue
    else:
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def openmp_runtime():
    """Path of the OpenMP runtime library the kernels call (None: serial build, or not found).
    In a wheel repaired by auditwheel it is the libgomp copy in xentc.libs/ beside the package."""
    address = _kernels.openmp_entry_address()
    if not address:
        return None
    path = _library_at(address)
    if path and os.path.exists(path):
        return os.path.realpath(path)
    return None


def _openmp_text(build):
    if not _kernels.openmp_enabled():
        return build.get("openmp", "off (serial build)")
    version = _kernels.openmp_version()
    flags = " ".join(build.get("openmp_compile_flags", [])) or "?"
    return f"on (OpenMP {OPENMP_VERSIONS.get(version, version)}; compiled with {flags})"


def _kernel_flags_text(build):
    # Each kernel library gets the extension's flags plus its instruction set's.
    base = set(build.get("extension_flags", []))
    parts = []
    for isa, flags in build.get("kernel_flags", {}).items():
        extra = [flag for flag in flags if flag not in base]
        parts.append(f"{isa}: {' '.join(extra) or '-'}")
    return "; ".join(parts)


def config():
    """The facts show_config() prints, as a dict of strings."""
    from . import __version__

    build = build_info()
    unknown = "unknown (no build record: xentc/_build_info.py is written by setup.py)"
    n_threads, how = default_n_threads()
    openmp = _kernels.openmp_enabled()
    facts = {
        "xentc": __version__,
        "numpy": np.__version__
        + (f" (built against {build['numpy']})" if build.get("numpy") else ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "compiler": build.get("compiler", unknown),
        "compile command": build.get("compiler_command", unknown),
        "extension flags": " ".join(build.get("extension_flags", [])) or "-",
        "kernel flags": _kernel_flags_text(build) or unknown,
        "link flags": " ".join(build.get("link_flags", [])) or "-",
        "openmp": _openmp_text(build),
    }
    if openmp:
        facts["openmp runtime"] = openmp_runtime() or "not found"
    facts.update(
        {
            "default n_threads": f"{n_threads} ({how})" if openmp else "1 (serial build)",
            "kernels compiled": ", ".join(_kernels.isa_compiled()),
            "CPU supports": ", ".join(_kernels.isa_supported()),
            "kernels in use": _kernels.isa_active()
            + (f" (XENTC_ISA={os.environ['XENTC_ISA']})" if os.environ.get("XENTC_ISA") else ""),
        }
    )
    return facts


def show_config() -> None:
    """Print xentc's build and runtime configuration, like ``numpy.show_runtime()``.

    One line per fact: the versions of xentc, NumPy and Python; the compiler and flags the
    extension was built with; OpenMP (on or off, its version, the runtime library the kernels
    call); the default `n_threads` and how it was chosen; the instruction sets compiled, the
    ones this CPU supports and the one in use (``XENTC_ISA`` narrows it). Attach it to a bug
    report.

    Parameters
    ----------
    None

    Returns
    -------
    None
        The facts are printed to standard output.

    Examples
    --------
    >>> import xentc
    >>> xentc.show_config()  # doctest: +ELLIPSIS
    xentc:              ...
    numpy:              ...
    kernels in use:     ...
    """
    for key, value in config().items():
        print(f"{key + ':':<20}{value}")

#!/usr/bin/env bash
# Build xentc's aarch64 wheel: setup.py runs in the arm64 root's Python under qemu-user (so
# sysconfig, the extension's suffix, the numpy headers and the wheel's tag are the target's), and
# compiles with the host's cross compiler, aarch64-linux-gnu-gcc, natively (CC). The OpenMP probe's
# program runs through qemu (XENTC_CROSS_EMULATOR). From a copy of the checkout's files, into
# $work/dist; the wheel is then unpacked into $work/site, which the tests import.
#   tools/aarch64/build.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
started=$SECONDS
src="$work/src"
rm -rf "$src" "$work/dist" "$work/site"
mkdir -p "$src" "$work/dist" "$work/site"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$src"
# The headers the cross compiler's own search path lacks: the root's Python (pyconfig.h includes
# <aarch64-linux-gnu/python3.13/pyconfig.h>) and numpy's, which numpy reports by its path inside
# the root. Only these: the root's libc headers are newer than the cross toolchain's libc, which
# the wheel must run on (manylinux).
mkdir -p "$work/include/aarch64-linux-gnu"
ln -sfn "$root/usr/include/aarch64-linux-gnu/python3.13" "$work/include/aarch64-linux-gnu/python3.13"
numpy_include="$root$(apy -c 'import numpy; print(numpy.get_include())')"
# Cython on the host when it has Cython 3 (emulated, cythonize takes minutes): setup.py's
# cythonize then finds xentc/_kernels.c up to date. The same directives as setup.py's.
if python3 -c 'import Cython, sys; sys.exit(int(Cython.__version__.split(".")[0]) < 3)' 2>/dev/null; then
    (cd "$src" && python3 -c 'from Cython.Build import cythonize
cythonize(["xentc/_kernels.pyx"], quiet=True,
          compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False})')
fi
# setup.py once (pip would run it three times: requirements, metadata, wheel).
(cd "$src" && CC=aarch64-linux-gnu-gcc LDSHARED="aarch64-linux-gnu-gcc -shared" \
    CFLAGS="-I$root/usr/include/python3.13 -I$work/include -I$numpy_include" \
    XENTC_CROSS_EMULATOR="${emulator[*]}" XENTC_FAIL_NO_OPENMP=1 \
    apy setup.py -q bdist_wheel --dist-dir "$work/dist")
wheel=("$work"/dist/xentc-*.whl)
(cd "$work/site" && python3 -m zipfile -e "${wheel[0]}" .)
echo "aarch64 wheel ${wheel[0]##*/}: built in $((SECONDS - started)) s"

#!/usr/bin/env bash
# An arm64 Debian root for running xentc's Python tests under qemu-user, without binfmt_misc or
# chroot (neither is available in an unprivileged container): debootstrap --foreign downloads the
# packages and unpacks the essential ones; the rest are unpacked here with dpkg-deb -x (no
# maintainer scripts run: none of these packages needs one to be imported). Programs in the root
# then run as `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3` (tools/aarch64/run.sh).
# Debian 13 (trixie): its numpy (2.2) and Cython (3.0) are the ones pyproject.toml builds against.
# Usage: make_root.sh ROOT [SUITE]. Idempotent: a root that already has its stamp is kept.
set -euo pipefail
root="$1"
suite="${2:-trixie}"
mirror="${XENTC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
stamp="$root/.xentc-root-$suite"
# bfloat16 (tests/test_half.py, the parity tests' bfloat16 cases) comes from ml_dtypes, which Debian
# does not package: its aarch64 wheel from PyPI, unpacked into the root's dist-packages by the
# host's pip. Its own step, so that a root made before it gets it too.
add_ml_dtypes() {
    local python_version
    python_version="$(basename "$(ls -d "$root"/usr/lib/python3.[0-9]*)" | sed 's/python//')"
    [ -e "$root/.xentc-ml-dtypes" ] && return
    python3 -m pip install -q --root-user-action=ignore --no-deps --only-binary=:all: --implementation cp \
        --platform manylinux2014_aarch64 --python-version "$python_version" \
        --target "$root/usr/lib/python3/dist-packages" "ml_dtypes>=0.4"
    touch "$root/.xentc-ml-dtypes"
}
if [ -e "$stamp" ]; then
    add_ml_dtypes
    echo "arm64 root $root: already made ($suite)"
    exit 0
fi
# What the build and the test modules of tools/aarch64/test.sh import: the Python, numpy and
# scipy (the reference and the parity tests), pytest and hypothesis, Cython, setuptools and pip (to
# build and install the wheel), libgomp (OpenMP at run time).
packages=python3,python3-dev,python3-numpy,python3-scipy,python3-pytest,python3-hypothesis
packages+=,cython3,python3-setuptools,python3-pip,python3-wheel,python3-mpmath,libgomp1
started=$SECONDS
rm -rf "$root"
mkdir -p "$root"
debootstrap --foreign --arch=arm64 --variant=minbase --include="$packages" \
    "$suite" "$root" "$mirror"
for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
# The one maintainer script that matters: update-alternatives' links to the reference BLAS and
# LAPACK, which numpy and scipy load.
lib="$root/usr/lib/aarch64-linux-gnu"
ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
add_ml_dtypes
# Python under emulation runs ~20x slower, and compiling a module to bytecode is most of an
# import's time (numpy alone: 50 s): import what the build and the tests use once, with bytecode
# writing on, so that every later run reads the cached .pyc files.
env -u PYTHONDONTWRITEBYTECODE qemu-aarch64-static -L "$root" "$root/usr/bin/python3" -c \
    "import numpy, scipy.special, pytest, hypothesis, Cython.Build, setuptools, mpmath, sysconfig, ml_dtypes"
touch "$stamp"
echo "arm64 root $root ($suite): made in $((SECONDS - started)) s, $(du -sh "$root" | cut -f1)"

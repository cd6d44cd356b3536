#!/usr/bin/env bash
# CI's aarch64 step: the kernels cross-compiled as setup.py compiles them (one object per set and
# dtype, each with its set's flags) into one static program, tools/aarch64/kernel_check.c, run
# under qemu-user for the baseline, neon and sve sets, SVE at 128, 256 and 512 bits. No arm64 root,
# no Python: seconds, where the Python suite under emulation (make test-aarch64) takes many
# minutes. Needs gcc-aarch64-linux-gnu and qemu-user-static. Writes into $1 (default: a temporary
# folder).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
started=$SECONDS
cc=aarch64-linux-gnu-gcc
# setup.py's flags (KERNEL_FLAGS and each set's, read by tools/kernel_flags.py), and OpenMP.
flags_of() { python3 "$repo/tools/kernel_flags.py" "$1"; }
read -ra base <<<"$(flags_of common)"
base+=(-fopenmp -I"$repo/src_c")
declare -A flags=([base]="$(flags_of base)" [neon]="$(flags_of neon)" [sve]="$(flags_of sve)")
objects=()
for isa in base neon sve; do
    for dtype in f32 f64; do
        # shellcheck disable=SC2086
        $cc "${base[@]}" ${flags[$isa]} -c "$repo/src_c/xc_${dtype}_${isa}.c" -o "$out/${dtype}_${isa}.o" &
        objects+=("$out/${dtype}_${isa}.o")
    done
done
wait
$cc "${base[@]}" -DXC_HAVE_NEON=1 -DXC_HAVE_SVE=1 -static -o "$out/kernel_check" \
    "$repo/tools/aarch64/kernel_check.c" "$repo/src_c/xc_dispatch.c" "$repo/src_c/xc_cpu.c" \
    "${objects[@]}" -lm  # ld warns that libgomp.a's OpenACC profiling may dlopen: never called
echo "=== cross-compiled in $((SECONDS - started)) s"
# OMP_NUM_THREADS: the program asks for 3 threads itself; qemu runs them as host threads.
QEMU_CPU="max,sve=off" qemu-aarch64-static "$out/kernel_check" baseline neon
for bits in 128 256 512; do
    echo "=== SVE at $bits bits"
    QEMU_CPU="max,sve-default-vector-length=$((bits / 8))" qemu-aarch64-static "$out/kernel_check" \
        sve | tee "$out/sve$bits.txt"
done
# One binary, three lengths, the same bits: the kernels' sums do not depend on the length.
hashes=$(grep -h "results hash" "$out"/sve*.txt | sort -u | wc -l)
[ "$hashes" = 1 ] || { echo "SVE results differ between vector lengths"; exit 1; }
echo "=== aarch64 kernel check: $((SECONDS - started)) s"

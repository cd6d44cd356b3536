"""Instructions per logit of each kernel set, counted by qemu-user (no hardware needed).

qemu logs every translated block's instructions (-d in_asm) and, with chaining off, every block it
executes (-d exec,nochain); the count of a run is the sum over executed blocks of their length.
A run is one call on one row (tools/aarch64/count_insns.c). The difference between a row of 2N
and one of N logits, less the same difference without the call (the program fills the logits),
divided by N, is the cost of a logit in the row loops, without the call's fixed costs. aarch64
sets run under qemu-aarch64 (SVE at 128, 256 and 512 bits), x86-64 sets under qemu-x86_64 -cpu
max (its TCG has AVX2 and FMA since QEMU 7.2, but no AVX-512).

    python3 tools/aarch64/insn_counts.py OUTDIR   (builds its programs into OUTDIR; prints a
                                                  Markdown table)
"""

import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
from kernel_flags import kernel_flags  # noqa: E402  setup.py's flags, one place

COMMON, SETS = kernel_flags()
BASE = [*COMMON, "-fopenmp"]
X86 = {isa: SETS[isa] for isa in ("base", "avx2", "avx512")}
ARM = {isa: SETS[isa] for isa in ("base", "neon", "sve")}


def build(out, cc, sets, defines):
    objects = []
    for isa, flags in sets.items():
        for dtype in ("f32", "f64"):
            obj = os.path.join(out, f"{cc}-{dtype}_{isa}.o")
            subprocess.run(
                [
                    cc,
                    *BASE,
                    *flags,
                    "-I",
                    f"{REPO}/src_c",
                    "-c",
                    f"{REPO}/src_c/xc_{dtype}_{isa}.c",
                    "-o",
                    obj,
                ],
                check=True,
            )
            objects.append(obj)
    exe = os.path.join(out, f"count_insns-{cc}")
    subprocess.run(
        [
            cc,
            *BASE,
            *defines,
            "-static",
            "-I",
            f"{REPO}/src_c",
            "-o",
            exe,
            f"{REPO}/tools/aarch64/count_insns.c",
            f"{REPO}/src_c/xc_dispatch.c",
            f"{REPO}/src_c/xc_cpu.c",
            *objects,
            "-lm",
        ],
        check=True,
        capture_output=True,
    )
    return exe


def count(qemu, exe, args, env):
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        subprocess.run(
            [*qemu, "-d", "in_asm,exec,nochain", "-D", log.name, exe, *args],
            check=True,
            env={**os.environ, **env},
            capture_output=True,
        )
        sizes, runs, pc, n = {}, {}, None, 0
        with open(log.name, errors="replace") as f:
            for line in f:
                if line.startswith("Trace "):
                    m = re.search(r"\[[0-9a-f]+/([0-9a-f]+)/", line)
                    key = int(m.group(1), 16)
                    runs[key] = runs.get(key, 0) + 1
                elif line.startswith("IN:"):
                    if pc is not None:
                        sizes[pc] = n
                    pc, n = None, 0
                elif re.match(r"0x[0-9a-f]+:", line):
                    if pc is None:
                        pc = int(line.split(":")[0], 16)
                    n += 1
            if pc is not None:
                sizes[pc] = n
    return sum(sizes.get(k, 0) * c for k, c in runs.items())


def per_logit(qemu, exe, isa, dtype, grad, env, n=4096):
    """Instructions per logit of the call: what 2n logits cost beyond n, less the same difference
    for the program without the call (its initialisation of the logits also grows with n)."""

    def grows(mode):
        small = count(qemu, exe, [isa, dtype, str(n), str(mode)], env)
        return count(qemu, exe, [isa, dtype, str(2 * n), str(mode)], env) - small

    return (grows(grad) - grows(-1)) / n


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    os.makedirs(out, exist_ok=True)
    arm = build(out, "aarch64-linux-gnu-gcc", ARM, ["-DXC_HAVE_NEON=1", "-DXC_HAVE_SVE=1"])
    x86 = build(out, "gcc", X86, ["-DXC_HAVE_AVX2=1", "-DXC_HAVE_AVX512=1"])
    runs = [
        ("x86-64 baseline (SSE2)", ["qemu-x86_64-static", "-cpu", "max"], x86, "baseline", {}),
        ("x86-64 avx2", ["qemu-x86_64-static", "-cpu", "max"], x86, "avx2", {}),
        ("aarch64 baseline", ["qemu-aarch64-static"], arm, "baseline", {"QEMU_CPU": "max,sve=off"}),
        ("aarch64 neon", ["qemu-aarch64-static"], arm, "neon", {"QEMU_CPU": "max,sve=off"}),
    ]
    for bits in (128, 256, 512):
        runs.append(
            (
                f"aarch64 sve, {bits} bits",
                ["qemu-aarch64-static"],
                arm,
                "sve",
                {"QEMU_CPU": f"max,sve-default-vector-length={bits // 8}"},
            )
        )
    print("| set | f32 loss | f32 loss + grad | f64 loss | f64 loss + grad |")
    print("|---|---|---|---|---|")
    for label, qemu, exe, isa, env in runs:
        try:
            cells = [
                f"{per_logit(qemu, exe, isa, d, g, env):.2f}"
                for d in ("f32", "f64")
                for g in (0, 1)
            ]
        except subprocess.CalledProcessError as e:
            cells = [f"failed: {e.stderr.decode(errors='replace').strip()[:60]}"] * 4
        print(f"| {label} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()

"""setup.py's gcc/clang flags for the kernels, for the tools that compile them outside setup.py
(tools/aarch64/ci.sh, tools/aarch64/insn_counts.py), read from setup.py's source with ast:
importing setup.py would run setup(). One place for the flags, setup.py; these tools follow it.

    python3 tools/kernel_flags.py common  the flags of every kernel (KERNEL_FLAGS; no OpenMP)
    python3 tools/kernel_flags.py SET     a set's own flags: base (none), and those of ISA_FLAGS
                                          and AARCH64_ISA_FLAGS (avx2, avx512, neon, sve)
"""

import ast
import os
import sys

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def _literals():
    """setup.py's module-level assignments whose value is a literal, by name."""
    with open(SETUP) as f:
        tree = ast.parse(f.read(), SETUP)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass  # not a literal: none of ours
    return values


def kernel_flags():
    """(the flags of every kernel, {set: its own flags}); the baseline set has none of its own."""
    values = _literals()
    sets = {"base": []}
    for name, flags, _msvc in values["ISA_FLAGS"] + values["AARCH64_ISA_FLAGS"]:
        sets[name] = list(flags)
    return list(values["KERNEL_FLAGS"]), sets


if __name__ == "__main__":
    common, sets = kernel_flags()
    (which,) = sys.argv[1:]
    print(" ".join(common if which == "common" else sets[which]))

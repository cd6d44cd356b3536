# Shared by tools/aarch64/*.sh (sourced): where the arm64 root and the build live, and how a
# program of the root runs. Override with XENTC_ARM64_ROOT / XENTC_ARM64_WORK. The root stays in
# the user's cache (it takes minutes to make); the build is under the checkout's build/.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
root="${XENTC_ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/xentc-aarch64/root}"
work="${XENTC_ARM64_WORK:-$repo/build/aarch64}"
# qemu-user with the root as its prefix for absolute paths (-L): the dynamic loader, the libraries
# and Python come from the root. A program the emulated Python starts that is not in the root (the
# cross compiler, qemu itself) is found on the host and runs natively.
emulator=(qemu-aarch64-static -L "$root")
# The root's Python as a host command, $work/bin/python3: qemu passes that path as the program's
# argv[0] (-0), so it becomes the emulated Python's sys.executable, and a test that starts
# `sys.executable` in a subprocess starts this script again. Without it the kernel could not run
# the arm64 binary (no binfmt_misc in a container). The standard library is still found: Python
# falls back to its built-in prefix, /usr, which qemu looks up in the root first.
apython="$work/bin/python3"
mkdir -p "$work/bin"
cat >"$apython" <<WRAPPER
#!/bin/sh
unset PYTHONDONTWRITEBYTECODE  # emulated, a cached .pyc saves seconds a module
exec ${emulator[*]} -0 "\$0" "$root/usr/bin/python3" "\$@"
WRAPPER
chmod +x "$apython"
apy() { "$apython" "$@"; }

#!/usr/bin/env bash
# Build the sanitizer build of xentc (XENTC_SANITIZE=1: ASan + UBSan, see setup.py) into the
# virtual environment VENV, from a copy of this checkout's files, so that neither the checkout's
# build/ folder nor its installed copy ever holds sanitized objects.
#   tools/sanitize_build.sh VENV [PYTHON]
# VENV is created with --system-site-packages when missing (it borrows numpy, pytest, ...);
# PYTHON (default python3) creates it. Run the tests against it with tools/sanitize_run.py.
set -euo pipefail
venv="${1:?usage: tools/sanitize_build.sh VENV [PYTHON]}"
python="${2:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --system-site-packages "$venv"
fi
# The sources live inside the environment; their build/ folder stays between runs, so that a
# second run recompiles only what changed (setup.py's flag stamps catch changed flags).
src="$venv/xentc-src"
mkdir -p "$src"
# The files git knows of, and new ones it does not ignore: what a clean clone plus local edits holds.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$src"
# With build isolation, as `make build` (the environment's own setuptools, from ensurepip, can be
# older than pyproject.toml's build requirements).
XENTC_SANITIZE=1 "$venv/bin/python" -m pip install --quiet "$src[test]"
# The sanitized extension imports only with the ASan runtime preloaded: sanitize_run.py checks,
# under it, that this environment's xentc is the sanitizer build.
(cd "$venv" && "$python" "$repo/tools/sanitize_run.py" --python "$venv/bin/python" -- \
    -c "import xentc; xentc.show_config()")

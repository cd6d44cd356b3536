"""Run a Python command (pytest, the fuzzer) against a sanitizer build of xentc; fail on any report.

    python tools/sanitize_run.py --python /work/venv-asan/bin/python -- -m pytest -q tests/...

The interpreter named by --python must have xentc installed from `XENTC_SANITIZE=1 pip install .`
(CONTRIBUTING.md, "Hardening"). The extension is linked against libasan, but CPython is not: the
ASan runtime must come first in the process, so it is preloaded (LD_PRELOAD, the path gcc or clang
prints for -print-file-name=libasan.so). The command then runs with

  PYTHONMALLOC=malloc   every Python object comes from malloc, so ASan sees overflows into them
                        and LeakSanitizer finds the pointers that keep blocks alive (pymalloc's
                        arenas are mmap'd, and LSan does not scan them: a NumPy buffer owned by an
                        array object in an arena would look leaked);
  ASAN_OPTIONS          leak checking at exit, the suppressions of tools/lsan.supp (CPython's and
                        NumPy's own blocks, never xentc's), allocator_may_return_null=1 (a huge
                        allocation raises MemoryError, as without ASan), reports to files;
  UBSAN_OPTIONS         halt_on_error=1, print_stacktrace=1.

Every process of the run, subprocesses included (some tests start a fresh interpreter), writes
its ASan and LeakSanitizer reports to <log dir>/asan.<pid>. UBSan reports go to stderr, which is
passed through and scanned (a pytest run gets --capture=sys, so that pytest does not swallow
them). The run fails when the command fails, or any report file exists, or a report appeared on
stderr; the files are printed. Exit status: the command's, or 1 for reports alone.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def runtime_library(compiler, name):
    """Absolute path of the sanitizer runtime `name` (libasan.so) of `compiler`, or exit."""
    try:
        out = subprocess.run(
            [compiler, f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"sanitize_run: cannot ask {compiler} for {name}: {err}")
    # Without the library the compiler echoes the bare name back.
    if not os.path.isabs(out) or not os.path.exists(out):
        sys.exit(f"sanitize_run: {compiler} has no {name} (got {out!r})")
    return os.path.realpath(out)


def sanitizer_env(log_dir, compiler):
    env = dict(os.environ)
    preload = [runtime_library(compiler, "libasan.so")]
    if env.get("LD_PRELOAD"):
        preload.append(env["LD_PRELOAD"])
    env["LD_PRELOAD"] = ":".join(preload)
    env["PYTHONMALLOC"] = "malloc"
    supp = os.path.join(HERE, "lsan.supp")
    asan = {
        "detect_leaks": 1,
        "allocator_may_return_null": 1,
        "log_path": os.path.join(log_dir, "asan"),
        "print_suppressions": 0,
        # CPython's own 'ODR' between libpython and the executable is no bug of xentc's.
        "detect_odr_violation": 0,
    }
    env["ASAN_OPTIONS"] = ":".join(f"{k}={v}" for k, v in asan.items())
    env["LSAN_OPTIONS"] = f"suppressions={supp}:print_suppressions=0"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env


# The first line of every sanitizer report on stderr.
MARKERS = (
    "runtime error:",
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "AddressSanitizer:DEADLYSIGNAL",
    "ERROR: UndefinedBehaviorSanitizer",
)

PREFLIGHT = """
import xentc
flags = xentc._config.build_info().get("extension_flags", [])
if "-fsanitize=address,undefined" not in flags:
    raise SystemExit(f"{xentc.__file__}: not the sanitizer build (XENTC_SANITIZE=1); flags {flags}")
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter whose xentc is the sanitizer build",
    )
    parser.add_argument(
        "--cc",
        default=os.environ.get("CC", "gcc").split()[0],
        help="the compiler that built it (for its libasan.so)",
    )
    parser.add_argument("--log-dir", help="where reports go (default: a fresh temporary folder)")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="arguments for the interpreter, after --"
    )
    opts = parser.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    if not args:
        parser.error("nothing to run: give the interpreter's arguments after --")
    log_dir = opts.log_dir or tempfile.mkdtemp(prefix="xentc-sanitize-")
    os.makedirs(log_dir, exist_ok=True)
    for name in os.listdir(log_dir):  # reports of an earlier run in the same folder
        if name.startswith(("asan.", "ubsan.")):
            os.remove(os.path.join(log_dir, name))
    env = sanitizer_env(log_dir, opts.cc)
    print(f"sanitize_run: LD_PRELOAD={env['LD_PRELOAD']}", flush=True)
    print(f"sanitize_run: reports go to {log_dir}", flush=True)
    # A run against an ordinary build would pass without checking anything. (Leak checking off
    # for this one: its exit status must say only whether the build is the sanitizer build.)
    preflight_env = dict(
        env, ASAN_OPTIONS=env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
    )
    if subprocess.run([opts.python, "-c", PREFLIGHT], env=preflight_env).returncode:
        sys.exit("sanitize_run: the interpreter's xentc is not the sanitizer build")
    if "pytest" in args and not any(a.startswith(("--capture", "-s")) for a in args):
        # pytest's default capture swallows what C code writes to file descriptor 2, and a
        # report printed there is lost when the sanitizer then ends the process
        args = [*args, "--capture=sys"]
    # UBSan (as built into gcc's libubsan next to ASan) ignores log_path and reports on stderr:
    # stderr passes through here and is scanned.
    proc = subprocess.Popen([opts.python, *args], env=env, stderr=subprocess.PIPE)
    stderr_reports = 0
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        sys.stderr.write(line)
        if any(marker in line for marker in MARKERS):
            stderr_reports += 1
    status = proc.wait()
    reports = sorted(
        os.path.join(log_dir, f) for f in os.listdir(log_dir) if f.startswith(("asan.", "ubsan."))
    )
    for path in reports:
        with open(path, errors="replace") as f:
            print(f"\n===== {path}\n{f.read()}", file=sys.stderr)
    if reports or stderr_reports:
        print(
            f"sanitize_run: FAILED: {len(reports)} sanitizer report file(s) in {log_dir}, "
            f"{stderr_reports} report(s) on stderr",
            file=sys.stderr,
        )
        return status or 1
    print(f"sanitize_run: no sanitizer report (command exit status {status})")
    if not opts.log_dir:
        shutil.rmtree(log_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

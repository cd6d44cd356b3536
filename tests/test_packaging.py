"""A fresh install passes: the `test` extra (pyproject.toml) holds every module the suite imports,
except those a test guards with pytest.importorskip (torch, dask: each skips with its reason).

`make test` in a fresh virtual environment installs xentc with the test and dask extras and
nothing else; CI runs it so before installing torch. This test says which module is missing
without needing that fresh environment: it failed when tests/test_reference.py started to import
mpmath, which only torch had brought in.
"""

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")


def declared_modules():
    """Import names of the core dependencies and of the test extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    # The distribution name up to its version bound; their import names are the same, with "-"
    # read as "_" (pytest-benchmark is a plugin, never imported by name).
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].replace("-", "_") for r in requirements}


def imported_modules(path):
    """(top-level modules imported anywhere in the file, modules it guards with importorskip)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imported, guarded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            guarded.add(node.args[0].value.split(".")[0])
    return imported, guarded


def test_test_extra_holds_every_module_the_suite_imports():
    assert TESTS.is_dir(), f"the suite's sources are not beside this file: {TESTS}"
    local = {p.stem for p in TESTS.glob("*.py")} | {"xentc"}
    allowed = set(sys.stdlib_module_names) | local | declared_modules()
    missing = {}
    for path in sorted(TESTS.glob("*.py")):
        imported, guarded = imported_modules(path)
        for module in sorted(imported - allowed - guarded):
            missing.setdefault(module, []).append(path.name)
    assert not missing, (
        f"imported by the suite but neither in the test extra nor guarded by importorskip: "
        f"{missing}"
    )

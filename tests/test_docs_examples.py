"""Every example the documentation shows runs: the ```python blocks of README.md and docs/*.md,
each alone in a fresh namespace and a scratch directory (so each must be self-contained), and the
Examples sections of the public docstrings (doctest). A block that needs an optional package
(torch, dask, ml_dtypes, threadpoolctl) is skipped, naming it, where that package is missing.

The pages are read from the checkout this file lives in; the code they run imports the installed
xentc, as every other test does.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Fences this project uses: python (executed), text (signatures, output), sh (shell commands).
LANGUAGES = {"python", "text", "sh"}
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`\n]*)$")
# An import of one of these in a block makes the block need that package.
OPTIONAL = {
    "torch": "torch (the CPU build; see docs/install.md)",
    "dask": "dask (pip install '.[dask]')",
    "distributed": "distributed (pip install '.[dask]')",
    "ml_dtypes": "ml_dtypes (bfloat16 arrays)",
    "threadpoolctl": "threadpoolctl",
}
# xentc.torch and xentc.dask import torch and dask themselves.
IMPLIED = {"xentc.torch": ("torch",), "xentc.dask": ("dask",)}


def fenced_blocks(path):
    """[(first line number, info string, code)] of every fenced block of a Markdown page."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, start = match["fence"], i + 1
        j = start
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        if j == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: a code fence that is never closed")
        blocks.append((start, match["info"].strip(), "\n".join(lines[start:j])))
        i = j + 1
    return blocks


def python_blocks():
    params = []
    for page in PAGES:
        for line, info, code in fenced_blocks(page):
            if info.split()[0:1] == ["python"]:
                name = f"{page.relative_to(ROOT)}:{line}"
                marks = [pytest.mark.torch] if "torch" in needed_packages(code) else []
                params.append(pytest.param(name, code, id=name, marks=marks))
    return params


def needed_packages(code):
    """The optional top-level packages a block imports (directly or through xentc.torch/dask)."""
    needed = []
    for module in re.findall(r"^\s*(?:import|from)\s+([\w.]+)", code, flags=re.MULTILINE):
        top = module.split(".")[0]
        if top in OPTIONAL:
            needed.append(top)
        for prefix, packages in IMPLIED.items():
            if module == prefix or module.startswith(prefix + "."):
                needed.extend(packages)
    return list(dict.fromkeys(needed))


def test_pages_exist_and_hold_examples():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    for page in ("README.md", "docs/user-guide.md", "docs/semantics.md", "docs/install.md"):
        assert page in names, f"{page} is missing"
    assert len(python_blocks()) >= 10, "the pages' python blocks were not found"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fence_names_its_language(page):
    """An untagged fence would be neither run nor highlighted: every block says what it is."""
    for line, info, _ in fenced_blocks(page):
        language = info.split()[0] if info else ""
        if language.startswith("{"):  # a MyST directive ({toctree}, {include}, {eval-rst})
            continue
        assert language in LANGUAGES, (
            f"{page.name}:{line}: code fence {info!r}; use one of {sorted(LANGUAGES)}"
        )


@pytest.mark.parametrize(("name", "code"), python_blocks())
def test_markdown_example_runs(name, code, tmp_path, monkeypatch, capsys):
    for package in needed_packages(code):
        pytest.importorskip(package, reason=f"{name} needs {OPTIONAL[package]}")
    monkeypatch.chdir(tmp_path)  # examples may write files (logits.npy, ...): here, not in cwd
    namespace = {"__name__": "__main__"}
    exec(compile(code, name, "exec"), namespace)  # running the docs is the point
    capsys.readouterr()


# ---- docstring examples --------------------------------------------------------------------------

# module -> the optional package it needs
DOCSTRING_MODULES = {
    "xentc": None,
    "xentc._api": None,
    "xentc._config": None,
    "xentc._shards": None,
    "xentc.dask": "dask",
    "xentc.bench": None,
    "xentc.torch": "torch",
    "xentc._torch_linear": "torch",
}


@pytest.mark.parametrize("module_name", list(DOCSTRING_MODULES))
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    package = DOCSTRING_MODULES[module_name]
    if package:
        pytest.importorskip(package, reason=f"{module_name} needs {OPTIONAL[package]}")
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]
    assert tests, f"{module_name} has no docstring examples"
    monkeypatch.chdir(tmp_path)  # to_npy's example writes a file
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    failed = sum(runner.run(test, out=report.append).failed for test in tests)
    assert failed == 0, "".join(report)


def test_public_api_docstrings_have_numpydoc_sections():
    """Each public function of the core states Parameters, Returns and Examples; each class
    Attributes and Examples (numpydoc's sections, which the API reference renders)."""
    import xentc

    for name in xentc.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(xentc, name)
        doc = obj.__doc__ or ""
        wanted = (
            ("Attributes", "Examples")
            if isinstance(obj, type)
            else ("Parameters", "Returns", "Examples")
        )
        for section in wanted:
            assert f"\n{section}\n" in doc.replace("    ", ""), (
                f"xentc.{name}'s docstring has no {section} section"
            )

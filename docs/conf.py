"""Sphinx configuration: MyST pages (Markdown, like the README), numpydoc-format docstrings
rendered by napoleon, and autodoc over the INSTALLED xentc (make docs installs it first)."""

import os
import sys

# Never document the source tree: it has no compiled extension, and a stale one would document
# code that is not what users install. `make docs` runs sphinx-build from outside the checkout.
here = os.path.dirname(os.path.abspath(__file__))
checkout = os.path.dirname(here)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != checkout]
import xentc  # noqa: E402

if os.path.abspath(xentc.__file__).startswith(checkout + os.sep):
    raise RuntimeError(f"docs: xentc imported from the checkout ({xentc.__file__}); install it "
                       "(pip install '.[docs]') and build from outside the checkout (make docs)")

project = "xentc"
release = version = xentc.__version__
copyright = "the xentc authors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve to the heading's anchor

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# `name` in a docstring (numpydoc's convention) links to that object where it is documented
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures and the Parameters sections say it

html_theme = "alabaster"
html_title = f"xentc {release}"

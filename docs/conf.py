"""Sphinx configuration of fastbp's documentation site.

Build: ``python -m sphinx -W -n --keep-going -b html docs docs/_build/html``
(``pip install -e ".[docs]"``). Warnings are errors, references are nitpicky, and
numpydoc validates the docstrings of every documented public name.
"""
import os
import pathlib
import sys

import fastbp

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).parent))  # _api_names

project = "fastbp"
copyright = "fastbp developers"
version = release = fastbp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "_templates", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip",
                    "auto_examples/*.md5", "auto_examples/*.json"]
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["myst.header"]

html_theme = "pydata_sphinx_theme"
html_title = "fastbp"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []

autosummary_generate = True
# A subclass overriding a hook is documented by the base class alone.
autodoc_inherit_docstrings = False
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# Parameter types stay plain text: the site builds without the network (no intersphinx), and
# nitpicky mode then checks only the references written on purpose.
numpydoc_xref_param_type = False
# numpydoc checks every documented public docstring: a summary, every parameter of the
# signature documented and no other, a Returns section where the function returns a value.
numpydoc_validation_checks = {"GL08", "SS01", "PR01", "PR02", "PR10", "RT01"}

nitpick_ignore_regex = [
    (r"py:class", r"(numpy\.)?ndarray|numpy\.dtype|np\..*|numba\..*|sklearn\..*|onnx\..*|torch\..*"),
    (r"py:class", r"optional|default.*|callable|array-like|path-like|file-like|dtype.*"),
    (r"py:class", r"(str|int|float|bool|dict|list|tuple|object|None|bytes)"),
    (r"py:obj", r"(str|int|float|bool|dict|list|tuple|object|None|bytes)"),
    (r"py:class", r"(ValueError|TypeError|KeyError|RuntimeError|AssertionError|OSError|ImportError|Exception)"),
    (r"py:exc", r".*Error"),
]

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    # Each example is a few seconds; the gallery stays far below CI's budget.
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
}
os.environ.setdefault("MPLBACKEND", "Agg")

"""Sphinx configuration for pyro_flowvi (built with -W in the test suite)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pyro_flowvi"
author = "pyro_flowvi developers"
copyright = "2026, pyro_flowvi developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("References", "params_style")]
intersphinx_mapping = {}
nitpicky = False
suppress_warnings = ["ref.python"]
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]

"""pytest plugin entry (``pytest11``): inert unless a backend is named.

An autoloaded plugin loads in every pytest session of every user, so this module only adds its
options; the suite itself is collected when ``--pappus-backend`` (or ``PAPPUS_BACKEND``) names
a backend. Where plugin autoloading is disabled, use ``-p pappus_conformance.plugin``.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pappus", "pappus conformance suite")
    group.addoption("--pappus-backend", default=os.environ.get("PAPPUS_BACKEND"),
                    help="run the pappus conformance suite against this backend")
    group.addoption("--pappus-engine", default=os.environ.get("PAPPUS_ENGINE"),
                    help="engine kind to test (sequential, multiprocess; default: all the backend has)")

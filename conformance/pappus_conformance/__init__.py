"""The pappus conformance suite: isolation properties any backend runs against itself.

This package is the pytest plugin (entry point ``pytest11: pappus_conformance``): it is inert
unless ``--pappus-backend`` names a backend. Where plugin autoloading is disabled, load it with
``-p pappus_conformance``. The hooks and fixtures live in :mod:`pappus_conformance.plugin`.
"""

from .fixtures import (  # noqa: F401
    harness,
    make_harness,
    pappus_backend,
    pappus_toolchain,
    pytest_generate_tests,
    suite_libraries,
)
from .plugin import (  # noqa: F401 - hooks and fixtures pytest finds on this module
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
    pytest_sessionfinish,
    pytest_sessionstart,
)

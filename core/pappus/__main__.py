"""``python -m pappus`` is the ``pappus`` command."""

import sys

from .cli import main

sys.exit(main())

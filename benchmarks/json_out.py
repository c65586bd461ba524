"""``--json FILE`` of the benchmark scripts, in one place.

``json_file`` is the option's argparse ``type``: it checks the path when the arguments are
parsed, before a run that can take minutes, and creates its missing parent directories then
(``out/bench/cluster.json`` in a fresh clone). The figures are written at the end with
``pappus.bench.report.write_json``, which creates the directories again if they went away.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def json_file(value: str) -> Path:
    """argparse ``type`` for ``--json FILE``: a file that can be written, its directories created."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a directory; give a file name (e.g. {path / 'results.json'})")
    existing = path.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {existing} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{value}: cannot create its directory: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{value}: not writable")
    return path

"""``--json FILE`` of the benchmark scripts, in one place.

``json_file`` is the option's argparse ``type``: it checks the path when the arguments are
parsed, before a run that can take minutes, and creates its missing parent directories then
(``out/bench/cluster.json`` in a fresh clone). ``write_json`` writes the figures at the end,
creating the directories again if they went away meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


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


def write_json(doc: Any, path: str | Path, **dumps: Any) -> None:
    """Write ``doc`` as indented JSON to ``path``, creating its parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, **dumps))

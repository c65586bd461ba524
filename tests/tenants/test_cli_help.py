"""Every argument of ``pappus tenant`` and ``pappus serve`` has help text (the generated CLI
reference shows an empty cell otherwise), and ``pappus serve --help`` points at a page that is
in the repository."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pappus.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> dict[str, argparse.ArgumentParser]:
    top = _subparsers(build_parser())
    out = {"serve": top["serve"]}
    out.update({f"tenant {name}": sub for name, sub in _subparsers(top["tenant"]).items()})
    return out


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_argument_has_help(command):
    parser = _commands()[command]
    empty = [action.option_strings[0] if action.option_strings else action.dest
             for action in parser._actions
             if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()]
    assert not empty, f"pappus {command}: no help for {empty}"


def test_serve_help_cites_pages_that_exist():
    text = _commands()["serve"].format_help()
    assert "DESIGN.md" not in text
    assert "docs/http.md" in text and (REPO / "docs" / "http.md").is_file()

"""The generated references cover their sources (they are generated at build time, never
committed, so they cannot be stale; these tests check that the generators miss nothing)."""

from __future__ import annotations

import argparse
import ast
import re
from typing import Any

import pytest

from .conftest import DOCS


def _anchors(markdown: str) -> set[str]:
    return set(re.findall(r"\{#([A-Za-z0-9_-]+)\}", markdown))


def _links(markdown: str) -> set[str]:
    return set(re.findall(r"\]\(#([A-Za-z0-9_-]+)\)", markdown))


def _walk(parser: argparse.ArgumentParser, path: list[str]) -> list[tuple[list[str], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    out += _walk(sub, [*path, name])
    return out


def test_cli_reference_covers_every_command_and_option(docs_gen: Any) -> None:
    from pappus.cli import build_parser

    md = docs_gen.cli_reference()
    anchors = _anchors(md)
    commands = _walk(build_parser(), ["pappus"])
    assert len(commands) > 5
    for path, parser in commands[1:]:
        assert "-".join(path) in anchors, f"{' '.join(path)} is missing from the CLI reference"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                if option != "--debug":  # listed once, for every command
                    assert option in md, f"{' '.join(path)} {option} is missing from the CLI reference"
        if parser.epilog:
            assert parser.epilog.strip().splitlines()[-1].strip() in md
    assert _links(md) <= anchors, "the command index links to a missing section"


def test_cli_reference_lists_new_backend(docs_gen: Any) -> None:
    md = docs_gen.cli_reference()
    assert "{#pappus-new-backend}" in md and "pappus new-backend mygpu" in md


def test_config_reference_covers_the_schema(docs_gen: Any) -> None:
    schema = docs_gen.load_schema()
    md = docs_gen.config_reference()
    anchors = _anchors(md)
    for name in schema["$defs"]:
        assert name.lower() in anchors, f"definition {name} has no section"
    for prop in schema["properties"]:
        assert f"| `{prop}` |" in md, f"root field {prop} is missing"
    for prop in schema["$defs"]["blueprint"]["properties"]:
        assert f"| `{prop}` |" in md, f"blueprint field {prop} is missing"
    for variant in ("Absolute", "Sizeof", "FromInput", "Mul", "Add", "CeilDiv", "Ptr", "Constant",
                    "ExecKernel", "Repeat"):
        assert f"`{variant}`" in md
    assert _links(md) <= anchors, f"dangling links: {sorted(_links(md) - anchors)}"


def test_schema_type_rendering(docs_gen: Any) -> None:
    assert docs_gen.schema_type({"$ref": "#/$defs/sizing"}) == "[sizing](#sizing)"
    assert docs_gen.schema_type({"type": "array", "items": {"type": "integer"}, "minItems": 1,
                                 "maxItems": 3}) == "array of integer, 1 to 3 items"
    assert "≤ 2⁶⁴−1" in docs_gen.schema_type({"type": "integer", "minimum": 0, "maximum": 2**64 - 1})
    assert docs_gen.text("a*b_c <d> [e] |") == r"a\*b\_c &lt;d&gt; \[e\] \|"


def test_properties_reference_covers_the_suite(docs_gen: Any) -> None:
    from pappus_conformance.plugin import SUITE_DIR
    from pappus_conformance.properties import PROPERTIES

    md = docs_gen.properties_reference()
    for prop, spec in PROPERTIES.items():
        assert f"`{prop}`" in md and f"`{spec.capability}`" in md
        tree = ast.parse((SUITE_DIR / f"test_{prop}.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                assert f"`{node.name}`" in md, f"{prop}::{node.name} is missing"


def test_capabilities_reference_lists_builtin_backends(docs_gen: Any) -> None:
    from pappus.interfaces import Capability

    md = docs_gen.capabilities_reference()
    for name in ("cpu", "host"):
        assert f"| `{name}` |" in md
    for cap in Capability:
        assert f"`{cap.value}`" in md.splitlines()[0]


def test_every_marker_is_known_and_every_generator_used(docs_gen: Any) -> None:
    used: set[str] = set()
    for page in DOCS.rglob("*.md"):
        for name in docs_gen.markers(page.read_text()):
            assert name in docs_gen.GENERATORS, f"{page}: unknown generated section {name!r}"
            used.add(name)
    assert used == set(docs_gen.GENERATORS), f"generators no page uses: {set(docs_gen.GENERATORS) - used}"


def test_expand(docs_gen: Any) -> None:
    assert "{#pappus-build}" in docs_gen.expand("x\n<!-- pappus:generate cli -->\ny")
    mention = "write `<!-- pappus:generate NAME -->` where it goes"
    assert docs_gen.expand(mention) == mention  # a marker is a line of its own
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        docs_gen.expand("<!-- pappus:generate nope -->", where="page.md")


def test_rst_docstrings(docs_gen: Any) -> None:
    doc = ("Register things.\n\n:param registry: call ``registry.add(x)`` with a\n"
           "    :class:`pappus.interfaces.Backend` or :class:`~pappus.interfaces.DeviceAPI`.\n\n"
           "Called once per process.\n\nLayout::\n\n    a/b")
    out = docs_gen.rst_docstring(doc)
    assert out.index("Called once per process.") < out.index(":param registry:")
    assert "`pappus.interfaces.Backend`" in out and "`DeviceAPI`" in out and ":class:" not in out
    assert "Layout:\n\n    a/b" in out

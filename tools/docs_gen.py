"""Reference pages generated from the code, at docs build time.

The reference pages in ``docs/`` are hand-written around markers such as
``<!-- pappus:generate cli -->``; this module replaces each marker with markdown generated from
the source of truth, every time the site is built, so a generated reference cannot go stale:

``cli``
    every command of ``pappus.cli.build_parser()``: help, usage, arguments, epilog examples
``config-schema``
    one table per definition of ``core/pappus/config/function.schema.json``
``conformance-properties``
    the properties of ``pappus_conformance.properties`` and the tests of each (read from source)
``backend-capabilities``
    what each built-in backend registers: engines, claimed capabilities, known gaps

It is a MkDocs hook (``hooks:`` in ``mkdocs.yml``: ``on_page_markdown`` expands the markers,
``on_files`` publishes the JSON Schema as ``schemas/function@1.json``) and a command:
``python tools/docs_gen.py cli`` prints one generated section. An unknown marker fails the
build. Importing this module needs pappus, not MkDocs.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "core" / "pappus" / "config" / "function.schema.json"
SCHEMA_URL = "schemas/function@1.json"  # where the site publishes the schema (relative to the site root)
#: A marker is a line of its own (so a mention in running text or inline code is not one).
MARKER = re.compile(r"^<!--\s*pappus:generate\s+([A-Za-z0-9_-]+)\s*-->[ \t]*$", re.MULTILINE)

try:  # the docs environment installs pappus; a bare checkout works from the source tree
    import pappus  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    for sub in ("core", "plugins", "conformance"):
        sys.path.insert(0, str(ROOT / sub))


# --- markdown helpers -------------------------------------------------------------------------

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "*": r"\*", "_": r"\_", "[": r"\[", "]": r"\]",
            "`": r"\`", "|": r"\|"}


def text(value: str) -> str:
    """Plain text safe inside markdown paragraphs and table cells."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def code(value: str) -> str:
    """Inline code safe inside a table cell."""
    value = value.replace("|", r"\|")
    fence = "``" if "`" in value else "`"
    return f"{fence}{value}{fence}"


def paragraphs(value: str) -> str:
    """Terminal-wrapped text (argparse descriptions) as markdown paragraphs."""
    blocks = re.split(r"\n\s*\n", value.strip())
    return "\n\n".join(" ".join(line.strip() for line in block.splitlines()) for block in blocks)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fenced(body: str, lang: str = "text") -> str:
    return f"```{lang}\n{body.rstrip()}\n```"


# --- CLI reference ----------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, aliases once."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {getattr(choice, "dest", ""): choice.help or "" for choice in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield name, helps.get(name, ""), sub


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    if isinstance(action, argparse._SubParsersAction):
        metavar = action.metavar if isinstance(action.metavar, str) else None
        return metavar or action.dest.upper()
    return formatter._format_action_invocation(action)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if isinstance(action, argparse._SubParsersAction):
        return "one of: " + ", ".join(name for name, _, _ in _subcommands(parser))
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _arguments(parser: argparse.ArgumentParser, skip: set[str]) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if set(action.option_strings) & skip:
            continue
        help_text = _help(parser, action)
        if action.choices and not isinstance(action, argparse._SubParsersAction) and action.option_strings:
            help_text = (help_text + "; " if help_text else "") + "one of: " + ", ".join(map(str, action.choices))
        kind = "option" if action.option_strings else "argument"
        if action.required and action.option_strings:
            kind = "option, required"
        rows.append([code(_invocation(parser, action)), kind, text(help_text)])
    return rows


def _command_section(path: list[str], help_line: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    full = " ".join(path)
    anchor = "-".join(path)
    out = [f"{'#' * level} {full} {{#{anchor}}}", ""]
    if help_line:
        out += [f"*{text(help_line)}*", ""]
    if parser.description:
        out += [paragraphs(text(parser.description)), ""]
    out += [fenced(parser.format_usage().removeprefix("usage: ")), ""]
    rows = _arguments(parser, skip={"--debug"})
    if rows:
        out += [table(["argument", "kind", "meaning"], rows), ""]
    if parser.epilog:
        out += [fenced(parser.epilog), ""]
    for name, sub_help, sub in _subcommands(parser):
        out += _command_section([*path, name], sub_help, sub, min(level + 1, 6))
    return out


def cli_reference() -> str:
    """Every command of ``pappus.cli.build_parser()``, in the order ``pappus --help`` lists them."""
    from pappus.cli import build_parser

    parser = build_parser()
    commands = list(_subcommands(parser))
    out = [
        fenced(parser.format_usage().removeprefix("usage: ")), "",
        paragraphs(text(parser.description or "")), "",
        table(["option", "meaning"], [[code(_invocation(parser, a)), text(_help(parser, a))]
                                      for a in parser._actions
                                      if a.option_strings and not isinstance(a, argparse._HelpAction)]), "",
        "Every command also accepts `-h`/`--help` and `--debug` (tracebacks instead of one-line errors). "
        "Errors exit non-zero with one line that says what is wrong.", "",
    ]
    if parser.epilog:
        out += [fenced(parser.epilog), ""]
    out += [table(["command", "what it does"],
                  [[f"[`{name}`](#pappus-{name})", text(help_line)] for name, help_line, _ in commands]), ""]
    for name, help_line, sub in commands:
        out += _command_section(["pappus", name], help_line, sub, 2)
    return "\n".join(out).rstrip() + "\n"


# --- config reference -------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def schema_type(node: dict[str, Any]) -> str:
    """A JSON Schema node as a short, linked type description (markdown)."""
    if "$ref" in node:
        name = _ref_name(node["$ref"])
        return f"[{name}](#{name.lower()})"
    if "const" in node:
        return f"the constant {code(json.dumps(node['const']))}"
    if "enum" in node:
        values = ", ".join(code(json.dumps(v)) for v in node["enum"])
        default = f" (default {code(json.dumps(node['default']))})" if "default" in node else ""
        return f"one of {values}{default}"
    if "oneOf" in node:
        return " or ".join(_variant_label(v) for v in node["oneOf"])
    kind = node.get("type")
    if kind == "array":
        items = schema_type(node.get("items", {}))
        bounds = _bounds(node, "minItems", "maxItems", "items")
        return f"array of {items}{bounds}"
    if kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return f"object: name → {schema_type(extra)}"
        if "properties" in node:
            return "object (" + ", ".join(code(k) for k in node["properties"]) + ")"
        return "object"
    if kind == "string":
        return "string" + (f" matching {code(node['pattern'])}" if "pattern" in node else "")
    if kind in ("integer", "number"):
        limits = []
        if "minimum" in node:
            limits.append(f"≥ {node['minimum']}")
        if "exclusiveMinimum" in node:
            limits.append(f"> {node['exclusiveMinimum']}")
        if "maximum" in node:
            limits.append("≤ 2⁶⁴−1" if node["maximum"] == 2**64 - 1 else f"≤ {node['maximum']}")
        return str(kind) + (f" ({', '.join(limits)})" if limits else "")
    return str(kind or "any")


def _bounds(node: dict[str, Any], lo: str, hi: str, what: str) -> str:
    if lo in node and hi in node:
        return f", {node[lo]} to {node[hi]} {what}" if node[lo] != node[hi] else f", exactly {node[lo]} {what}"
    if lo in node:
        return f", at least {node[lo]}"
    if hi in node:
        return f", at most {node[hi]}"
    return ""


def _single_key(node: dict[str, Any]) -> str | None:
    """The tag of a ``{"Tag": ...}`` variant (an object with exactly one required property)."""
    props = node.get("properties", {})
    if node.get("type") == "object" and len(props) == 1 and node.get("required") == list(props):
        return str(next(iter(props)))
    return None


def _variant_label(node: dict[str, Any]) -> str:
    tag = _single_key(node)
    if tag is not None:
        return code(f'{{"{tag}": …}}')
    return schema_type(node)


def _fields_table(node: dict[str, Any]) -> str:
    required = set(node.get("required", []))
    rows = []
    for name, prop in node.get("properties", {}).items():
        rows.append([code(name), schema_type(prop), "yes" if name in required else "no",
                     text(prop.get("description", ""))])
    return table(["field", "type", "required", "meaning"], rows)


def _nested_objects(tag: str, node: dict[str, Any]) -> dict[str, Any] | None:
    inner = node.get("properties", {}).get(tag, {})
    return inner if inner.get("type") == "object" and "properties" in inner else None


def _definition_section(name: str, node: dict[str, Any], level: int = 3) -> list[str]:
    out = [f"{'#' * level} {name} {{#{name.lower()}}}", ""]
    if node.get("description"):
        out += [text(node["description"]), ""]
    if "oneOf" in node:
        rows, nested = [], []
        for variant in node["oneOf"]:
            tag = _single_key(variant)
            if tag is None:
                rows.append(["a plain value", schema_type(variant)])
                continue
            value = variant["properties"][tag]
            inner = _nested_objects(tag, variant)
            rows.append([code(tag), f"[fields](#{name.lower()}-{tag.lower()})" if inner else schema_type(value)])
            if inner:
                nested.append((tag, inner))
        out += [table(["form", "value"], rows), ""]
        for tag, inner in nested:
            out += [f"{'#' * min(level + 1, 6)} {name}: {tag} {{#{name.lower()}-{tag.lower()}}}", "",
                    _fields_table(inner), ""]
    elif node.get("type") == "object" and "properties" in node:
        out += [_fields_table(node), ""]
    else:
        out += [f"Type: {schema_type(node)}.", ""]
    return out


def _root_item_forms(schema: dict[str, Any]) -> list[str]:
    """The object forms allowed inside arrays of the root and blueprint (kernels, inputs)."""
    out = []
    places = [("kernels", schema["properties"]["kernels"]),
              ("blueprint.inputs", schema["$defs"]["blueprint"]["properties"]["inputs"])]
    for where, prop in places:
        for variant in prop.get("items", {}).get("oneOf", []):
            if variant.get("type") == "object":
                out += [f"An entry of {code(where)} may also be an object:", "", _fields_table(variant), ""]
    return out


def config_reference() -> str:
    """One table per definition of the function config's JSON Schema."""
    schema = load_schema()
    out = [
        f"Generated from `core/pappus/config/function.schema.json`: {text(schema.get('title', ''))}, "
        f"`$id` {code(schema.get('$id', ''))}.", "",
        text(schema.get("description", "")), "",
        "### The config (root object) {#root}", "",
        _fields_table(schema), "",
        *_root_item_forms(schema),
    ]
    for name, node in schema.get("$defs", {}).items():
        out += _definition_section(name, node)
    return "\n".join(out).rstrip() + "\n"


# --- conformance properties -------------------------------------------------------------------


def _suite_tests(module: Path) -> list[tuple[str, list[str]]]:
    """(test name, extra capabilities from ``@pytest.mark.requires``) of a suite module."""
    tree = ast.parse(module.read_text())
    tests = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            extra = []
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "requires":
                    extra += [a.value for a in deco.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            tests.append((node.name, extra))
    return tests


def properties_reference() -> str:
    """The isolation properties, the capability each needs, and its tests."""
    from pappus_conformance.plugin import SUITE_DIR
    from pappus_conformance.properties import PROPERTIES

    rows = []
    for prop, spec in PROPERTIES.items():
        module = SUITE_DIR / f"test_{prop}.py"
        tests = _suite_tests(module) if module.exists() else []
        names = "<br>".join(code(t) + (f" (also {', '.join(code(c) for c in extra)})" if extra else "")
                            for t, extra in tests)
        rows.append([code(prop), code(spec.capability or "-"), text(spec.summary), names or "-"])
    return table(["property", "capability", "what it proves", "tests"], rows) + "\n"


# --- backend capabilities ---------------------------------------------------------------------


def capabilities_reference() -> str:
    """What each built-in backend (entry points of the pappus distribution) registers."""
    from importlib import metadata

    from pappus.interfaces import Capability
    from pappus.plugins import ENTRY_POINT_GROUP, Plugins

    builtin = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
               if getattr(getattr(ep, "dist", None), "name", None) == "pappus"]
    plugins = Plugins().load(entry_points=builtin)
    caps = list(Capability)
    rows = []
    for backend in sorted(plugins.backends, key=lambda b: b.name):
        if plugins.records.get(backend.plugin) is None:
            continue
        marks = ["✓" if c in backend.capabilities else "–" for c in caps]
        rows.append([code(backend.name), *marks, str(len(backend.known_gaps)),
                     ", ".join(code(e) for e in backend.engine_names())])
    for record in plugins.records.values():
        if not record.ok:
            rows.append([code(record.name), *["?" for _ in caps], "?", text(f"plugin failed to load: {record.error}")])
    header = ["backend", *[code(c.value) for c in caps], "known gaps", "engines"]
    return table(header, rows) + "\n"


# --- docstrings: a griffe extension ------------------------------------------------------------

try:  # only the docs build needs griffe (mkdocstrings' loader)
    from griffe import Extension as _GriffeExtension
except ImportError:  # pragma: no cover - depends on the environment
    _GriffeExtension = object  # type: ignore[assignment,misc]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`([^`]+)`")
_FIELD = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword|type|raises?|except|exception|"
                    r"returns?|rtype|yields?|var|ivar|cvar|vartype)\b")


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def rst_docstring(value: str) -> str:
    """pappus's reST docstrings as griffe's Sphinx-style parser and Markdown need them.

    Cross-reference roles (``:class:`x```) become inline code; prose that follows a field list
    (reST ends a field list at an unindented paragraph) moves before the fields, so it is not
    read as part of the last ``:param:``; ``::`` before a literal block becomes ``:``.
    """
    value = _ROLE.sub(_role, value)
    value = re.sub(r"(?<=\S)::\n(\s*\n)", r":\n\1", value)
    head: list[str] = []
    fields: list[str] = []
    tail: list[str] = []
    current = head
    for block in re.split(r"\n[ \t]*\n", value):
        first = block.split("\n", 1)[0]
        if _FIELD.match(first):
            current = fields
        elif not first[:1].isspace():  # an unindented paragraph ends a field list
            current = tail if fields else head
        current.append(block)  # indented blocks continue whatever came before
    return "\n\n".join(head + tail + fields)


class RstDocstrings(_GriffeExtension):
    """Griffe extension (``extensions:`` in mkdocs.yml) applying :func:`rst_docstring`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if getattr(obj, "docstring", None) is not None:
            obj.docstring.value = rst_docstring(obj.docstring.value)


# --- the hook ---------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "config-schema": config_reference,
    "conformance-properties": properties_reference,
    "backend-capabilities": capabilities_reference,
}


def expand(markdown: str, where: str = "<markdown>") -> str:
    """Replace every ``<!-- pappus:generate NAME -->`` marker; an unknown NAME is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated section {name!r} "
                             f"(known: {', '.join(sorted(GENERATORS))})")
        return GENERATORS[name]().rstrip()

    return MARKER.sub(replace, markdown)


def markers(markdown: str) -> list[str]:
    return MARKER.findall(markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """MkDocs hook: expand the generated sections of a page."""
    from mkdocs.exceptions import PluginError

    try:
        return expand(markdown, where=page.file.src_path)
    except ValueError as exc:
        raise PluginError(str(exc)) from None


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    """MkDocs hook: publish the function config's JSON Schema at ``schemas/function@1.json``."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, SCHEMA_URL, content=SCHEMA_PATH.read_text()))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a generated reference section.")
    parser.add_argument("section", choices=sorted(GENERATORS))
    args = parser.parse_args(argv)
    sys.stdout.write(GENERATORS[args.section]())
    return 0


if __name__ == "__main__":
    sys.exit(main())

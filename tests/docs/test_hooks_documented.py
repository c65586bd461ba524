"""Every hook in pappus.hookspecs is documented (datasette's test_docs, for pluggy hooks).

The hooks page renders each hook from its declaration with a ``::: pappus.hookspecs.NAME``
directive (mkdocstrings); a hook without one is missing from the docs.
"""

from __future__ import annotations

import inspect
import re

import pytest

import pappus.hookspecs as hookspecs

from .conftest import DOCS

HOOKS_PAGE = DOCS / "reference" / "hooks.md"


def declared_hooks() -> list[str]:
    return sorted(name for name, obj in vars(hookspecs).items()
                  if inspect.isfunction(obj) and hasattr(obj, "pappus_spec"))


def documented_hooks() -> list[str]:
    return re.findall(r"^::: pappus\.hookspecs\.(\w+)\s*$", HOOKS_PAGE.read_text(), re.MULTILINE)


def test_there_are_hooks() -> None:
    assert "pappus_register_backends" in declared_hooks()


@pytest.mark.parametrize("hook", declared_hooks())
def test_hook_is_documented(hook: str) -> None:
    assert hook in documented_hooks(), (
        f"hook {hook} is declared in core/pappus/hookspecs.py but not documented: add "
        f"'::: pappus.hookspecs.{hook}' to docs/reference/hooks.md")


@pytest.mark.parametrize("hook", declared_hooks())
def test_hook_has_a_docstring(hook: str) -> None:
    assert inspect.getdoc(getattr(hookspecs, hook)), f"hook {hook} has no docstring to render"


def test_no_stale_or_repeated_hooks_in_docs() -> None:
    documented = documented_hooks()
    assert sorted(set(documented) - set(declared_hooks())) == [], "the docs render hooks that do not exist"
    assert len(documented) == len(set(documented)), "a hook is rendered twice"

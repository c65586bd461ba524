"""The site as a whole: navigation, examples that must stay valid, and a strict build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import DOCS, ROOT


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_nav_covers_every_page(mkdocs_config: dict) -> None:
    nav = _nav_pages(mkdocs_config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from the nav in mkdocs.yml"
    for page in ("http.md", "tenants.md", "dandelion.md", "reference/cli.md", "reference/config.md",
                 "reference/hooks.md", "writing-a-backend.md", "conformance-ci.md", "security.md",
                 "results.md", "getting-started.md", "concepts.md", "development.md"):
        assert page in nav, f"{page} is not in the nav"


def test_hooks_and_griffe_extension_are_configured(mkdocs_config: dict) -> None:
    assert "tools/docs_gen.py" in mkdocs_config["hooks"]
    handler = next(p["mkdocstrings"] for p in mkdocs_config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    assert "tools/docs_gen.py:RstDocstrings" in handler["handlers"]["python"]["options"]["extensions"]


def _json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, re.DOTALL)


def _function_configs() -> list[tuple[str, dict]]:
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in _json_blocks(page.read_text()):
            try:
                doc = json.loads(block)
            except json.JSONDecodeError:  # a fragment or an upstream document, not a config
                continue
            if isinstance(doc, dict) and doc.get("schema") == "pappus/function@1":
                out.append((str(page.relative_to(DOCS)), doc))
    return out


def test_docs_have_config_examples() -> None:
    pages = {page for page, _ in _function_configs()}
    assert {"concepts.md", "reference/config.md"} <= pages


@pytest.mark.parametrize("page,config", _function_configs(), ids=[f"{p}-{i}" for i, (p, _) in enumerate(_function_configs())])
def test_config_examples_are_valid(page: str, config: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pappus.config import function_schema, parse_function

    jsonschema.validate(config, function_schema())
    parse_function(config)  # raises ValidationError listing every problem


def test_getting_started_has_the_readme_commands() -> None:
    text = (DOCS / "getting-started.md").read_text()
    for command in ("make demo", "make test", "pappus plugins", "pappus build", "pappus run"):
        assert command in text


def test_results_name_their_run_and_every_plot_exists() -> None:
    """Figures on the results page come with the command and machine that produced them, and
    every plot it shows was published next to it (``run_all.py --publish docs/results``)."""
    text = (DOCS / "results.md").read_text()
    assert "benchmarks/run_all.py" in text and re.search(r"^- machine: .+cores", text, re.MULTILINE)
    plots = re.findall(r"!\[[^\]]*\]\((results/[^)]+\.png)\)", text)
    assert plots, "the results page shows no plots"
    for plot in plots:
        assert (DOCS / plot).is_file(), f"{plot} is referenced by results.md but missing"
    # every target table says, row by row, whether the target was met
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("| figure | target | measured | met |")]
    assert headers, "no target table"
    for i in headers:
        rows = []
        for line in lines[i + 2:]:
            if not line.startswith("|"):
                break
            rows.append(line)
        assert rows, "an empty target table"
        for line in rows:
            assert line.rstrip().rsplit("|", 2)[-2].strip() in ("yes", "**no**", "-", "n/a"), line


def test_security_page_links_tenants() -> None:
    text = (DOCS / "security.md").read_text()
    assert re.search(r"^## Tenants$", text, re.MULTILINE) and "(tenants.md)" in text


def test_scaffold_pointers_lead_to_sections() -> None:
    """The skeleton's NotImplementedError messages point at docs/writing-a-backend.md#<method>."""
    from pappus.interfaces import DeviceAPI

    text = (DOCS / "writing-a-backend.md").read_text()
    anchors = set(re.findall(r"\{#([a-z0-9-]+)\}", text))
    methods = [name for name, value in vars(DeviceAPI).items()
               if not name.startswith("_") and (callable(value) or isinstance(value, property))]
    for method in methods:
        assert method.replace("_", "-") in anchors, f"writing-a-backend.md has no section for DeviceAPI.{method}"


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert (site / "schemas" / "function@1.json").read_text() == (ROOT / "core/pappus/config/function.schema.json").read_text()
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert 'id="pappus-new-backend"' in cli and 'id="pappus-conformance"' in cli
    hooks = (site / "reference" / "hooks" / "index.html").read_text()
    assert ":param" not in hooks and ":class:" not in hooks

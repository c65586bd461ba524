"""Skeletons of out-of-tree plugins, written by ``pappus new-backend``.

:func:`new_backend` writes a pip-installable package ``pappus-NAME`` that registers a backend
``NAME`` through the ``pappus`` entry-point group. The skeleton claims no capability and every
DeviceAPI method raises ``NotImplementedError`` pointing at the guide ("Writing a backend",
``docs/writing-a-backend.md``), so the conformance suite run against it fails honestly until the
author implements and claims each property. Its builder reuses the CPU backend's compiler, so
the suite's kernels build from the first run. With ``gpu=True`` the device is a subclass of
:class:`pappus.devices.gpu.GpuDevice` instead, for a GPU behind a vendor driver API: the pool,
copies and module bookkeeping come from core, and the skeleton holds only what differs.

The templates are text files in :mod:`pappus.scaffold.templates` (package data); placeholders
are ``{{name}}`` style and replaced literally, so the templates need no escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .._version import __version__
from ..errors import FieldError, ValidationError

#: A backend name: what ``Backend.name`` accepts that is also a Python identifier suffix.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

#: Where the scaffold's pointers lead: the guide, and its section anchors per DeviceAPI method.
DOCS_PAGE = "docs/writing-a-backend.md"

#: The device template of ``new_backend(..., gpu=True)``, written as ``{package}/device.py``.
GPU_DEVICE_TEMPLATE = "gpu_device.py.txt"

#: template file (in pappus.scaffold.templates) -> path in the new project
TEMPLATES: dict[str, str] = {
    "pyproject.toml.txt": "pyproject.toml",
    "README.md.txt": "README.md",
    "tox.ini.txt": "tox.ini",
    "gitignore.txt": ".gitignore",
    "package_init.py.txt": "{package}/__init__.py",
    "plugin.py.txt": "{package}/plugin.py",
    "device.py.txt": "{package}/device.py",
    "driver.py.txt": "{package}/driver.py",
    "build.py.txt": "{package}/build.py",
    "py.typed.txt": "{package}/py.typed",
    "test_plugin.py.txt": "tests/test_plugin.py",
}


@dataclass(frozen=True)
class Names:
    """Every spelling of a backend name the templates use."""

    name: str  # my_gpu: the backend and entry-point name
    package: str  # pappus_my_gpu: the import package
    dist: str  # pappus-my_gpu: the distribution (pip install pappus-my_gpu)
    cls: str  # MyGpu: prefix of class names
    const: str  # MY_GPU: prefix of constants

    @classmethod
    def of(cls, name: str) -> Names:
        return cls(name=name, package=f"pappus_{name}", dist=f"pappus-{name}",
                   cls="".join(part.capitalize() for part in name.split("_") if part),
                   const=name.upper())

    def substitutions(self) -> dict[str, str]:
        major, minor = (__version__.split(".") + ["0"])[:2]
        # pappus is 0.x: a minor release may change the plugin interface (docs/development.md,
        # "Versioning"), so the skeleton accepts the minor series it was made with.
        upper = f"{int(major) + 1}" if major != "0" else f"0.{int(minor) + 1}"
        return {
            "{{name}}": self.name, "{{package}}": self.package, "{{dist}}": self.dist,
            "{{Class}}": self.cls, "{{CONST}}": self.const, "{{docs}}": DOCS_PAGE,
            "{{pappus_requirement}}": f"pappus>={major}.{minor},<{upper}",
            "{{pappus_version}}": __version__,
        }


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new backend, or None."""
    if not NAME_PATTERN.match(name):
        return ("must start with a lower-case letter and hold only lower-case letters, digits and '_' "
                "(at most 32 characters), e.g. 'mygpu' or 'my_gpu'")
    if name.startswith("_") or name.endswith("_") or "__" in name:
        return "must not start or end with '_' or contain '__'"
    return None


def taken_by(name: str) -> str | None:
    """The plugin that already registers a backend called ``name`` here, if any."""
    from ..plugins import get_plugins

    plugins = get_plugins()
    if name in plugins.backends:
        return plugins.backends.owner(name)
    return None


def render(template: str, names: Names) -> str:
    text = resources.files("pappus.scaffold.templates").joinpath(template).read_text(encoding="utf-8")
    for key, value in names.substitutions().items():
        text = text.replace(key, value)
    leftover = re.search(r"\{\{[A-Za-z_]+\}\}", text)
    if leftover:  # a template names a placeholder this module does not fill
        raise RuntimeError(f"template {template} has an unknown placeholder {leftover.group(0)}")
    return text


def new_backend(name: str, out_dir: str | Path = ".", *, check_taken: bool = True, gpu: bool = False) -> list[Path]:
    """Write the skeleton of backend ``name`` into ``out_dir/pappus-NAME``; return the files written.
    ``gpu``: the device builds on :class:`pappus.devices.gpu.GpuDevice`.

    Refuses (``ValidationError``) a name that is not a valid backend name, one an installed
    plugin already registers, and a target directory that exists and is not empty.
    """
    problem = name_problem(name)
    if problem:
        raise ValidationError(FieldError("NAME", f"{name!r} {problem}"), what="arguments")
    if check_taken:
        owner = taken_by(name)
        if owner is not None:
            raise ValidationError(FieldError("NAME", f"backend {name!r} is already registered by plugin "
                                                     f"{owner!r} here; pick another name"), what="arguments")
    names = Names.of(name)
    root = Path(out_dir) / names.dist
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValidationError(FieldError("--output", f"{root} exists and is not empty; choose another "
                                                     "directory with -o"), what="arguments")
    templates = dict(TEMPLATES)
    if gpu:
        templates = {(GPU_DEVICE_TEMPLATE if t == "device.py.txt" else t): target for t, target in templates.items()}
    rendered = {target.format(package=names.package): render(template, names)
                for template, target in templates.items()}
    written = []
    for rel, text in rendered.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


__all__ = ["DOCS_PAGE", "GPU_DEVICE_TEMPLATE", "NAME_PATTERN", "TEMPLATES", "Names", "name_problem", "new_backend", "render", "taken_by"]

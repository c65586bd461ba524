"""Plugin loading: failures are reported by name and contained; every hook is documented."""

from __future__ import annotations

import inspect
from importlib import metadata

import pytest

from pappus import hookspecs
from pappus.devices.host import HOST_BACKEND
from pappus.hookspecs import hookimpl
from pappus.plugins import Plugins


def eps(*items: tuple[str, str]) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name=n, value=v, group="pappus") for n, v in items]


class GoodPlugin:
    @hookimpl
    def pappus_register_backends(self, registry):
        from dataclasses import replace

        registry.add(replace(HOST_BACKEND, name="good"))


class RaisingPlugin:
    @hookimpl
    def pappus_register_backends(self, registry):
        raise RuntimeError("boom at registration")


class DuplicatePlugin:
    @hookimpl
    def pappus_register_backends(self, registry):
        registry.add(HOST_BACKEND)  # "host" is taken by the built-in plugin


class InvalidPlugin:
    @hookimpl
    def pappus_register_backends(self, registry):
        registry.add("not a backend")


def load(*extra) -> Plugins:
    plugins = Plugins()
    plugins.load(eps(("host", "pappus.devices.host"), ("missing", "no_such_module_xyz"),
                     ("syntax", "json:no_such_attribute")))
    for obj, name in extra:
        plugins.register_module(obj, name)
    return plugins


def test_broken_plugins_reported_and_contained():
    plugins = load((GoodPlugin(), "good"), (RaisingPlugin(), "raising"), (DuplicatePlugin(), "dup"),
                   (InvalidPlugin(), "invalid"))
    recs = plugins.records
    assert recs["host"].ok and recs["host"].backends == ["host"]
    assert recs["good"].ok and recs["good"].backends == ["good"]
    assert not recs["missing"].ok and "no_such_module_xyz" in recs["missing"].error
    assert not recs["syntax"].ok
    assert not recs["raising"].ok and "boom at registration" in recs["raising"].error
    assert not recs["dup"].ok and "already registered by plugin 'host'" in recs["dup"].error
    assert not recs["invalid"].ok and "not a Backend" in recs["invalid"].error
    assert sorted(plugins.backends.names()) == ["good", "host"]
    assert plugins.backends.owner("good") == "good"
    report = plugins.report()
    assert {p["name"] for p in report["plugins"] if not p["ok"]} == {"missing", "syntax", "raising", "dup", "invalid"}


def test_env_var_limits_plugins(monkeypatch):
    monkeypatch.setenv("PAPPUS_PLUGINS", "host")
    plugins = Plugins().load(eps(("host", "pappus.devices.host"), ("missing", "no_such_module_xyz")))
    assert list(plugins.records) == ["host"]


def test_observer_failures_do_not_propagate(caplog):
    class Observer:
        @hookimpl
        def pappus_engine_started(self, engine):
            raise ValueError("observer bug")

    plugins = load((Observer(), "observer"))
    plugins.notify("pappus_engine_started", engine="x", workers=1, pool_bytes=1)
    assert "observer bug" in caplog.text


def test_unknown_engine_names_are_clear():
    plugins = load()
    from pappus.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable) as info:
        plugins.resolve_engine("nope-sequential")
    assert "installed: host" in str(info.value)
    with pytest.raises(BackendUnavailable):
        plugins.resolve_engine("host-warp")


def test_default_target_is_the_native_one_else_the_first_exact_build_target():
    from dataclasses import replace

    assert replace(HOST_BACKEND, build_targets=("gfx*", "gfx90a", "gfx942")).default_target() == "gfx90a"
    native = replace(HOST_BACKEND, build_targets=("gfx90a",), native_target=lambda: "gfx942:xnack-")
    assert native.default_target() == "gfx942:xnack-"
    with pytest.raises(ValueError, match=r"builds only for patterns \(sm_\*, compute_\*\): name a target"):
        replace(HOST_BACKEND, build_targets=("sm_*", "compute_*")).default_target()


def test_every_hook_is_documented():
    """Like datasette's test_docs: a hook without a docstring (or docs entry) fails."""
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("pappus_")]
    assert len(hooks) >= 8
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"hook {name} needs a docstring saying when it is called"

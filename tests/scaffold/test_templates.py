"""``pappus new-backend``: what it writes, without installing it (fast)."""

from __future__ import annotations

import configparser
import importlib
import inspect
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pappus.cli import main
from pappus.errors import LibraryError, ValidationError
from pappus.interfaces import Backend, DeviceAPI
from pappus.scaffold import DOCS_PAGE, TEMPLATES, Names, name_problem, new_backend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def skeleton(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, ModuleType, ModuleType]]:
    """A rendered skeleton, its plugin and device modules imported from the tmp dir (the GPU
    variant when the test is parametrized with ``skeleton`` = "gpu")."""
    name = f"skel{abs(hash(tmp_path)) % 10**8}"
    new_backend(name, tmp_path, check_taken=False, gpu=getattr(request, "param", "") == "gpu")
    root = tmp_path / f"pappus-{name}"
    sys.path.insert(0, str(root))
    try:
        plugin = importlib.import_module(f"pappus_{name}.plugin")
        device = importlib.import_module(f"pappus_{name}.device")
        yield root, plugin, device
    finally:
        sys.path.remove(str(root))
        for mod in [m for m in sys.modules if m == f"pappus_{name}" or m.startswith(f"pappus_{name}.")]:
            del sys.modules[mod]


def test_writes_every_template(tmp_path: Path) -> None:
    written = new_backend("mygpu", tmp_path, check_taken=False)
    root = tmp_path / "pappus-mygpu"
    expected = {root / t.format(package="pappus_mygpu") for t in TEMPLATES.values()}
    assert set(written) == expected
    for path in written:
        text = path.read_text()
        assert not re.search(r"\{\{\w+\}\}", text), f"{path} has an unfilled placeholder"
        if path.suffix == ".py":
            compile(text, str(path), "exec")


def test_pyproject_and_tox(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    new_backend("my_gpu", tmp_path, check_taken=False)
    root = tmp_path / "pappus-my_gpu"
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "pappus-my_gpu"
    assert meta["project"]["entry-points"]["pappus"] == {"my_gpu": "pappus_my_gpu.plugin"}
    assert any(dep.startswith("pappus>=") for dep in meta["project"]["dependencies"])
    assert meta["tool"]["setuptools"]["packages"] == ["pappus_my_gpu"]
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(root / "tox.ini")
    assert "pappus conformance --backend my_gpu" in tox["testenv:conformance"]["commands"]
    assert "class MyGpuDevice(DeviceAPI)" in (root / "pappus_my_gpu" / "device.py").read_text()


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is not installed")
@pytest.mark.parametrize("gpu", [False, True])
def test_skeleton_passes_the_projects_lint(tmp_path: Path, gpu: bool) -> None:
    new_backend("mygpu", tmp_path, check_taken=False, gpu=gpu)
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    root = tmp_path / "pappus-mygpu"
    # The project's rules, with the skeleton as its own first-party source (as in its own repository).
    result = subprocess.run([ruff, "check", "--config", str(ROOT / "pyproject.toml"),
                             "--config", f"src = [{str(root)!r}]", str(root)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_backend_claims_nothing(skeleton: tuple[Path, ModuleType, ModuleType]) -> None:
    root, plugin, _ = skeleton
    backends = [v for v in vars(plugin).values() if isinstance(v, Backend)]
    assert len(backends) == 1
    backend = backends[0]
    assert backend.name == root.name.removeprefix("pappus-")
    assert backend.capabilities == frozenset()
    assert backend.known_gaps == {}
    assert backend.build is not None and backend.native_target is not None
    assert backend.native_target() == "cpu"
    assert backend.build_targets == ()  # `pappus build` keeps routing "cpu" to the CPU backend
    assert backend.check().available
    with pytest.raises(LibraryError):
        backend.driver.inspect_library(b"not a library")  # the CPU driver's static checks


def test_registration(skeleton: tuple[Path, ModuleType, ModuleType]) -> None:
    from pappus.plugins import Plugins

    root, plugin, _ = skeleton
    name = root.name.removeprefix("pappus-")
    plugins = Plugins()
    plugins.register_module(plugin, name)
    plugins.load(entry_points=[])
    assert plugins.records[name].ok and plugins.records[name].backends == [name]
    assert plugins.backend(name).engine_names() == [f"{name}-sequential", f"{name}-multiprocess"]


def _device_methods() -> list[str]:
    return [n for n, v in vars(DeviceAPI).items() if not n.startswith("_") and callable(v)]


def test_device_skeleton_documents_and_refuses(skeleton: tuple[Path, ModuleType, ModuleType]) -> None:
    _, _, device_module = skeleton
    device = device_module.create_device(answer=42)
    assert isinstance(device, DeviceAPI) and device.options == {"answer": 42}
    assert device.bounds_writes is False and device.healthy is True
    cls = type(device)
    calls = {
        "open": (), "set_malloc_heap_limit": (0,), "reserve": (1 << 20,), "write": (0, memoryview(b"x")),
        "read": (0, memoryview(bytearray(1))), "memset": (0, 0, 1), "load_module": (None,),
        "get_kernel": (None, "k"), "launch": (None,), "synchronize": (), "reset": (), "abort": (),
    }
    for method in _device_methods():
        if method in ("run", "read_bytes", "clear_private_state"):  # working defaults in the base
            continue  # class: through launch/synchronize, through read, nothing (no on-chip state)
        assert method in vars(cls), f"the skeleton does not spell out DeviceAPI.{method}"
        doc = inspect.getdoc(vars(cls)[method])
        assert doc and len(doc) > 40, f"{method} needs a docstring saying what it must guarantee"
        if method in ("close", "unload_module"):
            continue
        with pytest.raises(NotImplementedError, match=re.escape(f"{DOCS_PAGE}#{method.replace('_', '-')}")):
            getattr(device, method)(*calls[method])
    device.close()


def test_names() -> None:
    assert name_problem("mygpu") is None and name_problem("my_gpu2") is None
    for bad in ("MyGpu", "my-gpu", "1gpu", "", "a" * 33, "my__gpu", "gpu_", "pappus gpu"):
        assert name_problem(bad), bad
    names = Names.of("my_gpu")
    assert (names.package, names.dist, names.cls, names.const) == ("pappus_my_gpu", "pappus-my_gpu", "MyGpu", "MY_GPU")
    subs = names.substitutions()
    assert re.fullmatch(r"pappus>=\d+\.\d+,<\d+(\.\d+)?", subs["{{pappus_requirement}}"])


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must start with a lower-case letter"):
        new_backend("My-GPU", tmp_path)
    with pytest.raises(ValidationError, match="already registered by plugin 'cpu'"):
        new_backend("cpu", tmp_path)
    (tmp_path / "pappus-taken").mkdir()
    (tmp_path / "pappus-taken" / "x").write_text("")
    with pytest.raises(ValidationError, match="exists and is not empty"):
        new_backend("taken", tmp_path)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-backend", "clitest", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pappus conformance --backend clitest" in out
    assert (tmp_path / "pappus-clitest" / "pappus_clitest" / "device.py").exists()
    assert main(["new-backend", "clitest", "-o", str(tmp_path)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


#: What a GPU backend writes itself on GpuDevice (the guide's anchor for each)
GPU_SKELETON_METHODS = {
    "_call": "gpu-device", "_make_current": "gpu-device", "_inspect": "gpu-device", "_kernel": "gpu-device",
    "open": "open", "set_malloc_heap_limit": "set-malloc-heap-limit", "launch": "launch",
    "synchronize": "synchronize", "reset": "reset", "abort": "abort",
}


@pytest.mark.parametrize("skeleton", ["gpu"], indirect=True)
def test_gpu_skeleton_builds_on_the_device_kit(skeleton: tuple[Path, ModuleType, ModuleType]) -> None:
    from pappus.devices.gpu import GpuDevice
    from pappus.errors import DeviceError

    _, _, device_module = skeleton
    device = device_module.create_device(device=1, answer=42)
    assert isinstance(device, GpuDevice) and isinstance(device, DeviceAPI)
    assert (device.index, device.options) == (1, {"answer": 42})
    cls = type(device)
    guide = (ROOT / DOCS_PAGE).read_text()
    calls = {"_call": ("x",), "_inspect": (b"",), "_kernel": (None, "k", None, None), "set_malloc_heap_limit": (0,),
             "launch": (None,)}
    for method, anchor in GPU_SKELETON_METHODS.items():
        assert method in vars(cls), f"the GPU skeleton does not spell out {method}"
        doc = inspect.getdoc(vars(cls)[method])
        assert doc and len(doc) > 40, f"{method} needs a docstring saying what it must do"
        assert f"{{#{anchor}}}" in guide, f"the guide has no section #{anchor}"
        with pytest.raises(NotImplementedError, match=re.escape(f"{DOCS_PAGE}#{anchor}")):
            getattr(device, method)(*calls.get(method, ()))
    # What core's kit does is not copied into the skeleton, and works as soon as the device is open.
    for method in ("reserve", "write", "read", "memset", "load_module", "get_kernel", "unload_module", "memory_info"):
        assert method not in vars(cls), f"the GPU skeleton redefines GpuDevice.{method}"
    with pytest.raises(DeviceError, match="device is not open"):
        device.reserve(1 << 20)
    device.close()


def test_cli_gpu(tmp_path: Path) -> None:
    assert main(["new-backend", "cligpu", "--gpu", "-o", str(tmp_path)]) == 0
    text = (tmp_path / "pappus-cligpu" / "pappus_cligpu" / "device.py").read_text()
    assert "class CligpuDevice(GpuDevice)" in text and "class CligpuDevice(DeviceAPI)" not in text

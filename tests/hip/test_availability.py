"""Availability: the runtime's real answer, and the message when hip-python is missing.

Everything that touches the HIP runtime runs in a subprocess, so this pytest process never
initialises HIP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = str(Path(__file__).resolve().parents[2] / "plugins")
NOT_INSTALLED = "hip-python is not installed (pip install 'pappus[hip]')"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys; sys.path.append({PLUGINS!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, check=False)


def runtime_oracle() -> tuple[int, int, int, int]:
    """hipRuntimeGetVersion and hipGetDeviceCount straight from libamdhip64 through ctypes."""
    proc = run_python(
        "import ctypes, json\n"
        "lib = ctypes.CDLL('libamdhip64.so')\n"
        "v, n = ctypes.c_int(), ctypes.c_int()\n"
        "rc1 = lib.hipRuntimeGetVersion(ctypes.byref(v)); rc2 = lib.hipGetDeviceCount(ctypes.byref(n))\n"
        "print(json.dumps([rc1, v.value, rc2, n.value]))\n")
    if proc.returncode != 0:
        pytest.skip(f"libamdhip64.so cannot be loaded here: {proc.stderr.strip()[-200:]}")
    a, b, c, d = json.loads(proc.stdout)
    return a, b, c, d


CHECK = ("import json\nfrom pappus_hip.plugin import check\na = check()\n"
         "print(json.dumps([a.available, a.reason]))\n")


def test_not_installed_message_through_a_blocked_import():
    proc = run_python("sys.modules['hip'] = None\n" + CHECK)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, NOT_INSTALLED]
    assert proc.stderr == ""


def test_not_installed_through_the_plugin_registry():
    proc = run_python(
        "sys.modules['hip'] = None\n"
        "import json\nfrom pappus.plugins import get_plugins\n"
        "report = get_plugins().report()\n"
        "hip = [b for b in report['backends'] if b['name'] == 'hip'][0]\n"
        "print(json.dumps([hip['available'], hip['reason'], hip['capabilities']]))\n",
        PAPPUS_PLUGINS="hip")
    assert proc.returncode == 0, proc.stderr
    available, reason, caps = json.loads(proc.stdout)
    assert (available, reason) == (False, NOT_INSTALLED)
    assert caps == ["malloc_heap_limit", "signatures", "zeroing"]
    assert proc.stderr == ""


def test_importing_the_plugin_does_not_import_hip_python():
    proc = run_python("import pappus_hip.plugin\nprint('hip' in sys.modules, 'elftools' in sys.modules)")
    assert proc.stdout.split() == ["False", "False"], proc.stderr


@pytest.mark.parametrize("mode", ["subprocess", "inline"])
def test_reports_the_runtimes_real_answer(mode):
    pytest.importorskip("hip", reason="hip-python is not installed")
    rc_version, version, rc_count, count = runtime_oracle()
    env = {"PAPPUS_HIP_PROBE": "inline"} if mode == "inline" else {}
    proc = run_python(CHECK, **env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no traceback, nothing printed
    available, reason = json.loads(proc.stdout)
    assert rc_version == 0
    runtime = f"{version // 10_000_000}.{version // 100_000 % 100}.{version % 100_000}"
    import hip

    bindings = tuple(hip.HIP_VERSION_TUPLE[:2])
    older = (version // 10_000_000, version // 100_000 % 100) < bindings
    if rc_count == 0 and count > 0 and not older:
        assert available, reason
        return
    assert not available
    if rc_count != 0:
        assert f"({rc_count})" in reason
    if rc_count == 100:
        assert reason.startswith("hipErrorNoDevice (100): no AMD GPU visible")
    if older:
        assert f"runtime {runtime} is older than the bindings ({bindings[0]}.{bindings[1]}" in reason


def test_real_device_open_stops_at_the_version_check():
    """HipDevice.open on this machine's runtime: a pappus error, never a dlsym failure."""
    pytest.importorskip("hip", reason="hip-python is not installed")
    proc = run_python(
        "import json\nfrom pappus_hip.device import HipDevice\nfrom pappus.errors import PappusError\n"
        "try:\n    HipDevice().open(); print(json.dumps(['open', '']))\n"
        "except PappusError as e:\n    print(json.dumps([type(e).__name__, str(e)]))\n")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    kind, message = json.loads(proc.stdout)
    rc_version, version, rc_count, count = runtime_oracle()
    if kind == "open":
        assert rc_count == 0 and count > 0
    else:
        assert kind in ("BackendUnavailable", "DeviceError")
        assert "dlsym" not in message

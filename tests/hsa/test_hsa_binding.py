"""The binding against the real installed runtime, library lookup, reason decoding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pappus_hsa import binding
from pappus_hsa.monitor import HsaFaultMonitor

HAVE_KFD = os.path.exists("/dev/kfd")


def real_runtime() -> binding.Hsa:
    try:
        return binding.load(binding.SONAME)
    except binding.HsaUnavailable as exc:
        pytest.skip(f"Debian's libhsa-runtime64 is not installed: {exc}")


# --- the real runtime -----------------------------------------------------------------------


def test_loads_debian_runtime_with_every_symbol_we_use():
    hsa = real_runtime()
    for name in ("hsa_init", "hsa_shut_down", "hsa_status_string",
                 "hsa_amd_register_system_event_handler"):
        assert getattr(hsa.lib, name) is not None


@pytest.mark.skipif(HAVE_KFD, reason="/dev/kfd exists: hsa_init may succeed here")
def test_hsa_init_returns_its_real_no_device_status():
    hsa = real_runtime()
    rc = hsa.lib.hsa_init()
    assert rc == 0x1008
    assert binding.status_name(rc) == "HSA_STATUS_ERROR_OUT_OF_RESOURCES"
    # The runtime's own text is readable without an initialised runtime.
    text = hsa.status_text(rc)
    assert text.startswith("HSA_STATUS_ERROR_OUT_OF_RESOURCES (0x1008): ")
    assert "resources" in text
    with pytest.raises(binding.HsaUnavailable) as info:
        hsa.init()
    assert info.value.status == 0x1008
    assert str(info.value).startswith("hsa_init failed: HSA_STATUS_ERROR_OUT_OF_RESOURCES (0x1008)")
    assert "/dev/kfd is missing" in str(info.value)


@pytest.mark.skipif(HAVE_KFD, reason="/dev/kfd exists: hsa_init may succeed here")
def test_availability_reports_the_real_status(monkeypatch):
    real_runtime()
    monkeypatch.delenv(binding.ENV_LIBRARY, raising=False)
    avail = HsaFaultMonitor().availability()
    assert not avail
    assert avail.reason.startswith("hsa_init failed: HSA_STATUS_ERROR_OUT_OF_RESOURCES (0x1008)")


@pytest.mark.skipif(HAVE_KFD, reason="/dev/kfd exists: hsa_init may succeed here")
def test_start_without_a_device_raises_device_error_with_the_status(monkeypatch):
    from pappus.errors import DeviceError

    real_runtime()
    monitor = HsaFaultMonitor(library=binding.SONAME)
    with pytest.raises(DeviceError) as info:
        monitor.start(lambda event: None)
    assert info.value.api == "hsa_init"
    assert info.value.status == "HSA_STATUS_ERROR_OUT_OF_RESOURCES"
    assert "0x1008" in str(info.value)
    assert not monitor.running
    monitor.stop()  # harmless when never started


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_KFD, reason="needs /dev/kfd (an AMD GPU with the amdgpu driver)")
def test_availability_on_a_gpu_machine():  # pragma: no cover - no GPU in CI
    assert HsaFaultMonitor().availability()


# --- lookup ---------------------------------------------------------------------------------


def test_missing_library_is_unavailable_with_what_was_tried(tmp_path):
    missing = str(tmp_path / "libhsa-runtime64.so.1")
    avail = HsaFaultMonitor(library=missing).availability()
    assert not avail
    assert avail.reason.startswith("libhsa-runtime64 not loadable (")
    assert missing in avail.reason and "cannot open shared object file" in avail.reason
    assert "Additionally" not in avail.reason  # cffi's find_library note is trimmed


def test_env_override_is_honoured_strictly(monkeypatch, tmp_path):
    monkeypatch.setenv(binding.ENV_LIBRARY, str(tmp_path / "nope.so"))
    assert binding.candidates() == [str(tmp_path / "nope.so")]
    avail = HsaFaultMonitor().availability()
    assert not avail and "nope.so" in avail.reason


def test_a_library_without_the_symbols_is_refused(monkeypatch):
    # libc is loadable but is not an HSA runtime
    avail = HsaFaultMonitor(library="libc.so.6").availability()
    assert not avail
    assert "missing hsa_init" in avail.reason


def test_default_search_order(monkeypatch, tmp_path):
    monkeypatch.delenv(binding.ENV_LIBRARY, raising=False)
    found = binding.candidates()
    assert found[0] == "libhsa-runtime64.so.1"
    assert all(p.startswith("/opt/rocm") for p in found[1:])


def test_rocm_versions_are_searched_newest_first(monkeypatch):
    paths = ["/opt/rocm-5.2.3", "/opt/rocm-5.10.0", "/opt/rocm-6.0.0"]
    monkeypatch.delenv(binding.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(binding.glob, "glob", lambda pattern: list(paths))
    monkeypatch.setattr(binding.os.path, "exists", lambda p: p.endswith(".so.1"))
    found = binding.candidates()
    assert found == ["libhsa-runtime64.so.1", "/opt/rocm/lib/libhsa-runtime64.so.1",
                     "/opt/rocm-6.0.0/lib/libhsa-runtime64.so.1",
                     "/opt/rocm-5.10.0/lib/libhsa-runtime64.so.1",
                     "/opt/rocm-5.2.3/lib/libhsa-runtime64.so.1"]


def test_importing_the_plugin_opens_no_library():
    """The entry point must be cheap: no cffi, no dlopen of libhsa at import."""
    code = ("import sys, pappus_hsa.plugin, pappus_hsa;"
            "maps = open('/proc/self/maps').read();"
            "print('cffi' in sys.modules, 'libhsa-runtime64' in maps)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.split() == ["False", "False"]


# --- status names and reasons ------------------------------------------------------------------


def test_status_names_cover_both_header_enums():
    assert binding.status_name(0) == "HSA_STATUS_SUCCESS"
    assert binding.status_name(0x1026) == "HSA_STATUS_ERROR_FATAL"
    assert binding.status_name(43) == "HSA_STATUS_ERROR_MEMORY_FAULT"
    assert binding.status_name(0x4242) == "unknown status"


@pytest.mark.parametrize("bit,name", sorted(binding.REASON_BITS.items()))
def test_every_reason_bit_decodes_to_its_name(bit, name):
    assert binding.decode_reasons(bit) == (name,)
    assert name in binding.REASON_DESCRIPTIONS


def test_reason_combinations_and_unknown_bits():
    assert binding.decode_reasons(0) == ()
    assert binding.decode_reasons(0b11) == ("page_not_present", "read_only")
    assert binding.decode_reasons((1 << 31) | (1 << 5) | (1 << 4)) == ("dramecc", "imprecise", "hang")
    assert binding.decode_reasons(0xFFFFFFFF) == (
        "page_not_present", "read_only", "nx", "host_only", "dramecc", "imprecise", "sramecc",
        *(f"unknown_0x{1 << b:x}" for b in range(7, 31)), "hang")
    assert binding.decode_reasons((1 << 7) | 1) == ("page_not_present", "unknown_0x80")
    assert binding.describe_reasons(("read_only", "unknown_0x80")) == \
        "write access to a read-only page; unknown_0x80"
    assert binding.describe_reasons(()) == "no reason bits set"


def test_agent_names():
    assert binding.agent_name(0x7F00DEAD) == "hsa:0x7f00dead"

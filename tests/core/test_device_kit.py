"""The vendor-neutral pieces GPU backends are built from (``pappus.devices.binding`` and ``.gpu``).

The GPU backends' own tests drive these through fake bindings (tests/hip, tests/cuda); here they
are pinned on their own, the probe with real subprocesses.
"""

from __future__ import annotations

import enum
import importlib
import os
import sys
import textwrap

import pytest

from pappus.devices.binding import IsolatedProbe, checked_call, env_flag, env_index, status_name
from pappus.devices.gpu import address_of, bytes_view, limits_from
from pappus.errors import DeviceError, KernelFault
from pappus.interfaces import Availability
from pappus.kernels import DeviceLimits


class Status(enum.IntEnum):
    OK = 0
    BAD_VALUE = 1
    FAULTED = 700


class Binding:
    """Answers as hip-python and cuda-bindings do: a tuple led by the status."""

    def nothing(self):
        return (Status.OK,)

    def one(self, x):
        return Status.OK, x * 2

    def two(self):
        return Status.OK, 3, 4

    def bare(self):
        return Status.OK

    def refuses(self):
        return (Status.BAD_VALUE,)

    def faults(self):
        return (Status.FAULTED,)

    def explodes(self):
        raise RuntimeError("failed to dlsym hipNothing")

    def raises_ours(self):
        raise DeviceError("already a pappus error", api="raises_ours", status="x")


def error_for(api, status, **facts):
    if status == Status.OK:
        return None
    if status == Status.FAULTED:
        return KernelFault(f"{api} faulted", api=api, status=status.name, **facts)
    return DeviceError(f"{api} failed: {status.name}", api=api, status=status.name, **facts)


def call(api, *args, **facts):
    return checked_call(Binding(), api, args, facts, error_for, "fake-bindings")


def test_checked_call_returns_nothing_one_value_or_all_values():
    assert call("nothing") is None
    assert call("bare") is None
    assert call("one", 21) == 42
    assert call("two") == (3, 4)


def test_checked_call_raises_the_error_the_backend_maps_a_status_to_with_the_facts():
    with pytest.raises(DeviceError) as refused:
        call("refuses", kernel="k")
    assert refused.value.fields["status"] == "BAD_VALUE" and refused.value.fields["kernel"] == "k"
    with pytest.raises(KernelFault):
        call("faults")


def test_checked_call_names_the_call_when_the_binding_lacks_it_or_raises():
    with pytest.raises(DeviceError) as missing:
        call("hipNothing")
    assert missing.value.fields["status"] == "missing_binding"
    assert str(missing.value).startswith("hipNothing is not in this fake-bindings")
    with pytest.raises(DeviceError) as broken:
        call("explodes")
    assert broken.value.fields["status"] == "binding_error"
    assert "explodes failed in the binding: RuntimeError: failed to dlsym hipNothing" in str(broken.value)
    with pytest.raises(DeviceError) as ours:
        call("raises_ours")
    assert ours.value.fields["status"] == "x"  # passed through, not wrapped


def test_status_name_from_the_enum_alone():
    assert status_name(Status.FAULTED, None, "st({})") == ("FAULTED", 700)
    assert status_name(1, lambda v: Status(v).name, "st({})") == ("BAD_VALUE", 1)
    assert status_name(99, lambda v: Status(v).name, "st({})") == ("st(99)", 99)  # unknown to the enum
    assert status_name(object(), None, "st({})") == ("st(-1)", -1)


def test_environment_helpers(monkeypatch):
    monkeypatch.setenv("PAPPUS_TEST_INDEX", " 3 ")
    monkeypatch.setenv("PAPPUS_TEST_FLAG", "Yes")
    assert env_index("PAPPUS_TEST_INDEX") == 3 and env_flag("PAPPUS_TEST_FLAG")
    monkeypatch.setenv("PAPPUS_TEST_INDEX", "-1")
    monkeypatch.setenv("PAPPUS_TEST_FLAG", "0")
    assert env_index("PAPPUS_TEST_INDEX") == 0 and not env_flag("PAPPUS_TEST_FLAG")
    assert env_index("PAPPUS_TEST_UNSET") == 0 and not env_flag("PAPPUS_TEST_UNSET")


# --- the isolated probe ---------------------------------------------------------------------------


PROBE_MODULE = """
import os, sys, time
from dataclasses import dataclass
from pappus.devices.binding import IsolatedProbe

@dataclass
class Answer:
    installed: bool
    available: bool = False
    reason: str = ""
    pid: int = 0

def probe():
    mode = os.environ.get("KITPROBE_MODE", "")
    if mode == "crash":
        sys.stderr.write("Traceback ...\\nImportError: libvendor.so: cannot open shared object file\\n")
        sys.exit(3)
    if mode == "hang":
        time.sleep(30)
    return Answer(installed=True, available=True, reason="1 fake GPU", pid=os.getpid())

PROBE = IsolatedProbe(label="Fake", module="kitprobe", search_path=os.path.dirname(__file__), result=Answer,
                      probe=probe, inline_env="KITPROBE_INLINE", installed=lambda: True, not_installed="-")
_main = PROBE.main
"""


@pytest.fixture
def fake_probe(tmp_path, monkeypatch):
    """A backend's probe module, written to disk so the probe's subprocess can import it too."""
    (tmp_path / "kitprobe.py").write_text(textwrap.dedent(PROBE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kitprobe", raising=False)
    module = importlib.import_module("kitprobe")
    monkeypatch.delitem(sys.modules, "kitprobe")  # the next test writes its own

    def make(installed=True):
        return IsolatedProbe(label="Fake", module="kitprobe", search_path=str(tmp_path), result=module.Answer,
                             probe=module.probe, inline_env="KITPROBE_INLINE", installed=lambda: installed,
                             not_installed="fake-bindings are not installed")

    return make


def test_the_probe_answers_from_another_process_and_inline_only_when_asked(fake_probe, monkeypatch):
    probe = fake_probe()
    answer = probe.isolated()
    assert (answer.installed, answer.available, answer.reason) == (True, True, "1 fake GPU")
    assert answer.pid != os.getpid()
    monkeypatch.setenv("KITPROBE_INLINE", "inline")
    assert probe.isolated().pid == os.getpid()


def test_the_probe_is_asked_once_per_process_unless_refreshed(fake_probe):
    probe = fake_probe()
    first = probe.cached()
    assert probe.cached() is first
    assert probe.cached(refresh=True).pid != first.pid
    assert probe.availability() == Availability(True, "1 fake GPU")


def test_a_probe_that_crashes_or_hangs_is_a_reason_not_an_exception(fake_probe, monkeypatch):
    probe = fake_probe()
    monkeypatch.setenv("KITPROBE_MODE", "crash")
    crashed = probe.isolated()
    assert (crashed.installed, crashed.available) == (True, False)
    assert crashed.reason == "the Fake probe failed: ImportError: libvendor.so: cannot open shared object file"
    monkeypatch.setenv("KITPROBE_MODE", "hang")
    hung = probe.isolated(timeout=1.0)
    assert hung.reason == "the Fake probe did not answer within 1 s" and not hung.available


def test_without_bindings_the_probe_never_runs(fake_probe, monkeypatch):
    monkeypatch.setenv("KITPROBE_MODE", "hang")  # it would take 30 s if it ran
    assert fake_probe(installed=False).availability() == Availability(False, "fake-bindings are not installed")


# --- small pieces of GpuDevice ---------------------------------------------------------------------


def test_limits_from_attributes_keep_defaults_for_what_cannot_be_read():
    names = ("threads", "bx", "by", "bz", "gx", "gy", "gz", "shared")
    values = {"threads": 512, "bx": 512, "by": 0, "bz": 64, "gx": 1 << 20, "gy": 7, "gz": 9}
    default = DeviceLimits()

    def read(name):
        return values[name]  # "shared" is missing: KeyError, as a failing attribute call

    limits = limits_from(read, names)
    assert limits.max_block_threads == 512
    assert limits.max_block_dims == (512, default.max_block_dims[1], 64)  # 0 keeps the default
    assert limits.max_grid_dims == (1 << 20, 7, 9)
    assert limits.max_shared_bytes == default.max_shared_bytes
    assert limits_from(read, names, default_shared=48 * 1024).max_shared_bytes == 48 * 1024
    with pytest.raises(ValueError):
        limits_from(read, names[:7])  # every limit needs its attribute name


def test_bytes_view_and_address_of():
    import array

    view = bytes_view(array.array("i", [1, 2, 3]))
    assert (view.format, view.nbytes, view.ndim) == ("B", 12, 1)
    assert bytes_view(memoryview(b"abc")).tobytes() == b"abc"

    class Wrapped:  # a bindings pointer type without __int__
        def as_c_void_p(self):
            import ctypes

            return ctypes.c_void_p(0x1000)

    assert address_of(0x2000) == 0x2000 and address_of(Wrapped()) == 0x1000

"""HipDevice on the REAL hip-python bindings, against a C stub of the HIP runtime.

tests/hip/test_device.py drives HipDevice through a Python fake of hip-python, which can only
mirror what pappus assumes about hip-python. Here nothing of hip-python is faked: its Cython
functions marshal pappus' arguments (pointer forms, enums, ``extra``, struct layouts) into the C
calls of ``libamdhip64.so``, and that library is ``csrc/stub_amdhip64.c``, which implements the
HIP calls pappus makes with the ABI of the ROCm headers (as hip-python's ``cyhip.pxd`` declares
it) on host memory, checks handles and the per-thread current device, keeps a fault sticky until
``hipDeviceReset``, and emulates two kernels of ``kernels/clean.hip`` from their kernarg block.

hip-python dlopens the runtime once per process, at its first call, from ``$ROCM_PATH/lib/
libamdhip64.so`` (``rocm.bindings.util.paths.get_library_path``), so every scenario runs in a
fresh interpreter (this file run as a script) with ``ROCM_PATH`` pointing at the stub; the
scenario reaches the stub's controls through ctypes on the same file (one dlopen handle).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
STUB_SOURCE = HERE / "csrc" / "stub_amdhip64.c"
MiB = 1 << 20
UNKNOWN_STATUS = 716  # CUDA's misaligned address; HIP has no status 716
SKIP = 77  # a scenario's exit status for "hip-python cannot be pointed at the stub here"

# --- fixtures (pytest side) -------------------------------------------------------------------


@pytest.fixture(scope="session")
def stub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ROCm tree whose lib/libamdhip64.so is the stub, compiled once per session."""
    if importlib.util.find_spec("rocm") is None or importlib.util.find_spec("rocm.bindings.hip") is None:
        pytest.skip("hip-python is not installed")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH: the stub libamdhip64.so cannot be built")
    root = tmp_path_factory.mktemp("stub-rocm")
    out = root / "lib" / "libamdhip64.so"
    out.parent.mkdir()
    cmd = [cc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
           "-Wl,-Bsymbolic", "-pthread", str(STUB_SOURCE), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return root


@pytest.fixture(scope="session")
def hsaco(hipcc: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernels/clean.hip plus a kernel without arguments, as one raw gfx90a ELF (code object v5):
    what HipDevice hands hipModuleLoadData."""
    from pappus_hip.build import build_hsaco

    out = tmp_path_factory.mktemp("stub-hsaco")
    source = out / "stub_kernels.hip"
    source.write_text(f'#include "{HERE / "kernels" / "clean.hip"}"\n'
                      'extern "C" __global__ void no_arguments() {}\n')
    return build_hsaco(source, out, ["gfx90a"], bundle=False, code_object_version=5)[0]


def run_scenario(name: str, root: Path, hsaco: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PAPPUS_", "ROCM_", "HIP_", "HSA_")) and k != "LD_PRELOAD"}
    env["ROCM_PATH"] = str(root)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), name, str(root), str(hsaco or "")],
                          capture_output=True, text=True, timeout=60, env=env, cwd=HERE.parent.parent,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode == SKIP:
        pytest.skip(proc.stdout.strip())
    if proc.returncode != 0 or proc.stdout.strip() != f"ok {name}":
        pytest.fail(f"scenario {name!r} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)


def test_open_memory_and_heap_limit(stub_root: Path) -> None:
    run_scenario("open_memory_and_heap_limit", stub_root)


def test_load_and_launch_marshal_kernargs(stub_root: Path, hsaco: Path) -> None:
    run_scenario("load_and_launch", stub_root, hsaco)


def test_fault_is_sticky_until_reset(stub_root: Path, hsaco: Path) -> None:
    run_scenario("fault_and_reset", stub_root, hsaco)


def test_fault_statuses_are_hips(stub_root: Path) -> None:
    run_scenario("fault_statuses", stub_root)


def test_close_releases_pool_and_modules(stub_root: Path, hsaco: Path) -> None:
    run_scenario("close", stub_root, hsaco)


def test_every_thread_makes_the_device_current(stub_root: Path, hsaco: Path) -> None:
    run_scenario("threads", stub_root, hsaco)


def test_refusals(stub_root: Path) -> None:
    run_scenario("refusals", stub_root)


def test_probe_and_availability(stub_root: Path) -> None:
    run_scenario("availability", stub_root)


# --- the scenarios (run in a fresh interpreter) -----------------------------------------------


def runtime_version() -> int:
    from pappus_hip.runtime import bindings_version

    major, minor, patch = (bindings_version()[0] + (0, 0, 0))[:3]
    return major * 10_000_000 + minor * 100_000 + patch


class Stub:
    """The stub's controls and probes, through ctypes on the file hip-python opened."""

    def __init__(self, root: Path) -> None:
        self.path = root / "lib" / "libamdhip64.so"
        lib = self.lib = ctypes.CDLL(str(self.path))
        lib.stub_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_size_t]
        lib.stub_fail_next_sync.argtypes = [ctypes.c_int]
        lib.stub_calls.restype = ctypes.c_char_p
        lib.stub_sizeof_props.restype = ctypes.c_size_t
        lib.stub_count.argtypes = [ctypes.c_char_p]
        lib.stub_count.restype = ctypes.c_long
        lib.stub_heap_limit.argtypes = [ctypes.c_int]
        lib.stub_heap_limit.restype = ctypes.c_size_t
        lib.stub_launch.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint),
                                    ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_int),
                                    ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_size_t]
        lib.stub_launch.restype = ctypes.c_long
        lib.stub_last_image.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.stub_last_image.restype = ctypes.c_size_t

    def configure(self, version: int | None = None, devices: int = 1, pageable: int = 0,
                  total: int = 64 * MiB) -> None:
        """``version`` (HIP_VERSION encoding) defaults to the release the bindings were generated
        for (hip-python 10.0.0: 7.15.26333), the oldest runtime pappus_hip accepts with them."""
        self.lib.stub_configure(runtime_version() if version is None else version, devices, pageable, total)

    def calls(self) -> list[str]:
        return [c for c in (self.lib.stub_calls() or b"").decode().split(",") if c]

    def clear_calls(self) -> None:
        self.lib.stub_clear_calls()

    def count(self, what: str) -> int:
        n = int(self.lib.stub_count(what.encode()))
        assert n >= 0, what
        return n

    def heap_limit(self, device: int = 0) -> int:
        return int(self.lib.stub_heap_limit(device))

    def fail_next_sync(self, status: int) -> None:
        self.lib.stub_fail_next_sync(status)

    def launch(self, i: int) -> dict[str, Any]:
        name = ctypes.create_string_buffer(256)
        dims = (ctypes.c_uint * 6)()
        shared, device, has_extra = ctypes.c_uint(), ctypes.c_int(), ctypes.c_int()
        args = ctypes.create_string_buffer(1024)
        n = self.lib.stub_launch(i, name, 256, dims, ctypes.byref(shared), ctypes.byref(device),
                                 ctypes.byref(has_extra), args, 1024)
        assert n >= 0, f"no launch {i}"
        return {"name": name.value.decode(), "grid": tuple(dims[:3]), "block": tuple(dims[3:]),
                "shared": shared.value, "device": device.value, "extra": bool(has_extra.value),
                "args": args.raw[:n]}

    def last_image(self) -> bytes:
        n = self.lib.stub_last_image(None, 0)
        buf = ctypes.create_string_buffer(n)
        self.lib.stub_last_image(buf, n)
        return buf.raw


def _image(data: bytes) -> Any:
    from pappus.interfaces import LibraryImage

    return LibraryImage(hashlib.sha256(data).hexdigest(), data)


def _raises(exc_type: type[BaseException], call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        call(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{getattr(call, '__name__', call)} did not raise {exc_type.__name__}")


def _read(dev: Any, address: int, n: int) -> bytes:
    out = bytearray(n)
    dev.read(address, memoryview(out))
    return bytes(out)


def scenario_open_memory_and_heap_limit(stub: Stub, _: Path) -> None:
    from hip import hip

    from pappus.errors import DeviceError
    from pappus.kernels import DeviceLimits
    from pappus_hip.device import HipDevice

    dev = HipDevice(heap_limit=3 * MiB)
    info = dev.open()
    assert info.name == "AMD Instinct MI210 (stub 0)", info.name
    assert info.details["arch"] == info.details["target"] == "gfx90a:sramecc+:xnack-", info.details
    assert info.details["runtime"] == "7.15.26333" and info.details["pageable_memory_access"] is False
    # every attribute is asked by its real enum value (the stub answers distinct values)
    assert info.limits == DeviceLimits(768, (1021, 1022, 1023), (2147483646, 65534, 65533), 65532), info.limits
    assert (info.total_memory, info.free_memory) == (64 * MiB, 64 * MiB)
    assert info.heap_limit == 3 * MiB == stub.heap_limit(0)  # read back through hipDeviceGetLimit
    calls = stub.calls()
    # the heap limit is set first, on the device made current; nothing of a tenant before it
    assert calls.index("hipSetDevice") < calls.index("hipDeviceSetLimit") < calls.index("hipMemGetInfo"), calls
    assert "hipMalloc" not in calls and "hipModuleLoadData" not in calls
    # hip-python's hipDeviceProp_t is the R0600 layout: the stub's struct matches it field for field
    assert "hipGetDevicePropertiesR0600" in calls and "hipGetDeviceProperties(R0000)" not in calls
    err, props = hip.hipGetDeviceProperties(0)
    assert int(err) == 0 and props.c_sizeof() == stub.lib.stub_sizeof_props()
    assert (props.totalGlobalMem, props.warpSize, props.maxSharedMemoryPerMultiProcessor, props.asicRevision) == (
        64 * MiB, 64, 65536, 1)

    base = dev.reserve(MiB)
    assert stub.count("allocations") == 1 and base % 4096 == 0
    assert _read(dev, base, MiB) == bytes(MiB)  # the stub's 0xAB "stale data" was cleared once
    assert dev.memory_info() == (63 * MiB, 64 * MiB)
    dev.write(base + 100, memoryview(b"hello, device"))
    assert _read(dev, base + 100, 13) == b"hello, device"
    dev.write(base + 200, memoryview(bytearray(struct.pack("<4i", 1, 2, 3, 4))).cast("i"))
    assert struct.unpack("<4i", _read(dev, base + 200, 16)) == (1, 2, 3, 4)
    dev.memset(base + 101, 0x1FF, 3)  # one byte of the value
    assert _read(dev, base + 100, 6) == b"h\xff\xff\xffo,"
    assert _raises(DeviceError, dev.read, base, memoryview(b"x")).status == "readonly_buffer"
    assert _raises(DeviceError, dev.write, base + MiB - 1, memoryview(b"ab")).status == "out_of_pool"
    assert _raises(DeviceError, dev.reserve, 64).status == "already_reserved"

    assert dev.set_malloc_heap_limit(0) == 0 == stub.heap_limit(0)
    dev.close()
    assert stub.count("allocations") == 0
    big = HipDevice()
    big.open()
    exc = _raises(DeviceError, big.reserve, 65 * MiB)
    assert exc.status == "hipErrorOutOfMemory" and "64" in str(exc)
    big.close()


def scenario_load_and_launch(stub: Stub, hsaco: Path) -> None:
    from pappus.errors import DeviceError
    from pappus.plan import Launch
    from pappus_hip.device import HipDevice

    data = hsaco.read_bytes()
    dev = HipDevice()
    dev.open()
    base = dev.reserve(1 << 16)
    module = dev.load_module(_image(data))
    assert stub.count("loads") == stub.count("modules") == 1
    assert stub.last_image() == data  # the ELF pappus validated, whole (its size from its own header)

    scalars = dev.get_kernel(module, "scalars")
    # scalars(int *out, int i, float f, Pair p, char c, double d); Pair is {int a; float b; double c}
    args = (struct.pack("<Q", base + 64), struct.pack("<i", -7), struct.pack("<f", 2.5),
            struct.pack("<ifd", 3, 4.75, 5.5), struct.pack("<b", 9), struct.pack("<d", 1.25))
    dev.launch(Launch("scalars", scalars, (2, 3, 4), (64, 2, 1), 128, args))
    dev.synchronize()
    rec = stub.launch(0)
    assert (rec["name"], rec["grid"], rec["block"], rec["shared"]) == ("scalars", (2, 3, 4), (64, 2, 1), 128), rec
    assert rec["extra"]  # through HIP_LAUNCH_PARAM_BUFFER_POINTER/_SIZE, not kernelParams
    # the block the runtime got: each argument at its AMDGPU ABI offset (0, 8, 12, 16, 32, 40)
    expected = b"".join((args[0], args[1], args[2], args[3], args[4], bytes(7), args[5]))
    assert rec["args"] == expected, (rec["args"].hex(), expected.hex())
    # the "kernel" read them there: -7 + 2 + 3 + 4 + 5 + 9 + 1
    assert struct.unpack("<i", _read(dev, base + 64, 4)) == (17,)

    fill = dev.get_kernel(module, "bounded_fill")
    dev.launch(Launch("bounded_fill", fill, (3, 1, 1), (32, 1, 1), 0,
                      (struct.pack("<Q", base + 4096), struct.pack("<i", 0x5A5A))))
    dev.synchronize()
    assert struct.unpack("<97i", _read(dev, base + 4096, 97 * 4)) == (0x5A5A,) * 96 + (0,)
    assert stub.launch(1)["args"] == struct.pack("<Qi", base + 4096, 0x5A5A) + bytes(4)
    none = dev.get_kernel(module, "no_arguments")  # no kernarg block: neither kernelParams nor extra
    dev.launch(Launch("no_arguments", none, (1, 1, 1), (1, 1, 1), 0, ()))
    dev.synchronize()
    assert (stub.launch(2)["extra"], stub.launch(2)["args"]) == (False, b"")
    assert dev.launches == 3 and stub.count("launches") == 3

    assert _raises(DeviceError, dev.get_kernel, module, "nope").status == "hipErrorNotFound"
    assert _raises(DeviceError, dev.launch, Launch("bounded_fill", fill, (1, 1, 1), (1, 1, 1), 0,
                                                   (struct.pack("<Q", base),))).status == "bad_arguments"
    # a status of the runtime comes back as a DeviceError naming it (a 0-sized grid)
    exc = _raises(DeviceError, dev.launch, Launch("bounded_fill", fill, (0, 1, 1), (1, 1, 1), 0,
                                                  (struct.pack("<Q", base), bytes(4))))
    assert (exc.status, exc.api) == ("hipErrorInvalidValue", "hipModuleLaunchKernel"), exc
    dev.unload_module(module)
    assert stub.count("modules") == 0
    dev.close()


def scenario_fault_and_reset(stub: Stub, hsaco: Path) -> None:
    from pappus.errors import KernelFault
    from pappus.plan import Launch
    from pappus_hip.device import HipDevice

    dev = HipDevice(heap_limit=MiB)
    dev.open()
    base = dev.reserve(4096)
    module = dev.load_module(_image(hsaco.read_bytes()))
    fill = dev.get_kernel(module, "bounded_fill")

    def launch(address: int, n: int = 1, value: int = 7) -> None:
        dev.launch(Launch("bounded_fill", fill, (1, 1, 1), (n, 1, 1), 0,
                          (struct.pack("<Q", address), struct.pack("<i", value))))

    launch(base + 4096)  # one int just past the pool: an illegal address
    fault = _raises(KernelFault, dev.synchronize)
    assert "hipDeviceSynchronize failed: hipErrorIllegalAddress (700)" in str(fault), fault
    assert fault.reasons == ["illegal_address"] and not dev.healthy
    assert fault.kernel == "bounded_fill"  # the kernels since the last synchronize
    fault = _raises(KernelFault, launch, base)  # sticky: the next launch fails too
    assert fault.kernel == "bounded_fill" and fault.status == "hipErrorIllegalAddress"

    stub.clear_calls()
    new_base = dev.reset()
    calls = stub.calls()
    assert calls.index("hipDeviceReset") < calls.index("hipDeviceSetLimit") < calls.index("hipMalloc"), calls
    assert dev.healthy and stub.count("resets") == 1
    assert new_base == dev.pool_base and stub.count("allocations") == 1
    assert stub.heap_limit(0) == MiB  # the reset dropped it; set again before anything else
    assert _read(dev, new_base, 4096) == bytes(4096)
    # the kernel handle of the destroyed context still works: module and function reload lazily
    launch(new_base, n=8, value=-3)
    dev.synchronize()
    assert struct.unpack("<9i", _read(dev, new_base, 36)) == (-3,) * 8 + (0,)
    assert stub.count("loads") == 2 and stub.count("modules") == 1

    stub.fail_next_sync(719)  # hipErrorLaunchFailure
    fault = _raises(KernelFault, dev.synchronize)
    assert fault.reasons == ["launch_failure"] and not dev.healthy
    dev.reset()
    launch(dev.pool_base)
    dev.synchronize()
    assert dev.healthy and stub.count("loads") == 3
    dev.close()
    assert stub.count("allocations") == stub.count("modules") == 0


def scenario_fault_statuses(stub: Stub, _: Path) -> None:
    from hip import hip

    from pappus.errors import DeviceError, KernelFault
    from pappus_hip import runtime
    from pappus_hip.device import HipDevice

    named = {*runtime.FAULT_STATUSES, *runtime._DESCRIPTIONS, HipDevice.calls.not_found,
             HipDevice.calls.out_of_memory}
    missing = sorted(n for n in named if not hasattr(hip.hipError_t, n))
    assert not missing, f"pappus_hip names statuses that hip-python's hipError_t does not have: {missing}"
    dev = HipDevice()
    dev.open()
    dev.reserve(4096)
    for name, reason in runtime.FAULT_STATUSES.items():  # each one, as the runtime returns it
        stub.fail_next_sync(int(getattr(hip.hipError_t, name)))
        fault = _raises(KernelFault, dev.synchronize)
        assert (fault.status, fault.reasons, dev.healthy) == (name, [reason], False), (name, fault)
        dev.reset()
        dev.synchronize()
        assert dev.healthy
    # A runtime newer than hip-python may answer a status hipError_t lacks (hip-python raises
    # ValueError converting it): the answer is kept, and may be a fault, so the device needs a reset.
    assert not any(e.value == UNKNOWN_STATUS for e in hip.hipError_t)
    stub.fail_next_sync(UNKNOWN_STATUS)
    error = _raises(DeviceError, dev.synchronize)
    assert error.status == f"hipError({UNKNOWN_STATUS})" and error.fields["unknown_status"], error
    assert not dev.healthy
    dev.reset()
    dev.synchronize()
    assert dev.healthy
    dev.close()


def scenario_close(stub: Stub, hsaco: Path) -> None:
    from pappus.errors import DeviceError, KernelFault
    from pappus_hip.device import HipDevice

    data = hsaco.read_bytes()
    dev = HipDevice()
    dev.open()
    dev.reserve(4096)
    first = dev.load_module(_image(data))
    dev.get_kernel(first, "scalars")
    dev.load_module(_image(data))
    assert stub.count("modules") == 2 and stub.count("allocations") == 1
    dev.close()
    assert stub.count("modules") == 0 and stub.count("allocations") == 0
    assert stub.calls().count("hipModuleUnload") == 2
    stub.clear_calls()
    dev.close()  # idempotent, and no call reaches the runtime
    assert stub.calls() == []
    assert _raises(DeviceError, dev.reserve, 64).status == "not_open"
    # opened again, it is a device like new
    dev.open()
    dev.reserve(4096)
    dev.close()
    assert stub.count("allocations") == 0

    # Closed while faulted (the engine replaces a device whose reset failed): HIP keeps the
    # primary context, and its fault, in the process, so close resets it: a new device of the
    # same GPU in this process starts clean.
    dev = HipDevice()
    dev.open()
    dev.reserve(4096)
    stub.fail_next_sync(700)  # hipErrorIllegalAddress
    _raises(KernelFault, dev.synchronize)
    dev.close()
    assert stub.count("allocations") == 0 and stub.count("resets") == 1
    dev = HipDevice()
    dev.open()
    dev.reserve(4096)
    dev.synchronize()
    assert dev.healthy
    dev.close()


def scenario_threads(stub: Stub, hsaco: Path) -> None:
    from hip import hip

    from pappus.plan import Launch
    from pappus_hip.device import HipDevice

    stub.configure(devices=2)
    dev = HipDevice(device=1)
    other = HipDevice(device=0)
    dev.open()
    other.open()
    base = dev.reserve(4096)
    other.reserve(4096)  # device 0 is now current in this thread ...
    dev.memset(base, 1, 16)  # ... and device 1 again
    module = dev.load_module(_image(hsaco.read_bytes()))
    fill = dev.get_kernel(module, "bounded_fill")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            dev.write(base + 64, memoryview(b"abcd"))
            dev.launch(Launch("bounded_fill", fill, (1, 1, 1), (4, 1, 1), 0,
                              (struct.pack("<Q", base + 128), struct.pack("<i", 11))))
            dev.synchronize()
            other.memset(other.pool_base, 2, 16)
            dev.memset(base, 3, 16)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, "".join(traceback.format_exception(errors[0]))
    assert stub.count("wrong_device") == 0  # every call ran with its device current in its thread
    assert stub.launch(0)["device"] == 1
    assert _read(dev, base, 16) == b"\x03" * 16 and _read(dev, base + 64, 4) == b"abcd"
    assert struct.unpack("<4i", _read(dev, base + 128, 16)) == (11,) * 4

    # the stub does notice: a thread that never made device 1 current works on device 0
    def stray() -> None:
        hip.hipMemsetD8(base, 0, 16)

    t = threading.Thread(target=stray)
    t.start()
    t.join()
    assert stub.count("wrong_device") == 1
    dev.close()
    other.close()


def scenario_refusals(stub: Stub, _: Path) -> None:
    from pappus.errors import BackendUnavailable, DeviceError
    from pappus_hip.device import HipDevice

    stub.configure(version=50221153)  # ROCm 5.2's runtime under bindings generated for HIP 7.15
    exc = _raises(BackendUnavailable, HipDevice().open)
    assert "HIP runtime 5.2.21153 is older than the bindings (7.15" in str(exc), exc
    assert "hipGetDeviceCount" not in stub.calls()  # nothing past the version check

    stub.configure(devices=0)
    exc = _raises(DeviceError, HipDevice().open)
    assert (exc.status, exc.api) == ("hipErrorNoDevice", "hipGetDeviceCount"), exc
    stub.configure(devices=2)
    assert "device 3 does not exist (2 visible)" in str(_raises(DeviceError, HipDevice(device=3).open))

    stub.configure(pageable=1)  # XNACK on: kernels reach pageable host memory
    stub.clear_calls()
    exc = _raises(DeviceError, HipDevice().open)
    assert exc.status == "host_memory_reachable" and "HSA_XNACK=0" in str(exc), exc
    assert not {"hipDeviceSetLimit", "hipMalloc"} & set(stub.calls())
    info = HipDevice(allow_host_memory_access=True).open()
    assert info.details["pageable_memory_access"] is True and info.details["host_memory_access_allowed"] is True


def scenario_availability(stub: Stub, _: Path) -> None:
    from pappus_hip import runtime
    from pappus_hip.driver import HipDriver

    result = runtime.probe()  # in this process, on the stub
    assert result.available, result
    assert (result.runtime, result.bindings, result.device_count) == ("7.15.26333", "7.15", 1), result
    assert result.archs == ["gfx90a:sramecc+:xnack-"] and result.names == ["AMD Instinct MI210 (stub 0)"]
    # the isolated probe (a fresh interpreter, ROCM_PATH inherited) and what builds on it
    available = runtime.availability()
    assert available.available and "1 AMD GPU(s), device 0: AMD Instinct MI210 (stub 0)" in available.reason, available
    assert HipDriver().target() == "gfx90a:sramecc+:xnack-"

    stub.configure(version=60241134)
    result = runtime.probe()
    assert not result.available and result.runtime_older and "older than the bindings" in result.reason, result


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def main(argv: list[str]) -> int:
    from rocm.bindings.util.paths import get_library_path

    name, root, hsaco = argv[1], Path(argv[2]), Path(argv[3]) if argv[3] else Path()
    opened = os.fsdecode(get_library_path("amdhip64"))
    if opened != str(root / "lib" / "libamdhip64.so"):  # a runtime bundled with hip-python, or rocm_sdk's
        print(f"hip-python opens {opened} here whatever ROCM_PATH says: it cannot be pointed at the stub")
        return SKIP
    stub = Stub(root)
    SCENARIOS[name](stub, hsaco)
    print(f"ok {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

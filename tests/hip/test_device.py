"""HipDevice against a fake hip-python runtime.

No AMD GPU is ever available here, so these tests pin what does not need one: the checked-call
error mapping, kernel-argument marshalling at metadata offsets through ``extra``, the heap limit
set before anything else, pool handling, reset and lazy module reload. The fake answers like
hip-python: ``(hipError_t, values...)`` tuples.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import struct
import threading
from types import SimpleNamespace

import pytest

from pappus.errors import BackendUnavailable, DeviceError, KernelFault, LibraryError
from pappus.interfaces import LibraryImage
from pappus.kernels import KernelParam, ParamKind
from pappus.plan import Launch
from pappus_hip import runtime
from pappus_hip.codeobject import bundle_entries
from pappus_hip.device import HipDevice, kernarg_layout, pack_kernargs


class Err(enum.IntEnum):
    hipSuccess = 0
    hipErrorInvalidValue = 1
    hipErrorOutOfMemory = 2
    hipErrorNoDevice = 100
    hipErrorInvalidDevice = 101
    hipErrorNotFound = 500
    hipErrorIllegalAddress = 700
    hipErrorLaunchFailure = 719


OK = Err.hipSuccess
BASE = 0x7F00_0000_0000


class FakeHip:
    hipError_t = Err
    hipLimit_t = SimpleNamespace(hipLimitMallocHeapSize="malloc_heap")
    hipDeviceAttribute_t = SimpleNamespace(**{f"hipDeviceAttribute{n}": n for n in (
        "MaxThreadsPerBlock", "MaxBlockDimX", "MaxBlockDimY", "MaxBlockDimZ", "MaxGridDimX", "MaxGridDimY",
        "MaxGridDimZ", "MaxSharedMemoryPerBlock", "PageableMemoryAccess")})
    HIP_LAUNCH_PARAM_BUFFER_POINTER, HIP_LAUNCH_PARAM_BUFFER_SIZE, HIP_LAUNCH_PARAM_END = 1, 2, 3
    ATTRS = {"MaxThreadsPerBlock": 1024, "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 1024,
             "MaxGridDimX": 2**31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535, "MaxSharedMemoryPerBlock": 65536,
             "PageableMemoryAccess": 0}

    def __init__(self, runtime_version=60241134, devices=1, free=1 << 24, total=1 << 26):
        self.runtime_version, self.devices, self.free, self.total = runtime_version, devices, free, total
        self.heap = 8 << 20  # HIP's default heap before pappus sets it
        self.allocs: dict[int, bytearray] = {}
        self.calls: list[str] = []
        self.launches: list[tuple] = []
        self.loaded: list[bytes] = []
        self.launch_status = OK
        self.sync_status = OK
        self.reset_status = OK
        self.set_device: list[tuple[int, int]] = []
        self.next_base = BASE  # a fresh context allocates from the same place again

    def __getattribute__(self, name):
        if name.startswith("hip") and not name.endswith("_t"):
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)

    def hipRuntimeGetVersion(self):
        return OK, self.runtime_version

    def hipGetDeviceCount(self):
        return (OK, self.devices) if self.devices else (Err.hipErrorNoDevice, 0)

    def hipSetDevice(self, index):
        self.set_device.append((threading.get_ident(), index))
        return (OK,) if index < self.devices else (Err.hipErrorInvalidDevice,)

    def hipDeviceSetLimit(self, limit, value):
        assert limit == "malloc_heap"
        self.heap = value
        return (OK,)

    def hipDeviceGetLimit(self, limit):
        return OK, self.heap

    def hipMemGetInfo(self):
        return OK, self.free, self.total

    def hipGetDeviceProperties(self, index):
        return OK, SimpleNamespace(gcnArchName="gfx90a:sramecc+:xnack-", name="AMD Instinct MI210")

    def hipDeviceGetAttribute(self, attr, index):
        return OK, self.ATTRS[attr]

    def hipMalloc(self, n):
        base = self.next_base
        self.next_base += (n + 0xFFFF) & ~0xFFFF
        self.allocs[base] = bytearray(b"\xab" * n)  # stale data of an earlier process
        return OK, base

    def hipFree(self, ptr):
        self.allocs.pop(ptr)
        return (OK,)

    def _at(self, address, n):
        for base, buf in self.allocs.items():
            if base <= address and address + n <= base + len(buf):
                return buf, address - base
        raise AssertionError(f"fake: {n} bytes at {address:#x} are not allocated")

    def hipMemsetD8(self, address, value, n):
        buf, off = self._at(address, n)
        buf[off:off + n] = bytes([value]) * n
        return (OK,)

    def hipMemcpyHtoD(self, dst, src, n):
        buf, off = self._at(dst, n)
        buf[off:off + n] = bytes(memoryview(src).cast("B")[:n])
        return (OK,)

    def hipMemcpyDtoH(self, dst, src, n):
        buf, off = self._at(src, n)
        memoryview(dst).cast("B")[:n] = buf[off:off + n]
        return (OK,)

    def hipModuleLoadData(self, image):
        self.loaded.append(bytes(image))
        return OK, SimpleNamespace(image=bytes(image))

    def hipModuleGetFunction(self, module, name):
        return OK, (module, name.decode())

    def hipModuleUnload(self, module):
        return (OK,)

    def hipModuleLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        assert params is None
        block = b""
        if extra is not None:
            cfg = (ctypes.c_void_p * 5).from_address(extra)
            assert (cfg[0], cfg[2], cfg[4]) == (1, 2, 3)
            size = ctypes.c_size_t.from_address(cfg[3]).value
            block = ctypes.string_at(cfg[1], size)
        self.launches.append((f[1], (gx, gy, gz), (bx, by, bz), shared, block))
        return (self.launch_status,)

    def hipDeviceSynchronize(self):
        return (self.sync_status,)

    def hipDeviceReset(self):
        if self.reset_status != OK:
            return (self.reset_status,)
        self.allocs.clear()
        self.next_base = BASE
        self.heap = 8 << 20
        self.sync_status = OK
        return (OK,)


@pytest.fixture(autouse=True)
def bindings_6_2(monkeypatch):
    monkeypatch.setattr(runtime, "bindings_version", lambda: ((6, 2, 0), "6.2.0-fake"))


def opened(fake=None, **kw):
    fake = fake or FakeHip()
    dev = HipDevice(_hip=fake, **kw)
    return dev, dev.open(), fake


def test_a_gpu_whose_kernels_reach_host_memory_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv("PAPPUS_ALLOW_HOST_MEMORY_ACCESS", raising=False)
    fake = FakeHip()
    fake.ATTRS = {**FakeHip.ATTRS, "PageableMemoryAccess": 1}  # XNACK on
    with pytest.raises(DeviceError, match="HSA_XNACK=0") as info:
        HipDevice(_hip=fake).open()
    assert info.value.fields["status"] == "host_memory_reachable"
    assert "hipMalloc" not in fake.calls and "hipDeviceSetLimit" not in fake.calls
    info = HipDevice(_hip=fake, allow_host_memory_access="true").open()
    assert info.details["pageable_memory_access"] is True and info.details["host_memory_access_allowed"] is True
    assert HipDevice(_hip=FakeHip()).open().details["pageable_memory_access"] is False


def image(data: bytes) -> LibraryImage:
    return LibraryImage(hashlib.sha256(data).hexdigest(), data)


def test_open_sets_heap_limit_first_and_reports_the_device():
    dev, info, fake = opened()
    assert info.name == "AMD Instinct MI210"
    assert (info.free_memory, info.total_memory) == (fake.free, fake.total)  # from hipMemGetInfo
    assert info.heap_limit == 0 and fake.heap == 0
    assert info.limits.max_shared_bytes == 65536 and info.limits.max_grid_dims[1] == 65535
    assert info.details["target"] == "gfx90a:sramecc+:xnack-"
    assert fake.calls.index("hipDeviceSetLimit") < fake.calls.index("hipMemGetInfo")
    assert "hipMalloc" not in fake.calls and "hipModuleLoadData" not in fake.calls


def test_open_refuses_an_older_runtime_and_no_device():
    with pytest.raises(BackendUnavailable, match=r"HIP runtime 5\.2\.21153 is older than the bindings \(6\.2"):
        HipDevice(_hip=FakeHip(runtime_version=50221153)).open()
    with pytest.raises(DeviceError, match=r"hipGetDeviceCount failed: hipErrorNoDevice \(100\)") as exc:
        HipDevice(_hip=FakeHip(devices=0)).open()
    assert exc.value.status == "hipErrorNoDevice" and exc.value.api == "hipGetDeviceCount"
    with pytest.raises(DeviceError, match="device 3 does not exist"):
        HipDevice(device=3, _hip=FakeHip()).open()


def test_pool_reserve_write_read_memset():
    dev, _, fake = opened()
    base = dev.reserve(4096)
    assert fake.allocs[base] == bytearray(4096)  # cleared once after hipMalloc
    with pytest.raises(DeviceError, match="already reserved"):
        dev.reserve(4096)
    dev.write(base + 16, memoryview(b"hello"))
    out = bytearray(5)
    dev.read(base + 16, memoryview(out))
    assert out == b"hello"
    dev.memset(base, 0, 4096)
    dev.read(base + 16, memoryview(out))
    assert out == bytes(5)
    with pytest.raises(DeviceError, match="outside the pool"):
        dev.write(base + 4094, memoryview(b"abc"))
    with pytest.raises(DeviceError, match="outside the pool"):
        dev.read(base - 1, memoryview(bytearray(1)))


def test_reserve_more_than_free():
    dev, _, fake = opened(FakeHip(free=1000))
    with pytest.raises(DeviceError, match="does not fit in the device's 1000 free bytes") as exc:
        dev.reserve(1001)
    assert exc.value.status == "hipErrorOutOfMemory"


def test_kernarg_layout_and_packing():
    params = (KernelParam(8, ParamKind.POINTER, 0), KernelParam(4, ParamKind.INT, 8),
              KernelParam(16, ParamKind.BYTES, 16), KernelParam(1, ParamKind.BYTES, 32))
    offsets, span = kernarg_layout(params)
    assert offsets == (0, 8, 16, 32) and span == 40
    block = pack_kernargs("k", params, offsets, span, (b"\x01" * 8, b"\x02" * 4, b"\x03" * 16, b"\x04"))
    assert block == b"\x01" * 8 + b"\x02" * 4 + b"\0" * 4 + b"\x03" * 16 + b"\x04" + b"\0" * 7
    # without metadata offsets: natural alignment
    bare = tuple(KernelParam(p.size, p.kind) for p in params)
    assert kernarg_layout(bare) == ((0, 8, 16, 32), 40)
    assert kernarg_layout((KernelParam(1), KernelParam(2), KernelParam(8))) == ((0, 2, 8), 16)
    with pytest.raises(DeviceError, match="argument 1 of kernel 'k' is 8 bytes; the kernel's parameter is 4"):
        pack_kernargs("k", params, offsets, span, (b"\x01" * 8, b"\x02" * 8, b"\x03" * 16, b"\x04"))
    with pytest.raises(DeviceError, match="takes 4 arguments, the launch has 1"):
        pack_kernargs("k", params, offsets, span, (b"\x01" * 8,))


def test_load_launch_marshals_at_metadata_offsets(code_objects):
    data = code_objects.get("clean", 5, "bundle")
    dev, _, fake = opened()
    base = dev.reserve(1 << 16)
    module = dev.load_module(image(data))
    entry = next(e for e in bundle_entries(data) if e.id.endswith("--gfx90a"))
    assert fake.loaded == [data[entry.offset:entry.offset + entry.size]]  # the validated ELF, not the bundle
    kernel = dev.get_kernel(module, "scalars")
    args = (struct.pack("<Q", base), struct.pack("<i", -7), struct.pack("<f", 2.5), bytes(range(16)),
            b"\x09", struct.pack("<d", 1.5))
    dev.launch(Launch("scalars", kernel, (2, 1, 1), (64, 1, 1), 128, args))
    dev.synchronize()
    name, grid, block, shared, kernargs = fake.launches[-1]
    assert (name, grid, block, shared) == ("scalars", (2, 1, 1), (64, 1, 1), 128)
    assert len(kernargs) == 48
    assert kernargs[0:8] == args[0] and kernargs[8:12] == args[1] and kernargs[12:16] == args[2]
    assert kernargs[16:32] == args[3] and kernargs[32:33] == b"\x09" and kernargs[40:48] == args[5]
    with pytest.raises(DeviceError, match="kernel 'nope' is not in the module"):
        dev.get_kernel(module, "nope")
    with pytest.raises(LibraryError, match="sha256"):
        dev.load_module(LibraryImage("0" * 64, data))


def test_faults_become_kernel_faults_and_reset_recovers(code_objects):
    dev, _, fake = opened()
    base = dev.reserve(4096)
    module = dev.load_module(image(code_objects.get("clean", 4, "raw-gfx90a")))
    kernel = dev.get_kernel(module, "bounded_fill")
    launch = Launch("bounded_fill", kernel, (1, 1, 1), (1, 1, 1), 0, (struct.pack("<Q", base), b"\0\0\0\0"))
    dev.launch(launch)
    fake.sync_status = Err.hipErrorIllegalAddress
    with pytest.raises(KernelFault, match=r"hipDeviceSynchronize failed: hipErrorIllegalAddress \(700\)") as exc:
        dev.synchronize()
    assert exc.value.reasons == ["illegal_address"] and exc.value.status == "hipErrorIllegalAddress"
    assert not dev.healthy  # sticky: the executor now calls reset()
    fake.launch_status = Err.hipErrorLaunchFailure
    with pytest.raises(KernelFault) as exc:
        dev.launch(launch)
    assert exc.value.kernel == "bounded_fill"
    fake.launch_status = OK

    dev.reset()
    assert "hipDeviceReset" in fake.calls and fake.heap == 0  # heap limit applied again
    assert dev.pool_base == base and base in fake.allocs and dev.healthy
    assert fake.allocs[base] == bytearray(4096)
    dev.launch(launch)  # the old kernel handle still works: module and function reload lazily
    dev.synchronize()
    assert len(fake.loaded) == 2 and dev.healthy

    fake.next_base = BASE + (1 << 32)  # this time the pool comes back elsewhere
    fake.hipDeviceReset = lambda: (fake.allocs.clear(), (OK,))[1]
    new_base = dev.reset()  # the executor rebuilds its pool on the returned base
    assert new_base == BASE + (1 << 32) == dev.pool_base and dev.healthy

    fake.hipDeviceReset = lambda: (Err.hipErrorInvalidDevice,)
    with pytest.raises(DeviceError):
        dev.reset()
    assert not dev.healthy


def test_heap_limit_round_trip_and_missing_symbols():
    dev, _, fake = opened()
    assert dev.set_malloc_heap_limit(1 << 20) == 1 << 20
    fake.hipDeviceGetLimit = lambda limit: (OK, 4096)  # a device that rounds
    assert dev.set_malloc_heap_limit(1000) == 4096

    def missing(*_):
        raise RuntimeError("failed to dlsym 'hipMemsetD8'")

    fake.hipMemsetD8 = missing
    with pytest.raises(DeviceError, match="failed to dlsym") as exc:
        runtime.checked(fake, "hipMemsetD8", 0, 0, 1)
    assert exc.value.status == "binding_error"


def test_every_thread_sets_the_current_device():
    fake = FakeHip(devices=2)
    dev, _, _ = opened(fake, device=1)
    dev.reserve(64)
    t = threading.Thread(target=lambda: dev.memset(dev.pool_base, 0, 64))
    t.start()
    t.join()
    threads = {ident for ident, index in fake.set_device if index == 1}
    assert len(threads) == 2


def test_close_releases_pool_and_modules(code_objects):
    dev, _, fake = opened()
    dev.reserve(64)
    dev.load_module(image(code_objects.get("clean", 4, "raw-gfx90a")))
    dev.close()
    assert fake.allocs == {} and "hipModuleUnload" in fake.calls
    dev.close()  # idempotent

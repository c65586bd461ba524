"""Launch.args -> the kernelParams pointer array and the CU_LAUNCH_PARAM_BUFFER_POINTER buffer."""

from __future__ import annotations

import ctypes
import struct

import pytest

from pappus.errors import DeviceError
from pappus.kernels import KernelParam
from pappus_cuda import runtime
from pappus_cuda.cubin import read_library
from pappus_cuda.device import (
    LAUNCH_PARAM_BUFFER_POINTER,
    LAUNCH_PARAM_BUFFER_SIZE,
    PackedArgs,
    ParamLayout,
)

SCALAR_ARGS = (struct.pack("<Q", 0x1122334455667788), struct.pack("<i", -7), struct.pack("<f", 0.5),
               struct.pack("<d", -2.0), bytes(range(24)), b"\x7f")


def test_layout_uses_the_code_objects_offsets(code_objects):
    params = read_library(code_objects.get("clean", "sm_90")).kernels["scalars"].params
    layout = ParamLayout.of(params)
    assert layout.offsets == (0, 8, 12, 16, 24, 48) and layout.sizes == (8, 4, 4, 8, 24, 1)
    assert layout.span == 49  # where the last parameter ends, not rounded: the driver refuses more


def test_layout_without_offsets_uses_natural_alignment():
    layout = ParamLayout.of((KernelParam(1), KernelParam(8), KernelParam(4), KernelParam(2), KernelParam(16)))
    assert layout.offsets == (0, 8, 16, 20, 32)
    assert layout.span == 48
    with pytest.raises(DeviceError, match="overlap"):
        ParamLayout.of((KernelParam(8, offset=0), KernelParam(8, offset=4)))


def test_buffer_holds_each_argument_at_its_offset(code_objects):
    params = read_library(code_objects.get("clean", "sm_90")).kernels["scalars"].params
    packed = PackedArgs("scalars", ParamLayout.of(params), SCALAR_ARGS)
    raw = packed.raw()
    assert raw[0:8] == SCALAR_ARGS[0] and raw[8:12] == SCALAR_ARGS[1] and raw[12:16] == SCALAR_ARGS[2]
    assert raw[16:24] == SCALAR_ARGS[3] and raw[24:48] == SCALAR_ARGS[4] and raw[48:49] == SCALAR_ARGS[5]
    assert len(raw) == 49


def test_kernel_params_array_points_into_the_buffer(code_objects):
    params = read_library(code_objects.get("clean", "sm_90")).kernels["scalars"].params
    packed = PackedArgs("scalars", ParamLayout.of(params), SCALAR_ARGS)
    ptrs = (ctypes.c_void_p * 6).from_address(packed.kernel_params)
    base = ctypes.addressof(packed.buffer)
    assert [p - base for p in ptrs] == [0, 8, 12, 16, 24, 48]
    assert [ctypes.string_at(p, len(a)) for p, a in zip(ptrs, SCALAR_ARGS, strict=True)] == list(SCALAR_ARGS)


def test_extra_array_is_pointer_size_end(code_objects):
    params = read_library(code_objects.get("clean", "sm_90")).kernels["scalars"].params
    packed = PackedArgs("scalars", ParamLayout.of(params), SCALAR_ARGS)
    extra = (ctypes.c_void_p * 5).from_address(packed.extra_address)
    assert extra[0] == LAUNCH_PARAM_BUFFER_POINTER and extra[2] == LAUNCH_PARAM_BUFFER_SIZE and not extra[4]
    assert extra[1] == ctypes.addressof(packed.buffer)
    assert ctypes.c_size_t.from_address(extra[3]).value == 49


def test_kernels_without_parameters():
    packed = PackedArgs("noop", ParamLayout.of(()), ())
    assert packed.kernel_params is None and packed.extra_address == 0


def test_sizes_and_counts_are_enforced():
    layout = ParamLayout.of((KernelParam(8, offset=0), KernelParam(4, offset=8)))
    with pytest.raises(DeviceError, match="takes 2 arguments"):
        PackedArgs("k", layout, (b"\0" * 8,))
    with pytest.raises(DeviceError, match="argument 1 of kernel 'k' is 8 bytes"):
        PackedArgs("k", layout, (b"\0" * 8, b"\0" * 8))


def test_the_real_bindings_accept_these_argument_forms():
    """Without libcuda the bindings fail only when they load it, after converting every argument:
    a TypeError here would mean cuda-bindings rejects the form this backend passes."""
    if not runtime.bindings_installed():
        pytest.skip(runtime.NOT_INSTALLED)
    if runtime.probe().reason != runtime.NO_DRIVER:
        pytest.skip("libcuda is present: the real driver would run these calls")
    d = runtime.load_driver()
    packed = PackedArgs("k", ParamLayout.of((KernelParam(8, offset=0),)), (b"\0" * 8,))
    buf = bytearray(16)
    calls = [
        ("cuLaunchKernel", d.CUfunction(0), 1, 1, 1, 1, 1, 1, 0, 0, packed.kernel_params, 0),
        ("cuLaunchKernel", d.CUfunction(0), 1, 1, 1, 1, 1, 1, 0, 0, None, packed.extra_address),
        ("cuMemcpyHtoD", 0x7F0000000000, memoryview(b"abcd"), 4),
        ("cuMemcpyDtoH", memoryview(buf), 0x7F0000000000, 16),
        ("cuMemsetD8", 0x7F0000000000, 0, 16),
        ("cuModuleLoadData", b"\x7fELF" + b"\0" * 60),
        ("cuCtxSetLimit", d.CUlimit.CU_LIMIT_MALLOC_HEAP_SIZE, 0),
        ("cuMemAlloc", 1 << 20),
    ]
    for api, *args in calls:
        with pytest.raises(DeviceError) as info:
            runtime.checked(d, api, *args)
        message = str(info.value)
        assert "TypeError" not in message, (api, message)
        assert info.value.fields["status"] == "binding_error"

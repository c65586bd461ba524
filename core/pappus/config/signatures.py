"""Checks of a function against the libraries it uses: kernels exist, arguments match signatures.

This is what turns "kernel parameters marshalled by signature" and "kernels that need a device
heap are refused" into registration-time guarantees. Backends supply :class:`LibraryInfo` read
statically from the code objects; these checks are the same for every backend.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import FieldError
from ..kernels import DeviceLimits, KernelInfo, KernelParam, LibraryInfo, ParamKind
from .limits import DTYPES
from .model import (
    Absolute,
    ConstantArg,
    ExecKernel,
    FunctionConfig,
    PtrArg,
    SizeofArg,
    ValueArg,
    iter_launch_paths,
)


def arg_size_problem(arg: object, param: KernelParam) -> str | None:
    """Why ``arg`` cannot be passed for ``param``, or None when it fits."""
    if isinstance(arg, PtrArg):
        if param.kind not in (ParamKind.POINTER, ParamKind.BYTES, ParamKind.UINT) or param.size != 8:
            return f"Ptr passes an 8-byte device address but the kernel expects {_describe(param)}"
        return None
    if isinstance(arg, SizeofArg):
        if param.kind in (ParamKind.POINTER, ParamKind.FLOAT) or param.size != 8:
            return f"Sizeof passes a u64 but the kernel expects {_describe(param)}"
        return None
    if isinstance(arg, ConstantArg):
        width, kind, _, _ = DTYPES[arg.dtype]
        if width != param.size:
            return f"{arg.dtype} is {width} bytes but the kernel expects {_describe(param)}"
        if param.kind == ParamKind.POINTER:
            return f"a {arg.dtype} constant cannot be passed where the kernel expects a pointer"
        if param.kind == ParamKind.FLOAT and kind != "float":
            return f"{arg.dtype} is an integer but the kernel expects {_describe(param)}"
        if param.kind in (ParamKind.INT, ParamKind.UINT) and kind == "float":
            return f"{arg.dtype} is a float but the kernel expects {_describe(param)}"
        return None
    if isinstance(arg, ValueArg):
        width, _, _, _ = DTYPES[arg.dtype]
        if width != param.size:
            return f"{arg.dtype} is {width} bytes but the kernel expects {_describe(param)}"
        if param.kind in (ParamKind.POINTER, ParamKind.FLOAT):
            return f"an integer Value cannot be passed where the kernel expects {_describe(param)}"
        return None
    return f"unsupported argument {arg!r}"


def _describe(param: KernelParam) -> str:
    name = f" '{param.name}'" if param.name else ""
    if param.kind == ParamKind.POINTER:
        return f"a pointer{name}"
    if param.kind == ParamKind.BYTES:
        return f"{param.size} bytes{name}"
    return f"a {param.size}-byte {param.kind.value}{name}"


def check_function_against_libraries(
    config: FunctionConfig,
    libraries: Mapping[str, LibraryInfo],
    *,
    heap_limit: int = 0,
    device: DeviceLimits | None = None,
) -> list[FieldError]:
    """Every problem between ``config`` and the libraries' real kernels, as field errors."""
    device = device or DeviceLimits()
    errors: list[FieldError] = []
    kernels: dict[str, KernelInfo] = {}
    for i, ref in enumerate(config.kernels):
        info = libraries.get(ref.library)
        path = f"kernels[{i}]"
        if info is None:
            errors.append(FieldError(path, f"library {ref.library!r} is not registered"))
            continue
        kernel = info.kernel(ref.name)
        if kernel is None:
            have = ", ".join(sorted(info.kernels)[:12]) or "none"
            errors.append(FieldError(path, f"kernel {ref.name!r} is not in library {ref.library!r} "
                                           f"(it has: {have})"))
            continue
        if kernel.uses_hostcall:
            errors.append(FieldError(path, f"kernel {ref.name!r} uses host calls (printf or similar), "
                                           "which pappus does not allow"))
        if kernel.uses_heap and heap_limit == 0:
            errors.append(FieldError(path, f"kernel {ref.name!r} calls device malloc, but the malloc "
                                           "heap limit is 0; rebuild it without malloc or raise the limit"))
        kernels[ref.name] = kernel


    def check_launch(launch: ExecKernel, path: str) -> None:
        kernel = kernels.get(launch.kernel)
        if kernel is None:
            return
        if len(launch.args) != len(kernel.params):
            errors.append(FieldError(f"{path}.args", f"kernel {launch.kernel!r} takes "
                                     f"{len(kernel.params)} arguments, {len(launch.args)} given"))
        else:
            for j, (arg, param) in enumerate(zip(launch.args, kernel.params, strict=True)):
                problem = arg_size_problem(arg, param)
                if problem:
                    errors.append(FieldError(f"{path}.args[{j}]", problem))
        shared = launch.shared_mem_bytes
        if isinstance(shared, Absolute):
            total = shared.value + kernel.static_shared_bytes
            if total > device.max_shared_bytes:
                errors.append(FieldError(f"{path}.shared_mem_bytes", f"{shared.value} dynamic + "
                                         f"{kernel.static_shared_bytes} static bytes of shared memory "
                                         f"exceed the device limit of {device.max_shared_bytes}"))
        if kernel.max_block_threads and all(isinstance(d, Absolute) for d in launch.block):
            threads = 1
            for d in launch.block:
                threads *= d.value  # type: ignore[union-attr]
            if threads > kernel.max_block_threads:
                errors.append(FieldError(f"{path}.block", f"{threads} threads per block exceed the "
                                         f"kernel's maximum of {kernel.max_block_threads}"))

    for path, launch in iter_launch_paths(config.blueprint.control_flow):
        check_launch(launch, path)
    return errors

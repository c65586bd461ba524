"""A validated function compiled for invocation: sizes, layout and a launch program.

:class:`Plan` is built once per function (at registration, and once per worker). For each
invocation, :meth:`Plan.resolve` evaluates every size against the actual inputs and checks every
bound *before anything runs*; :meth:`Plan.program` then packs kernel arguments for a pool base.
The resulting :data:`Program` is a small tree of :class:`Launch` and :class:`Loop` that a
DeviceAPI executes (by default launch by launch; the CPU backend ships it whole to its sandbox).
"""

from __future__ import annotations

import dataclasses
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config.limits import DEFAULT_LIMITS, DTYPES, U64_MAX, Limits
from .config.model import (
    Absolute,
    Action,
    Add,
    CeilDiv,
    ConstantArg,
    ExecKernel,
    FromInput,
    FunctionConfig,
    Mul,
    PtrArg,
    Repeat,
    Sizeof,
    SizeofArg,
    Sizing,
    ValueArg,
)
from .errors import FieldError, InvalidInput
from .kernels import DeviceLimits, KernelParam
from .pool import DEFAULT_ALIGNMENT

#: Resolutions (and programs) a plan keeps for repeated input sizes.
CACHED_RESOLUTIONS = 32

_INT_FORMATS = {1: "b", 2: "h", 4: "i", 8: "q"}
_UINT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True, slots=True)
class Launch:
    """One kernel launch with its arguments packed to the kernel's real parameter sizes."""

    kernel: str
    handle: Any
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem_bytes: int
    args: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Loop:
    times: int
    body: tuple[Step, ...]


Step = Launch | Loop


class Program(tuple):  # noqa: SLOT001
    """A launch program (a tuple of steps) plus the window of the pool its buffers occupy:
    ``[start, extent)``, offsets from the pool base. A backend that can fence memory (the CPU
    backend) makes everything outside the window inaccessible to the kernels of this program."""

    extent: int
    start: int

    def __new__(cls, steps: tuple[Step, ...] = (), extent: int = 0, start: int = 0) -> Program:
        self = super().__new__(cls, steps)
        self.extent = extent
        self.start = min(start, extent)
        return self


@dataclass(frozen=True, slots=True)
class Resolution:
    """Sizes and pool offsets of one invocation's buffers, plus the resolved control flow."""

    sizes: dict[str, int]
    offsets: dict[str, int]
    top: int  # bytes of pool the invocation occupies, alignment included
    steps: tuple[Any, ...]  # resolved actions: (_ResolvedLaunch | _ResolvedLoop)
    launches: int


@dataclass(frozen=True, slots=True)
class _ResolvedLaunch:
    action: ExecKernel
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    packers: tuple[Callable[..., bytes], ...]
    values: tuple[bytes, ...] = ()  # packed Value arguments, in argument order


@dataclass(frozen=True, slots=True)
class _ResolvedLoop:
    times: int
    body: tuple[Any, ...]


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) & ~(alignment - 1)


def constant_bytes(arg: ConstantArg, size: int | None = None) -> bytes:
    """Little-endian bytes of a typed constant (widened/narrowed only to the kernel's own size)."""
    width, kind, _, _ = DTYPES[arg.dtype]
    if kind == "float":
        return struct.pack("<f" if width == 4 else "<d", arg.value)
    fmt = (_INT_FORMATS if kind == "int" else _UINT_FORMATS)[width]
    return struct.pack("<" + fmt, int(arg.value))


class Plan:
    """Everything about a function that does not change between invocations."""

    def __init__(
        self,
        config: FunctionConfig,
        signatures: Mapping[str, tuple[KernelParam, ...]] | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        device_limits: DeviceLimits | None = None,
        alignment: int = DEFAULT_ALIGNMENT,
        static_shared: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.device_limits = device_limits or DeviceLimits()
        self.alignment = alignment
        self.signatures = dict(signatures or {})
        #: kernel name -> the shared memory its code object declares, which a launch's dynamic
        #: amount adds to (registration checks constant amounts; this, those worked out per call)
        self.static_shared = dict(static_shared or {})
        bp = config.blueprint
        self.inputs = bp.input_names
        self.declared_input_sizes = {spec.name: spec.size for spec in bp.inputs}
        self.outputs = bp.outputs
        self._buffer_order = self._order_buffers(bp.buffers)
        self._sizers = {name: self._compile(sizing) for name, sizing in bp.buffers}
        self._packers: dict[int, tuple[Callable[..., bytes], ...]] = {}
        self._compiled: dict[int, Callable[[dict[str, int], Mapping[str, Any]], int]] = {}
        # Without FromInput anywhere, a resolution depends on the input sizes alone: invocations
        # with the sizes of a recent one reuse its resolution, and its program for the same pool
        # placement, instead of evaluating and packing everything again.
        self.sizes_only = not _reads_input_values(bp)
        self._resolutions: OrderedDict[tuple[int, ...], Resolution] = OrderedDict()
        self._programs: dict[tuple[int, tuple[int, ...]], tuple[Resolution, Mapping[str, Any], int, Program]] = {}

    # --- preparation -----------------------------------------------------------------------

    def _order_buffers(self, buffers: tuple[tuple[str, Sizing], ...]) -> list[str]:
        """Buffers in an order where every Sizeof of a buffer comes after that buffer."""
        inputs = set(self.inputs)
        deps: dict[str, set[str]] = {}
        for name, sizing in buffers:
            refs: set[str] = set()
            _refs(sizing, refs)
            deps[name] = {r for r in refs if r not in inputs}
        order: list[str] = []
        placed: set[str] = set()

        def place(name: str) -> None:
            if name in placed:
                return
            placed.add(name)
            for dep in sorted(deps.get(name, ())):
                place(dep)
            order.append(name)

        for name, _ in buffers:
            place(name)
        # Layout follows declaration order; evaluation follows dependency order.
        return order

    def _compile(self, sizing: Sizing) -> Callable[[dict[str, int], Mapping[str, Any]], int]:
        if isinstance(sizing, Absolute):
            value = sizing.value
            return lambda env, data: value
        if isinstance(sizing, Sizeof):
            name = sizing.name
            return lambda env, data: env[name]
        if isinstance(sizing, FromInput):
            name, index, dtype = sizing.input, sizing.index, sizing.dtype
            width, kind, _, _ = DTYPES[dtype]
            fmt = "<" + (_INT_FORMATS if kind == "int" else _UINT_FORMATS)[width]
            offset = index * width

            def read(env: dict[str, int], data: Mapping[str, Any]) -> int:
                buf = data[name]
                if offset + width > len(buf):
                    raise _SizeProblem(f"FromInput reads bytes {offset}..{offset + width} of input "
                                       f"{name!r}, which has {len(buf)} bytes")
                (value,) = struct.unpack_from(fmt, buf, offset)
                if value < 0:
                    raise _SizeProblem(f"FromInput read {value} from input {name!r}; sizes cannot be negative")
                return int(value)

            return read
        if isinstance(sizing, Mul):
            parts = [self._compile(f) for f in sizing.factors]
            return lambda env, data: _product([p(env, data) for p in parts])
        if isinstance(sizing, Add):
            parts = [self._compile(t) for t in sizing.terms]
            return lambda env, data: _sum([p(env, data) for p in parts])
        if isinstance(sizing, CeilDiv):
            num, den = self._compile(sizing.numerator), self._compile(sizing.denominator)

            def ceil_div(env: dict[str, int], data: Mapping[str, Any]) -> int:
                d = den(env, data)
                if d == 0:
                    raise _SizeProblem("CeilDiv divides by zero")
                return -(-num(env, data) // d)

            return ceil_div
        raise TypeError(f"unknown sizing {sizing!r}")

    def _arg_packers(self, launch: ExecKernel) -> tuple[Callable[..., bytes], ...]:
        """One packer per argument: ``packer(base, offsets, sizes, values) -> bytes``."""
        params = self.signatures.get(launch.kernel)
        packers: list[Callable[..., bytes]] = []
        value_index = 0
        for i, arg in enumerate(launch.args):
            size = params[i].size if params and i < len(params) else None
            if isinstance(arg, PtrArg):
                buf = arg.buffer
                packers.append(lambda base, offsets, sizes, values, b=buf: struct.pack("<Q", base + offsets[b]))
            elif isinstance(arg, SizeofArg):
                buf = arg.buffer
                packers.append(lambda base, offsets, sizes, values, b=buf: struct.pack("<Q", sizes[b]))
            elif isinstance(arg, ValueArg):
                packers.append(lambda base, offsets, sizes, values, k=value_index: values[k])
                value_index += 1
            else:
                packed = constant_bytes(arg, size)
                packers.append(lambda base, offsets, sizes, values, p=packed: p)
        return tuple(packers)

    # --- per invocation --------------------------------------------------------------------

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        errors: list[FieldError] = []
        for name in self.inputs:
            if name not in inputs:
                errors.append(FieldError(f"inputs.{name}", "is missing"))
                continue
            declared = self.declared_input_sizes.get(name)
            if declared is not None and len(inputs[name]) != declared:
                errors.append(FieldError(f"inputs.{name}", f"has {len(inputs[name])} bytes; the function "
                                         f"declares exactly {declared}"))
        for name in inputs:
            if name not in self.declared_input_sizes:
                errors.append(FieldError(f"inputs.{name}", "is not an input of this function "
                                         f"(inputs: {', '.join(self.inputs) or 'none'})"))
        if errors:
            raise InvalidInput(errors)

    def resolve(self, inputs: Mapping[str, Any]) -> Resolution:
        """Evaluate sizes, layout and control flow for these inputs; raise InvalidInput on any bound.

        The result is shared between invocations with the same input sizes (when sizes are all
        that matters): treat it as read-only."""
        self.check_inputs(inputs)
        if not self.sizes_only:
            return self._resolve(inputs)
        key = tuple([len(inputs[name]) for name in self.inputs])
        cached = self._resolutions.get(key)
        if cached is not None:
            return cached
        res = self._resolve(inputs)  # raises on a bound: nothing invalid is ever cached
        self._resolutions[key] = res
        while len(self._resolutions) > CACHED_RESOLUTIONS:
            try:
                self._resolutions.popitem(last=False)
            except KeyError:  # another thread evicted it first
                break
        return res

    def _resolve(self, inputs: Mapping[str, Any]) -> Resolution:
        env: dict[str, int] = {name: len(inputs[name]) for name in self.inputs}
        sizes: dict[str, int] = {}
        for name in self._buffer_order:
            try:
                size = self._sizers[name](_Env(env, sizes), inputs)
            except _SizeProblem as exc:
                raise InvalidInput(FieldError(f"blueprint.buffers.{name}", str(exc))) from None
            if size > self.limits.max_buffer_bytes:
                raise InvalidInput(FieldError(f"blueprint.buffers.{name}", f"resolves to {size} bytes; the "
                                              f"limit is {self.limits.max_buffer_bytes}"))
            if name in env and size < env[name]:
                raise InvalidInput(FieldError(f"inputs.{name}", f"has {env[name]} bytes but its buffer "
                                              f"holds only {size}"))
            sizes[name] = size
        offsets: dict[str, int] = {}
        top = 0
        for name, _ in self.config.blueprint.buffers:
            top = _align(top, self.alignment)
            offsets[name] = top
            top += sizes[name]
        counter = [0]
        steps = self._resolve_actions(self.config.blueprint.control_flow, "blueprint.control_flow",
                                      _Env(env, sizes), inputs, 1, counter)
        return Resolution(sizes=sizes, offsets=offsets, top=top, steps=steps, launches=counter[0])

    def _resolve_actions(self, actions: tuple[Action, ...], path: str, env: _Env, inputs: Mapping[str, Any],
                         multiplier: int, counter: list[int]) -> tuple[Any, ...]:
        out: list[Any] = []
        for i, action in enumerate(actions):
            if isinstance(action, ExecKernel):
                p = f"{path}[{i}].ExecKernel"
                counter[0] += multiplier
                if counter[0] > self.limits.max_launches:
                    raise InvalidInput(FieldError(path, f"more than {self.limits.max_launches} launches"))
                grid = self._dims(action.grid, f"{p}.grid", env, inputs, self.device_limits.max_grid_dims)
                block = self._dims(action.block, f"{p}.block", env, inputs, self.device_limits.max_block_dims)
                if block[0] * block[1] * block[2] > self.device_limits.max_block_threads:
                    raise InvalidInput(FieldError(f"{p}.block", f"{block[0] * block[1] * block[2]} threads per "
                                                  f"block exceed {self.device_limits.max_block_threads}"))
                shared = self._value(action.shared_mem_bytes, f"{p}.shared_mem_bytes", env, inputs)
                static = self.static_shared.get(action.kernel, 0)
                if shared + static > self.device_limits.max_shared_bytes:
                    amount = f"{shared} dynamic + {static} static bytes of shared memory" if static else \
                        f"{shared} bytes"
                    raise InvalidInput(FieldError(f"{p}.shared_mem_bytes", f"{amount} exceed the device limit "
                                                  f"of {self.device_limits.max_shared_bytes}"))
                key = id(action)
                packers = self._packers.get(key)
                if packers is None:
                    packers = self._packers[key] = self._arg_packers(action)
                values = tuple(self._value_arg(arg, f"{p}.args[{j}].Value", env, inputs)
                               for j, arg in enumerate(action.args) if isinstance(arg, ValueArg))
                out.append(_ResolvedLaunch(action, grid, block, shared, packers, values))
            else:
                assert isinstance(action, Repeat)
                p = f"{path}[{i}].Repeat"
                times = self._value(action.times, f"{p}.times", env, inputs)
                if times > self.limits.max_repeat:
                    raise InvalidInput(FieldError(f"{p}.times", f"{times} repetitions exceed the limit of "
                                                  f"{self.limits.max_repeat}"))
                body = self._resolve_actions(action.body, f"{p}.body", env, inputs, multiplier * max(times, 1),
                                             counter) if times else ()
                out.append(_ResolvedLoop(times, body))
        return tuple(out)

    def _value(self, sizing: Sizing, path: str, env: _Env, inputs: Mapping[str, Any]) -> int:
        fn = self._compiled.get(id(sizing))
        if fn is None:
            fn = self._compiled[id(sizing)] = self._compile(sizing)
        try:
            return _checked(fn(env, inputs))
        except _SizeProblem as exc:
            raise InvalidInput(FieldError(path, str(exc))) from None

    def _value_arg(self, arg: ValueArg, path: str, env: _Env, inputs: Mapping[str, Any]) -> bytes:
        value = self._value(arg.value, f"{path}.value", env, inputs)
        width, kind, _, hi = DTYPES[arg.dtype]
        if value > hi:
            raise InvalidInput(FieldError(f"{path}.value", f"resolves to {value}, which does not fit in {arg.dtype}"))
        fmt = (_INT_FORMATS if kind == "int" else _UINT_FORMATS)[width]
        return struct.pack("<" + fmt, value)

    def _dims(self, dims: tuple[Sizing, Sizing, Sizing], path: str, env: _Env, inputs: Mapping[str, Any],
              maxima: tuple[int, int, int]) -> tuple[int, int, int]:
        out = []
        for i, d in enumerate(dims):
            if isinstance(d, Absolute):
                out.append(d.value)
                continue
            v = self._value(d, f"{path}[{i}]", env, inputs)
            if v == 0:
                raise InvalidInput(FieldError(f"{path}[{i}]", "resolves to 0; launch dimensions must be at least 1"))
            if v > maxima[i]:
                raise InvalidInput(FieldError(f"{path}[{i}]", f"resolves to {v}, over the device limit of {maxima[i]}"))
            out.append(v)
        return (out[0], out[1], out[2])

    def program(self, resolution: Resolution, base: int, handles: Mapping[str, Any],
                offsets: Mapping[str, int] | None = None) -> Program:
        """Pack arguments for buffers placed at ``base + offsets`` (default: the resolution's).

        The same resolution placed the same way with the same handles gets the same Program
        object back (a device may recognise it and skip re-encoding)."""
        offsets = resolution.offsets if offsets is None else offsets
        if not self.sizes_only:  # every invocation has its own resolution: nothing to reuse
            return self._program(resolution, base, handles, offsets)
        # Keyed by placement too: a pool that alternates windows places each resolution at two
        # offsets in turn. Identity checks: the cache entry keeps the resolution and handles
        # alive, so their ids cannot have been reused by other objects.
        key = (id(resolution), tuple(offsets.values()))
        cached = self._programs.get(key)
        if cached is not None and cached[0] is resolution and cached[1] is handles and cached[2] == base:
            return cached[3]
        program = self._program(resolution, base, handles, offsets)
        if len(self._programs) >= 2 * CACHED_RESOLUTIONS:
            self._programs.clear()
        self._programs[key] = (resolution, handles, base, program)
        return program

    def _program(self, resolution: Resolution, base: int, handles: Mapping[str, Any],
                 offsets: Mapping[str, int]) -> Program:
        sizes = resolution.sizes

        def build(steps: tuple[Any, ...]) -> tuple[Step, ...]:
            out: list[Step] = []
            for step in steps:
                if isinstance(step, _ResolvedLaunch):
                    name = step.action.kernel
                    args = tuple(p(base, offsets, sizes, step.values) for p in step.packers)
                    out.append(Launch(name, handles.get(name), step.grid, step.block, step.shared, args))
                else:
                    out.append(Loop(step.times, build(step.body)))
            return tuple(out)

        extent = max((offsets[name] + size for name, size in sizes.items()), default=0)
        start = min((offsets[name] for name in sizes), default=0)
        return Program(build(resolution.steps), extent, start)

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return tuple(ref.name for ref in self.config.kernels)


class _SizeProblem(Exception):
    pass


def _reads_input_values(node: Any) -> bool:
    """Whether any size, dimension, value or count under ``node`` reads input contents (FromInput)."""
    if isinstance(node, FromInput):
        return True
    if isinstance(node, (tuple, list)):
        return any(_reads_input_values(item) for item in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return any(_reads_input_values(getattr(node, f.name)) for f in dataclasses.fields(node))
    return False


class _Env(dict):
    """Name lookup for Sizeof in size expressions: inputs first (their bytes), then buffers."""

    def __init__(self, inputs: dict[str, int], buffers: dict[str, int]) -> None:
        super().__init__()
        self.inputs = inputs
        self.buffers = buffers

    def __getitem__(self, name: str) -> int:
        if name in self.inputs:
            return self.inputs[name]
        return self.buffers[name]


def _checked(value: int) -> int:
    if value > U64_MAX:
        raise _SizeProblem(f"resolves to {value}, which overflows 64 bits")
    return value


def _product(values: list[int]) -> int:
    """A product of sizes (each at most ``U64_MAX``), refused as soon as it passes ``U64_MAX``:
    never a giant integer, whose cost would grow with every factor."""
    if 0 in values:
        return 0
    product = 1
    for v in values:
        product *= v
        if product > U64_MAX:
            raise _SizeProblem(f"the product overflows 64 bits (more than {U64_MAX})")
    return product


def _sum(values: list[int]) -> int:
    total = 0
    for v in values:
        total += v
        if total > U64_MAX:
            raise _SizeProblem(f"the sum overflows 64 bits (more than {U64_MAX})")
    return total


def _refs(sizing: Sizing, out: set[str]) -> None:
    if isinstance(sizing, Sizeof):
        out.add(sizing.name)
    elif isinstance(sizing, Mul):
        for f in sizing.factors:
            _refs(f, out)
    elif isinstance(sizing, Add):
        for t in sizing.terms:
            _refs(t, out)
    elif isinstance(sizing, CeilDiv):
        _refs(sizing.numerator, out)
        _refs(sizing.denominator, out)

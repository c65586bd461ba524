"""The function model (``pappus/function@1``) as immutable dataclasses.

A *function* names the kernels it uses and a *blueprint*: its inputs, buffers, outputs and a
control flow of kernel launches and bounded repetitions. Parsing (``parser.py``) turns JSON into
these types and reports every problem at once; nothing here runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_ID = "pappus/function@1"

# --- sizes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Absolute:
    """A literal count of bytes (buffer sizes) or elements (launch dimensions, repeat counts)."""

    value: int


@dataclass(frozen=True)
class Sizeof:
    """The size in bytes of an input or buffer, known when the invocation arrives."""

    name: str


@dataclass(frozen=True)
class FromInput:
    """An integer read from an input: element ``index`` of type ``dtype``, little-endian.

    The read is bounds-checked at registration against the input's declared size.
    """

    input: str
    index: int
    dtype: str = "u64"


@dataclass(frozen=True)
class Mul:
    factors: tuple[Sizing, ...]


@dataclass(frozen=True)
class Add:
    terms: tuple[Sizing, ...]


@dataclass(frozen=True)
class CeilDiv:
    numerator: Sizing
    denominator: Sizing


Sizing = Absolute | Sizeof | FromInput | Mul | Add | CeilDiv

# --- kernel arguments -----------------------------------------------------------------------


@dataclass(frozen=True)
class PtrArg:
    """Device address of a buffer."""

    buffer: str


@dataclass(frozen=True)
class SizeofArg:
    """Size of a buffer in bytes, passed as u64."""

    buffer: str


@dataclass(frozen=True)
class ConstantArg:
    """A typed scalar: ``dtype`` is one of i8..i64, u8..u64, f32, f64."""

    dtype: str
    value: int | float


@dataclass(frozen=True)
class ValueArg:
    """An integer worked out per invocation (e.g. read from an input with FromInput), passed as
    ``dtype``; a value that does not fit is an invalid input, found before anything runs."""

    dtype: str
    value: Sizing


Arg = PtrArg | SizeofArg | ConstantArg | ValueArg

# --- control flow ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecKernel:
    kernel: str
    args: tuple[Arg, ...]
    grid: tuple[Sizing, Sizing, Sizing]
    block: tuple[Sizing, Sizing, Sizing]
    shared_mem_bytes: Sizing = Absolute(0)


@dataclass(frozen=True)
class Repeat:
    times: Sizing
    body: tuple[Action, ...]


Action = ExecKernel | Repeat

# --- function -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelRef:
    """A kernel and the library it comes from."""

    name: str
    library: str


@dataclass(frozen=True)
class InputSpec:
    name: str
    size: int | None = None  # exact size in bytes, when declared


@dataclass(frozen=True)
class Blueprint:
    inputs: tuple[InputSpec, ...]
    buffers: tuple[tuple[str, Sizing], ...]  # declaration order matters for layout
    outputs: tuple[str, ...]
    control_flow: tuple[Action, ...]

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def buffer_sizes(self) -> dict[str, Sizing]:
        return dict(self.buffers)


@dataclass(frozen=True)
class FunctionConfig:
    schema: str
    library: str | None
    kernels: tuple[KernelRef, ...]
    blueprint: Blueprint
    deadline: float | None = None
    engine: str | None = None
    description: str | None = None

    @property
    def libraries(self) -> tuple[str, ...]:
        """Every library the function takes kernels from, in first-use order."""
        seen: dict[str, None] = {}
        for ref in self.kernels:
            seen.setdefault(ref.library, None)
        return tuple(seen)

    def kernel(self, name: str) -> KernelRef | None:
        for ref in self.kernels:
            if ref.name == name:
                return ref
        return None


def iter_launches(actions: tuple[Action, ...]):  # type: ignore[no-untyped-def]
    """Yield every ExecKernel in a control flow, depth first."""
    for _, launch in iter_launch_paths(actions):
        yield launch


def iter_launch_paths(actions: tuple[Action, ...], path: str = "blueprint.control_flow"):  # type: ignore[no-untyped-def]
    """Yield ``(config path, ExecKernel)`` for every launch in a control flow, depth first; the
    path is where errors about the launch are reported (``blueprint.control_flow[0].ExecKernel``)."""
    for i, action in enumerate(actions):
        if isinstance(action, ExecKernel):
            yield f"{path}[{i}].ExecKernel", action
        else:
            yield from iter_launch_paths(action.body, f"{path}[{i}].Repeat.body")

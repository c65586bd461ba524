"""The function model: config types, the parser, limits, the JSON Schema and signature checks."""

from .limits import DEFAULT_LIMITS, DTYPES, Limits
from .model import (
    SCHEMA_ID,
    Absolute,
    Add,
    Blueprint,
    CeilDiv,
    ConstantArg,
    ExecKernel,
    FromInput,
    FunctionConfig,
    InputSpec,
    KernelRef,
    Mul,
    PtrArg,
    Repeat,
    Sizeof,
    SizeofArg,
    ValueArg,
    iter_launches,
)
from .parser import library_name_problem, load_config_document, parse_function
from .schema import function_schema
from .signatures import check_function_against_libraries

__all__ = [
    "DEFAULT_LIMITS", "DTYPES", "Limits", "SCHEMA_ID", "Absolute", "Add", "Blueprint", "CeilDiv",
    "ConstantArg", "ExecKernel", "FromInput", "FunctionConfig", "InputSpec", "KernelRef", "Mul",
    "PtrArg", "Repeat", "Sizeof", "SizeofArg", "ValueArg", "iter_launches", "library_name_problem",
    "load_config_document", "parse_function", "function_schema", "check_function_against_libraries",
]

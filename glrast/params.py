"""The contract between Python and the kernels: params structs and shared constants.

Every kernel takes one params struct by value (csrc/*.cu). Its Python mirror is
a `Params` subclass of the same name with the same fields in the same order.
`Params` is strict: constructing or assigning a field the struct does not have
raises AttributeError naming it (a plain ctypes.Structure would keep a typo as a
Python attribute while the kernel reads NULL).

Each .cu exports the size and field offsets of its structs (GLRAST_LAYOUT in
csrc/common.h) and the values of constants mirrored here (GLRAST_CONSTANTS).
The kernel runtime compares them with the mirrors once per loaded module
(`check_layout`, `check_constants`): a mirror that drifts from the C code fails
with the name of the field or constant.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

import torch

# read_global(name, size) -> the first `size` bytes of a module's exported global
# (up to its NUL for size None), or None when the module does not export it.
ReadGlobal = Callable[[str, "int | None"], "bytes | None"]


class KernelContractError(RuntimeError):
    """A Python mirror of a kernel struct or constant disagrees with the compiled kernel."""


class _Strict(type(ctypes.Structure)):
    """Gives every Params subclass empty __slots__, so that setting a name that is
    not a field raises AttributeError (at C speed: construction stays as cheap as
    a plain structure's, which matters for calls on tiny inputs)."""

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **kwargs: object):
        namespace.setdefault("__slots__", ())
        return super().__new__(mcs, name, bases, namespace, **kwargs)


class Params(ctypes.Structure, metaclass=_Strict):
    """Base of the kernel params mirrors: only declared fields exist. Pointer fields
    take data pointers (`ptr`); the caller keeps the tensors alive until the launch
    has returned."""


def ptr(t: torch.Tensor | None) -> int | None:
    """Data pointer for a pointer field (None, a null pointer, for an absent optional tensor)."""
    return None if t is None else t.data_ptr()


class Accumulator(Params):
    """Mirror of `Accumulator` in csrc/common.h: a gradient buffer for scatter-adds (made by
    `kernels.accumulator`; the default, all null, stands for a gradient nobody wants)."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("spare", ctypes.c_void_p),
        ("peak", ctypes.c_void_p),
        ("size", ctypes.c_longlong),
        ("count", ctypes.c_int),
        ("mode", ctypes.c_int),
    ]


class FixedParams(Params):
    """Mirror of `FixedParams` in csrc/common.h: a deterministic accumulator's sums to float32."""

    _fields_ = [
        ("sums", ctypes.c_void_p),
        ("peak", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
    ]


def _names(read_global: ReadGlobal, symbol: str) -> list[str] | None:
    raw = read_global(symbol, None)
    if raw is None:
        return None
    return [name.strip() for name in raw.split(b"\0")[0].decode().split(",")]


def _values(read_global: ReadGlobal, symbol: str, count: int) -> list[int]:
    raw = read_global(symbol, 8 * count)
    return list(struct.unpack(f"<{count}q", raw[: 8 * count]))


def check_layout(kind: type[Params], source: str, read_global: ReadGlobal) -> None:
    """Compare the mirror `kind` (and the Params structs nested in it) with the
    layout that csrc/<source>.cu exports; raises KernelContractError naming the field."""
    c_name = kind.__name__
    names = _names(read_global, f"glrast_fields_{c_name}")
    if names is None:
        raise KernelContractError(
            f"csrc/{source}.cu exports no layout for struct {c_name} (mirrored by {kind.__module__}.{c_name}): "
            f"add GLRAST_LAYOUT({c_name}, <every field>) after the struct"
        )
    size, *offsets = _values(read_global, f"glrast_layout_{c_name}", 1 + len(names))
    mirror = [name for name, *_ in kind._fields_]
    for k, (c_field, py_field) in enumerate(zip(names, mirror)):
        if c_field != py_field:
            raise KernelContractError(
                f"{c_name} field {k}: csrc/{source}.cu has {c_field!r} where the Python mirror "
                f"{kind.__module__}.{c_name} has {py_field!r}"
            )
    if len(names) != len(mirror):
        raise KernelContractError(
            f"{c_name}: csrc/{source}.cu lists {len(names)} fields ({', '.join(names)}) but the Python mirror "
            f"{kind.__module__}.{c_name} has {len(mirror)} ({', '.join(mirror)})"
        )
    for name, offset in zip(names, offsets):
        mine = getattr(kind, name).offset
        if mine != offset:
            raise KernelContractError(
                f"{c_name}.{name} is at byte {offset} in csrc/{source}.cu but at byte {mine} in the Python mirror "
                f"{kind.__module__}.{c_name}: a field's type before it (or its own) differs"
            )
    if ctypes.sizeof(kind) != size:
        raise KernelContractError(
            f"sizeof({c_name}) is {size} bytes in csrc/{source}.cu but {ctypes.sizeof(kind)} in the Python mirror "
            f"{kind.__module__}.{c_name}: the type of its last field ({names[-1]}) differs"
        )
    for _, field_type, *_ in kind._fields_:
        if isinstance(field_type, type) and issubclass(field_type, Params):
            check_layout(field_type, source, read_global)


# (source or "*" for every module) -> group -> {C name: value}
_EXPECTED_CONSTANTS: dict[str, dict[str, dict[str, int]]] = {}


def expect_constants(source: str, group: str, values: dict[str, int]) -> None:
    """Declare Python's copy of the constants `group` that csrc/<source>.cu (every
    module for source "*") exports with GLRAST_CONSTANTS; checked at each module load."""
    _EXPECTED_CONSTANTS.setdefault(source, {})[group] = dict(values)


def check_constants(source: str, read_global: ReadGlobal) -> None:
    """Compare every constant group declared for csrc/<source>.cu with what it exports."""
    for scope in ("*", source):
        for group, expected in _EXPECTED_CONSTANTS.get(scope, {}).items():
            names = _names(read_global, f"glrast_constant_names_{group}")
            if names is None:
                raise KernelContractError(
                    f"csrc/{source}.cu exports no constants {group!r}: add GLRAST_CONSTANTS({group}, ...)"
                )
            compiled = dict(zip(names, _values(read_global, f"glrast_constants_{group}", len(names))))
            for name, value in expected.items():
                if name not in compiled:
                    raise KernelContractError(f"csrc/{source}.cu does not export {name} in its constants {group!r}")
                if compiled[name] != value:
                    raise KernelContractError(
                        f"{name} is {compiled[name]} in csrc/{source}.cu but {value} in Python (constants {group!r})"
                    )

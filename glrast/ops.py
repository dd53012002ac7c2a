"""The ops layer: every primitive is a torch.library custom op, ``torch.ops.glrast.<name>``.

An `Op` is one custom op with three parts, each written once:

* its implementation: validation that needs the data, then the kernel launches; registered
  for CPU and CUDA tensors (the kernel runtime picks the build by the tensors' device);
* its fake implementation: the outputs' shapes and dtypes from the inputs' shapes, with no
  kernel run, for torch.compile, torch.export and FakeTensor tracing;
* its autograd formula (``setup_context`` and ``backward``, as
  ``torch.library.register_autograd`` takes them). A backward calls the backward ops, so a
  second-order graph exists wherever a backward op has an autograd formula of its own; where
  none exists, `first_order_only` raises, naming the op, instead of returning a gradient
  with no graph.

Calling an `Op` in plain eager mode runs the same implementation under the same autograd
formula (an equivalent ``torch.autograd.Function``) without the dispatcher, whose Python
round trips cost 30-80 µs a call, more than most ops take on small inputs. Everything else
goes through ``torch.ops.glrast.<name>``: tracing by torch.compile or torch.export, torch.func
transforms, an active dispatch or function mode (FakeTensorMode, FlopCounterMode,
``with torch.device(...)``), a tensor subclass among the arguments, and every call while
`dispatch_always` is set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import _C

# Types that need no closer look: plain tensors, and the schemas' other argument types (never a subclass)
_PLAIN = frozenset((torch.Tensor, torch.nn.Parameter, int, bool, float, str, type(None), list))
dispatch_always = False  # route every call through the dispatcher (the tests compare both routes)


def _eager(args: tuple) -> bool:
    """True when calling the implementation directly is what the dispatcher would do."""
    # torch.compile's tracing reads is_dynamo_compiling as True and stops here; non-strict torch.export
    # traces fake tensors under a mode, which the checks below see
    if dispatch_always or torch.compiler.is_dynamo_compiling() or _C._are_functorch_transforms_active():
        return False
    if _C._len_torch_dispatch_stack() or _C._is_torch_function_mode_enabled():
        return False
    for a in args:  # a loop, not a generator: this runs on every call
        if type(a) not in _PLAIN and isinstance(a, torch.Tensor):
            return False
    return True


class Op:
    """One custom op ``glrast::<name>`` with its `schema`; call it like the op itself."""

    def __init__(
        self,
        name: str,
        schema: str,
        impl: Callable,
        fake: Callable,
        setup_context: Callable | None = None,
        backward: Callable | None = None,
    ) -> None:
        self.name = name
        def contiguous_impl(*args):
            # The kernels read raw pointers: what reaches the op from outside (torch.ops.glrast.<name>,
            # a compiled graph) is made contiguous here; the eager path gets contiguous tensors already.
            return _unshared(impl(*(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)))

        op = torch.library.custom_op(f"glrast::{name}", contiguous_impl, mutates_args=(),
                                     device_types=("cpu", "cuda"), schema=schema)  # fmt: skip
        op.register_fake(fake)
        if backward is None:  # a backward op with no derivative of its own
            setup_context, backward = _nothing_to_save, _no_derivative(name)
        op.register_autograd(backward, setup_context=setup_context)

        def forward(ctx, *args):
            output = _unshared(impl(*args))
            setup_context(ctx, args, output)
            return output

        methods = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
        function = type(f"glrast_{name}", (torch.autograd.Function,), methods)
        # autograd.Function.apply's Python wrapper only adds what torch.func transforms need, and
        # those go through the dispatcher (_eager): the C apply under it saves its 5-10 µs a call
        self._apply = super(torch.autograd.Function, function).apply
        self._impl = impl
        self.overload = getattr(torch.ops.glrast, name).default

    def __call__(self, *args):
        if not _eager(args):
            return self.overload(*args)
        if _C.is_grad_enabled() and _C._any_requires_grad(*args):
            return self._apply(*args)
        return self._impl(*args)


def _nothing_to_save(ctx, inputs, output) -> None:
    pass


def _no_derivative(name: str) -> Callable:
    def backward(ctx, *grads):
        raise higher_order_error(name)

    return backward


def higher_order_error(op: str, what: str = "") -> RuntimeError:
    """The error for a second derivative that `op` does not have (`what`: with respect to what)."""
    return RuntimeError(
        f"{op}: higher-order gradients{what} are not supported (a backward with create_graph=True reached "
        f"{op}, whose backward has no derivative of its own here); detach what reaches {op} from the tensors you "
        "differentiate twice, or take second derivatives only through interpolate (every input) and texture's tex"
    )


def first_order_only(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise in a backward that runs to build a second-order graph (``create_graph=True``: grad
    mode is on and one of `tensors` requires grad) through `op`, whose backward has no derivative."""
    if _C.is_grad_enabled() and _C._any_requires_grad(*tensors):
        raise higher_order_error(op)


_stand_ins: dict[tuple, torch.Tensor] = {}
_stand_in_ids: set[int] = set()


def absent(like: torch.Tensor) -> torch.Tensor:
    """The stand-in for a gradient an op does not compute (an op cannot return None): an empty
    tensor of `like`'s dtype and device, for implementations (fake ones make their own). It is one
    shared tensor, as allocating a fresh one costs more than some small backwards. Only the eager
    backwards, which drop it, see it shared: an op's outputs leave through the dispatcher or an
    autograd node only after `_unshared`."""
    key = (like.dtype, like.device)
    stand_in = _stand_ins.get(key)
    if stand_in is None:
        stand_in = like.new_empty(0)
        if type(stand_in) is torch.Tensor:  # never a fake or other subclass made under a mode
            _stand_ins[key] = stand_in
            _stand_in_ids.add(id(stand_in))
    return stand_in


def _unshared(output: torch.Tensor | tuple) -> torch.Tensor | tuple:
    """`output` with each shared stand-in (see `absent`) replaced by a fresh one: the outputs of an
    op or an autograd node must not alias one another."""
    if type(output) is tuple:
        for t in output:  # most outputs hold none: look before building a new tuple
            if id(t) in _stand_in_ids:
                return tuple(t.new_empty(0) if id(t) in _stand_in_ids else t for t in output)
    return output

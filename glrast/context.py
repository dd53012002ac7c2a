"""RasterizeGLContext: one OpenGL context (headless EGL) and the GL objects it owns."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import moderngl
import torch

from . import egl
from .pipeline import RasterPipeline

_MODES = ("automatic", "manual")
# Live contexts by handle: the ops (glrast/ops.py) take a context as this int, which an op schema accepts.
_live: weakref.WeakValueDictionary[int, RasterizeGLContext] = weakref.WeakValueDictionary()
_handles = itertools.count(1)


def resolve_device(device: Any, fn: str = "RasterizeGLContext") -> torch.device:
    """The torch device a context serves. None: the current CUDA device if CUDA is available, else
    the CPU; an int is a CUDA index. Anything else that is not a CPU or an available CUDA device
    raises, naming `fn`."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    expected = "None, a torch.device, a device string such as 'cpu' or 'cuda:0', or a CUDA index >= 0"
    if isinstance(device, bool) or not isinstance(device, (int, str, torch.device)):
        raise TypeError(f"{fn}: device must be {expected}, got {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"{fn}: device must be {expected}, got the negative index {device}")
        dev = torch.device("cuda", device)
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"{fn}: device must be {expected}, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{fn}: device must be a CPU or CUDA device, got {dev}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) is a CPU-only build"
                if torch.version.cuda is None
                else "torch finds no CUDA device (driver or CUDA_VISIBLE_DEVICES)"
            )
            raise RuntimeError(f"{fn}: device {str(dev)!r} needs CUDA, but {why}; use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{fn}: device {dev} does not exist; torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def _egl_device(device: torch.device) -> int | None:
    """The EGL device for `device`: the GPU matching a CUDA device (see egl.py),
    None for the CPU (glcontext's default device, Mesa's software renderer)."""
    if device.type != "cuda":
        return None
    return egl.egl_device_for_cuda(device.index)


_SPAWN_HINT = (
    "Start the processes that render with the 'spawn' start method "
    "(multiprocessing.set_start_method('spawn'), or DataLoader(..., multiprocessing_context='spawn'))."
)


def _create_egl_context(device_index: int | None) -> moderngl.Context:
    """A headless context on EGL device `device_index` (None: glcontext's default)."""
    kwargs: dict[str, Any] = {"standalone": True, "backend": "egl", "require": 430}
    if device_index is not None:
        kwargs["device_index"] = device_index
    index = int(os.environ.get(egl.DEVICE_INDEX_ENV) or device_index or 0)  # the device glcontext opens
    egl.load_own_llvm_libraries()  # before Mesa's GL driver, see egl.py
    if egl.inherited_display(index):
        return _fork_safe_context(index, cuda=device_index is not None)
    try:
        gl = moderngl.create_context(**kwargs)
    except Exception as e:  # glcontext raises bare Exceptions with the EGL call that failed
        raise RuntimeError(
            f"RasterizeGLContext: could not create a headless OpenGL 4.3+ context through EGL ({e}). "
            "glrast needs libEGL.so.1 (glvnd) and a vendor driver: on Debian/Ubuntu "
            "`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` gives Mesa's software renderer; "
            "on NVIDIA machines the driver's libEGL_nvidia.so and its glvnd vendor file "
            "(10_nvidia.json) must be installed. Run `glrast doctor` for details."
        ) from e
    egl.opened(index)
    return gl


def _fork_safe_context(index: int, cuda: bool) -> moderngl.Context:
    """In a forked child whose parent had opened EGL device `index` (its display cannot
    render here, see egl.py): a context on Mesa's fork-safe software display."""
    if cuda:
        raise RuntimeError(
            f"RasterizeGLContext: this process was forked from one that had already opened EGL device {index}, "
            f"whose driver state does not survive fork(); a CUDA device's GL cannot be reopened here. {_SPAWN_HINT}"
        )
    try:
        return moderngl.create_context(require=430, standalone=True, context=egl.ForkSafeContext())
    except egl.EglUnavailableError as e:
        raise RuntimeError(
            f"RasterizeGLContext: this process was forked after its parent opened EGL device {index}, whose "
            f"driver threads do not exist here, and no fork-safe context can be made ({e}). {_SPAWN_HINT}"
        ) from None


def _helper_context() -> RasterizeGLContext:
    """A helper thread's context for sliced CPU draws (see pipeline.py)."""
    return RasterizeGLContext(output_db=False, device="cpu")


class RasterizeGLContext:
    """An OpenGL context for `rasterize`, bound to the thread that creates it.

    output_db: also produce rast_db (screen-space derivatives of u, v).
    mode: 'automatic' makes the context current around every call; 'manual'
        leaves it to the caller (`set_context()` / `release_context()`).
    device: torch device (or CUDA index) whose tensors this context serves;
        None: the current CUDA device if CUDA is available, else the CPU.
    gl_context: an existing ModernGL context to render with (e.g. a viewer
        window's) instead of creating a headless EGL one; the caller keeps
        ownership of it.
    """

    def __init__(
        self,
        output_db: bool = True,
        mode: str = "automatic",
        device: Any = None,
        gl_context: moderngl.Context | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"RasterizeGLContext: mode must be one of {_MODES}, got {mode!r}")
        if gl_context is not None and not isinstance(gl_context, moderngl.Context):
            raise TypeError(
                f"RasterizeGLContext: gl_context must be a moderngl.Context (or None for a headless EGL "
                f"context), got {type(gl_context).__name__}"
            )
        self.output_db = bool(output_db)
        self.mode = mode
        self.device = resolve_device(device)
        self._thread = threading.get_ident()
        self._pid = os.getpid()
        self._owns_gl = gl_context is None
        self.egl_device = _egl_device(self.device) if gl_context is None else None
        self.gl = gl_context if gl_context is not None else _create_egl_context(self.egl_device)
        # The EGLContext handle, to check that making it current worked (glcontext does not check).
        self._egl_handle = self._current_egl_handle() if gl_context is None else None
        self._pipeline: RasterPipeline | None = None
        self.active_peeler: Any = None
        limits = self.gl.info
        self.max_resolution = int(
            min(limits["GL_MAX_TEXTURE_SIZE"], limits["GL_MAX_RENDERBUFFER_SIZE"], *limits["GL_MAX_VIEWPORT_DIMS"])
        )
        self.max_storage_bytes = int(limits["GL_MAX_SHADER_STORAGE_BLOCK_SIZE"])
        self.handle = next(_handles)  # how the ops name this context (`from_handle`)
        _live[self.handle] = self

    @staticmethod
    def from_handle(handle: int) -> RasterizeGLContext:
        """The live context whose `handle` this is."""
        glctx = _live.get(handle)
        if glctx is None:
            raise RuntimeError(f"RasterizeGLContext: no live context has handle {handle} (it was garbage-collected)")
        return glctx

    # -- information ---------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """GL vendor, renderer and version, the torch device served and, for CUDA,
        the EGL device index it was matched to (None: the default EGL device or a
        wrapped ModernGL context)."""
        gl = self.gl.info
        return {
            "vendor": gl["GL_VENDOR"],
            "renderer": gl["GL_RENDERER"],
            "version": gl["GL_VERSION"],
            "device": str(self.device),
            "egl_device": self.egl_device,
            "max_resolution": self.max_resolution,
        }

    # -- making current ------------------------------------------------------
    def _check_thread(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"RasterizeGLContext: this context belongs to process {self._pid}; this process ({os.getpid()}) "
                "inherited it through fork(), and an OpenGL context cannot be used across fork(). Create a new "
                "RasterizeGLContext in this process (a forked child can create its own)."
            )
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "RasterizeGLContext: this context was created on another thread; an OpenGL context "
                "is bound to its thread. Create one context per thread."
            )

    @staticmethod
    def _current_egl_handle() -> int:
        from .egl import current_context

        handle = current_context().context
        if handle is None:
            raise RuntimeError(
                "RasterizeGLContext: the headless EGL context could not be made current on this thread: another "
                "API's context (e.g. a GLX window's) is current here, and glvnd allows one current context per "
                "thread. Release it first (glfw.make_context_current(None)); glrast.Viewer does this itself."
            )
        return handle

    def _check_current(self, just_made_current: bool) -> None:
        """Raise unless this context is current (glcontext does not check that making it current worked)."""
        if self._egl_handle is None:
            return
        if not just_made_current:
            from .egl import current_context

            if current_context().context != self._egl_handle:
                raise RuntimeError(
                    "RasterizeGLContext: this context is not current on this thread (mode='manual': call "
                    "set_context() first)"
                )
        elif self._current_egl_handle() != self._egl_handle:
            raise RuntimeError("RasterizeGLContext: another EGL context is current after making this one current")

    def set_context(self) -> None:
        """Make the GL context current (mode='manual')."""
        self._check_thread()
        self.gl.__enter__()
        self._check_current(just_made_current=True)

    def release_context(self) -> None:
        """Release the GL context (mode='manual')."""
        self._check_thread()
        self.gl.__exit__(None, None, None)

    @contextlib.contextmanager
    def activate(self) -> Iterator[moderngl.Context]:
        """Used by the ops: checks the thread, makes the context current if automatic."""
        if self.gl is None:
            raise RuntimeError("RasterizeGLContext: the context has been released")
        self._check_thread()
        if self.mode == "automatic":
            # glcontext's exit leaves no context current; put back whatever was (e.g. a
            # manual-mode context of the caller's)
            from .egl import current_context, make_current

            saved = current_context() if self._egl_handle is not None else None
            try:
                with self.gl:
                    self._check_current(just_made_current=True)
                    yield self.gl
            finally:
                if saved is not None and saved.context is not None:
                    make_current(saved)
        else:
            self._check_current(just_made_current=False)
            yield self.gl

    @property
    def pipeline(self) -> RasterPipeline:
        """The visibility pass's GL objects (programs, buffers, targets), created on
        first use; use it inside `activate()`."""
        if self._pipeline is None:
            # Helper contexts for large CPU draws are headless EGL ones: only a headless context's
            # draws are sliced across them (a wrapped context's GL may differ from EGL's).
            helpers = self._owns_gl and self.device.type == "cpu"
            self._pipeline = RasterPipeline(self.gl, helper_context=_helper_context if helpers else None)
        return self._pipeline

    # -- lifetime ------------------------------------------------------------
    def release(self) -> None:
        """Free every GL object (idempotent). Must run on the creating thread. In a forked
        child, a context inherited from the parent is only forgotten (no GL call)."""
        if self.gl is None:
            return
        if os.getpid() != self._pid:
            self._pipeline = self.active_peeler = self.gl = None
            return
        self._check_thread()
        if self._pipeline is not None:
            with self.gl:
                self._pipeline.release()
            self._pipeline = None
        if self._owns_gl:
            self.gl.release()
        self.gl = None

    def __reduce__(self) -> Any:
        raise TypeError(
            "RasterizeGLContext cannot be pickled: an OpenGL context belongs to the process (and thread) that "
            "created it. Create one RasterizeGLContext per process, in the process that renders (e.g. in the "
            "worker function, or lazily in a Dataset's __getitem__)."
        )

    def __enter__(self) -> RasterizeGLContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # Never call GL from a foreign thread (e.g. the garbage collector's).
        if getattr(self, "gl", None) is not None and threading.get_ident() == self._thread:
            try:
                self.release()
            except Exception:
                pass


class RasterizeCudaContext(RasterizeGLContext):
    """nvdiffrast compatibility: a RasterizeGLContext on `device` (nvdiffrast 0.4 scripts create one;
    here it is the same GL visibility pass, on CUDA tensors or the CPU)."""

    def __init__(self, device: Any = None) -> None:
        super().__init__(device=resolve_device(device, "RasterizeCudaContext"))

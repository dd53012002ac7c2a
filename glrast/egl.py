"""EGL devices: enumeration through libEGL (ctypes) and matching to CUDA devices.

glcontext's EGL backend (what ModernGL uses for headless contexts) takes a
`device_index` and opens `devices[device_index]` of `eglQueryDevicesEXT`, called
through the same libEGL (glvnd's libEGL.so.1, or $GLCONTEXT_LINUX_LIBEGL). glvnd
builds that device list once per process, vendor by vendor, so enumerating here,
in the same process and through the same library, gives indices that name the
same devices as glcontext's `device_index`.

Which EGL device is a given torch CUDA device? NVIDIA's EGL driver implements
EGL_NV_device_cuda: `eglQueryDeviceAttribEXT(dev, EGL_CUDA_DEVICE_NV)` returns the
CUdevice of the EGL device. A CUdevice is an ordinal in this process's CUDA driver
enumeration (what `cuDeviceGet(&dev, ordinal)` hands out), which already applies
CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER; the CUDA runtime (and so torch) numbers
devices the same way, so torch's `cuda:k` has CUdevice k. GPUs hidden by
CUDA_VISIBLE_DEVICES still appear as EGL devices but report no CUDA ordinal.
Because that reading of the extension is the one assumption here, the match is
cross-checked by PCI bus id where both sides know it (the EGL device's DRM node,
via sysfs, against `cuDeviceGetPCIBusId`): the PCI id is the physical identity and
wins, and a disagreement between the two is logged.

Nothing falls back to device 0: no match raises with the list of devices found.

Forked children. An EGL display lives in its process: Mesa initialises one per
(platform, device) and keeps it, and llvmpipe's rasterizer threads belong to that
display. A child made by fork() inherits the initialised display but not its threads,
so rendering on it waits for them forever. `inherited_display` tells whether a
display was initialised before this process was forked; `ForkSafeContext` is then a
context on Mesa's other headless platform (surfaceless), initialised in the child
without rasterizer threads (LP_NUM_THREADS=0), which its own forked children can
share safely.

Current contexts: glvnd lets a thread have one current context across EGL and GLX
together. A GLX context (a desktop window's) cannot be made current while an EGL
context is (the X server answers BadAccess, which ends the process), and an EGL
context cannot be made current while a GLX one is (eglMakeCurrent fails with
EGL_BAD_ACCESS). `release_current` / `make_current` let the viewer step its window's
context in between and put the EGL state back afterwards.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import threading
from ctypes.util import find_library
from dataclasses import dataclass
from pathlib import Path

from . import cuda_driver
from ._log import logger

EGL_EXTENSIONS = 0x3055
EGL_VERSION = 0x3054
EGL_DRM_DEVICE_FILE_EXT = 0x3233
EGL_DRM_RENDER_NODE_FILE_EXT = 0x3377
EGL_CUDA_DEVICE_NV = 0x323A
EGL_SUCCESS = 0x3000
EGL_BAD_CONTEXT = 0x3006
EGL_NONE = 0x3038
EGL_OPENGL_API = 0x30A2
EGL_CONTEXT_MAJOR_VERSION = 0x3098
EGL_CONTEXT_MINOR_VERSION = 0x30FB
EGL_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD
EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT = 0x1
EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_DRAW = 0x3059
EGL_READ = 0x305A
SOFTWARE_EXTENSION = "EGL_MESA_device_software"
# glcontext reads these environment variables and lets them override its arguments.
LIBEGL_ENV = "GLCONTEXT_LINUX_LIBEGL"
DEVICE_INDEX_ENV = "GLCONTEXT_DEVICE_INDEX"

_EGLDevice = ctypes.c_void_p
_EGLAttrib = ctypes.c_ssize_t  # intptr_t


class EglUnavailableError(RuntimeError):
    """libEGL cannot be loaded or cannot enumerate devices."""


@dataclass(frozen=True)
class EglDevice:
    """One entry of eglQueryDevicesEXT's list."""

    index: int  # position in the list = glcontext's device_index
    extensions: tuple[str, ...]
    cuda_ordinal: int | None  # EGL_CUDA_DEVICE_NV; None where the device has no CUDA identity
    drm_file: str | None  # /dev/dri/cardN or renderDN, where the driver reports one
    pci_bus_id: str | None  # "0000:65:00.0", from the DRM node's sysfs entry

    @property
    def software(self) -> bool:
        return SOFTWARE_EXTENSION in self.extensions

    def describe(self) -> str:
        kind = "software (Mesa llvmpipe)" if self.software else (self.drm_file or "no DRM node")
        cuda = "none" if self.cuda_ordinal is None else self.cuda_ordinal
        return f"EGL device {self.index}: CUDA ordinal {cuda}, PCI {self.pci_bus_id or 'unknown'}, {kind}"


def library_name() -> str:
    """The libEGL that glcontext loads (same lookup, same override)."""
    return os.environ.get(LIBEGL_ENV) or find_library("EGL") or "libEGL.so.1"


class _Egl:
    """The few EGL entry points glrast needs, bound with ctypes."""

    def __init__(self, name: str):
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise EglUnavailableError(
                f"cannot load {name} ({e}): install glvnd's libEGL (Debian/Ubuntu: apt-get install libegl1) "
                "and an EGL vendor driver (Mesa: libegl-mesa0; NVIDIA: the driver's libEGL_nvidia)"
            ) from None
        self.lib = lib
        lib.eglGetProcAddress.restype = ctypes.c_void_p
        lib.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        lib.eglQueryString.restype = ctypes.c_char_p
        lib.eglQueryString.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.eglGetError.restype = ctypes.c_int32
        lib.eglGetError.argtypes = []
        count_p = ctypes.POINTER(ctypes.c_int32)
        self.query_devices = self._proc(
            "eglQueryDevicesEXT", ctypes.c_uint32, ctypes.c_int32, ctypes.POINTER(_EGLDevice), count_p
        )
        self.query_device_string = self._proc("eglQueryDeviceStringEXT", ctypes.c_char_p, _EGLDevice, ctypes.c_int32)
        self.query_device_attrib = self._proc(
            "eglQueryDeviceAttribEXT", ctypes.c_uint32, _EGLDevice, ctypes.c_int32, ctypes.POINTER(_EGLAttrib)
        )

    def _proc(self, name: str, restype, *argtypes):
        address = self.lib.eglGetProcAddress(name.encode())
        if not address:
            raise EglUnavailableError(
                f"{name} is missing from {library_name()}: the EGL implementation lacks device enumeration "
                "(EGL_EXT_device_enumeration / EGL_EXT_device_query); use glvnd's libEGL.so.1"
            )
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    @functools.cached_property
    def context_calls(self) -> _ContextCalls:
        """The entry points that create contexts (bound on first use: enumeration needs none)."""
        return _ContextCalls(self)

    def error(self) -> str:
        return f"EGL error 0x{self.lib.eglGetError():x}"

    def string(self, device: int | None, name: int) -> str | None:
        value = self.lib.eglQueryString(device, name) if device is None else self.query_device_string(device, name)
        self.lib.eglGetError()  # a NULL answer leaves an error flag; clear it
        return None if value is None else value.decode(errors="replace")

    def display_string(self, display: int, name: int) -> str | None:
        value = self.lib.eglQueryString(display, name)
        self.lib.eglGetError()
        return None if value is None else value.decode(errors="replace")

    def attrib(self, device: int, name: int) -> int | None:
        value = _EGLAttrib()
        ok = self.query_device_attrib(device, name, ctypes.byref(value))
        self.lib.eglGetError()
        return int(value.value) if ok else None


class _ContextCalls:
    """eglGetPlatformDisplayEXT and the core calls that initialise displays and make contexts."""

    def __init__(self, egl: _Egl):
        vp = ctypes.c_void_p

        def bind(name: str, restype, *argtypes):
            function = getattr(egl.lib, name)
            function.restype, function.argtypes = restype, list(argtypes)
            return function

        self.get_platform_display = egl._proc("eglGetPlatformDisplayEXT", vp, ctypes.c_uint32, vp, vp)
        self.initialize = bind("eglInitialize", ctypes.c_uint32, vp, vp, vp)
        self.bind_api = bind("eglBindAPI", ctypes.c_uint32, ctypes.c_uint32)
        self.create_context = bind("eglCreateContext", vp, vp, vp, vp, ctypes.POINTER(ctypes.c_int32))
        self.destroy_context = bind("eglDestroyContext", ctypes.c_uint32, vp, vp)
        self.make_current = bind("eglMakeCurrent", ctypes.c_uint32, vp, vp, vp, vp)
        self.get_current_context = bind("eglGetCurrentContext", vp)


@functools.cache
def _egl() -> _Egl:
    return _Egl(library_name())


@dataclass(frozen=True)
class CurrentContext:
    """The EGL state current on a thread (eglGetCurrent*); None stands for EGL_NO_*."""

    display: int | None
    draw: int | None
    read: int | None
    context: int | None


@functools.cache
def _current_api() -> ctypes.CDLL:
    """libEGL with the current-context entry points typed (core EGL 1.4: no extension needed)."""
    lib = _egl().lib
    for name in ("eglGetCurrentContext", "eglGetCurrentDisplay"):
        getattr(lib, name).restype = ctypes.c_void_p
        getattr(lib, name).argtypes = []
    lib.eglGetCurrentSurface.restype = ctypes.c_void_p
    lib.eglGetCurrentSurface.argtypes = [ctypes.c_int32]
    lib.eglMakeCurrent.restype = ctypes.c_uint32
    lib.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
    return lib


def current_context() -> CurrentContext:
    """The EGL display, surfaces and context current on this thread."""
    lib = _current_api()
    return CurrentContext(
        lib.eglGetCurrentDisplay(),
        lib.eglGetCurrentSurface(EGL_DRAW),
        lib.eglGetCurrentSurface(EGL_READ),
        lib.eglGetCurrentContext(),
    )


def make_current(state: CurrentContext) -> None:
    """Make `state` (from `current_context`) current again; RuntimeError naming the EGL error if EGL refuses.

    A context that was destroyed while current (as releasing a ModernGL context does) stays
    current only until another one is made current, so it cannot be put back: then no
    context is left current, which is what its owner asked for."""
    lib = _current_api()
    if not lib.eglMakeCurrent(state.display, state.draw, state.read, state.context):
        error = lib.eglGetError()
        if error == EGL_BAD_CONTEXT:
            lib.eglMakeCurrent(state.display, None, None, None)
            return
        raise RuntimeError(
            f"eglMakeCurrent could not restore the EGL context {state.context:#x} (EGL error "
            f"0x{error:x}); is another API's (GLX) context current on this thread?"
        )


def release_current() -> CurrentContext | None:
    """Release the EGL context current on this thread, if any, and return it (for `make_current`)."""
    state = current_context()
    if state.context is None:
        return None
    if not _current_api().eglMakeCurrent(state.display, None, None, None):
        raise RuntimeError(f"eglMakeCurrent could not release the current EGL context (EGL error "
                           f"0x{_current_api().eglGetError():x})")  # fmt: skip
    return state


def client_extensions() -> list[str]:
    """EGL client extensions (eglQueryString(EGL_NO_DISPLAY, EGL_EXTENSIONS))."""
    return (_egl().string(None, EGL_EXTENSIONS) or "").split()


def client_version() -> str | None:
    """EGL client version string, e.g. '1.5 libglvnd'."""
    return _egl().string(None, EGL_VERSION)


def pci_bus_id_of_drm(drm_file: str | None, sysfs: Path = Path("/sys/class/drm")) -> str | None:
    """The PCI address ("dddd:bb:dd.f") of the GPU behind a DRM node, from sysfs."""
    if not drm_file:
        return None
    target = os.path.realpath(sysfs / Path(drm_file).name / "device")
    name = Path(target).name
    return name if name.count(":") == 2 and "." in name else None


def normalize_pci(bus_id: str | None) -> tuple[int, int, int] | None:
    """(domain, bus, device) of a PCI address in CUDA's or sysfs' spelling (case and
    domain width differ: "00000000:3B:00.0" vs "0000:3b:00.0"); the function is ignored."""
    if not bus_id:
        return None
    try:
        domain, bus, rest = bus_id.strip().split(":")
        return int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
    except ValueError:
        return None


def _device_handles() -> list[int]:
    egl = _egl()
    count = ctypes.c_int32()
    if not egl.query_devices(0, None, ctypes.byref(count)):
        raise EglUnavailableError(f"eglQueryDevicesEXT failed ({egl.error()})")
    handles = (_EGLDevice * max(count.value, 1))()
    if not egl.query_devices(count.value, handles, ctypes.byref(count)):
        raise EglUnavailableError(f"eglQueryDevicesEXT failed ({egl.error()})")
    return [handles[index] for index in range(count.value)]


def query_devices() -> list[EglDevice]:
    """Every EGL device, in eglQueryDevicesEXT's order (glcontext's device_index)."""
    egl = _egl()
    devices = []
    for index, handle in enumerate(_device_handles()):
        extensions = tuple((egl.string(handle, EGL_EXTENSIONS) or "").split())
        drm_file = None
        if "EGL_EXT_device_drm" in extensions:
            drm_file = egl.string(handle, EGL_DRM_DEVICE_FILE_EXT)
        if drm_file is None and "EGL_EXT_device_drm_render_node" in extensions:
            drm_file = egl.string(handle, EGL_DRM_RENDER_NODE_FILE_EXT)
        cuda = egl.attrib(handle, EGL_CUDA_DEVICE_NV) if "EGL_NV_device_cuda" in extensions else None
        devices.append(EglDevice(index, extensions, cuda, drm_file, pci_bus_id_of_drm(drm_file)))
    return devices


def _no_match(devices: list[EglDevice], cuda_index: int, pci_bus_id: str | None, why: str) -> RuntimeError:
    found = "\n  ".join(d.describe() for d in devices) or "(no EGL devices at all)"
    return RuntimeError(
        f"no EGL device for CUDA device {cuda_index} (PCI {pci_bus_id or 'unknown'}): {why}.\nEGL devices found:\n  "
        f"{found}\nglrast renders CUDA tensors with NVIDIA's EGL driver on the same GPU. It needs libEGL_nvidia.so.0 "
        "and its glvnd vendor file (/usr/share/glvnd/egl_vendor.d/10_nvidia.json); in a container, give the "
        "NVIDIA runtime the graphics capability (NVIDIA_DRIVER_CAPABILITIES=all or compute,utility,graphics). "
        "Run `glrast doctor` for details."
    )


def select_device(
    devices: list[EglDevice],
    cuda_index: int,
    pci_bus_id: str | None = None,
    env_index: str | None = None,
) -> int:
    """The index of the EGL device that is CUDA device `cuda_index`.

    devices: the EGL device list (`query_devices()`).
    cuda_index: torch's CUDA ordinal (= the CUdevice ordinal in this process).
    pci_bus_id: that CUDA device's PCI address, if known (cross-check, see module doc).
    env_index: the value of $GLCONTEXT_DEVICE_INDEX, which glcontext would let
        override the index chosen here; it must agree with the match.
    Raises RuntimeError, listing the devices found, when there is no unambiguous match.
    """
    cuda_capable = [d for d in devices if d.cuda_ordinal is not None]
    wanted_pci = normalize_pci(pci_bus_id)
    by_pci = [d for d in cuda_capable if wanted_pci is not None and normalize_pci(d.pci_bus_id) == wanted_pci]
    by_ordinal = [d for d in cuda_capable if d.cuda_ordinal == cuda_index]
    if len(by_pci) > 1 or len(by_ordinal) > 1:
        clash = by_pci if len(by_pci) > 1 else by_ordinal
        raise _no_match(devices, cuda_index, pci_bus_id, f"several EGL devices claim it ({[d.index for d in clash]})")
    if by_pci:
        match = by_pci[0]
        if match.cuda_ordinal != cuda_index:
            logger.warning(
                "EGL device %d has PCI address %s like CUDA device %d but reports CUDA ordinal %s; "
                "matched by PCI address",
                match.index,
                pci_bus_id,
                cuda_index,
                match.cuda_ordinal,
            )
    elif by_ordinal:
        match = by_ordinal[0]
        if wanted_pci is not None and normalize_pci(match.pci_bus_id) not in (None, wanted_pci):
            raise _no_match(
                devices,
                cuda_index,
                pci_bus_id,
                f"EGL device {match.index} reports CUDA ordinal {cuda_index} but sits at PCI {match.pci_bus_id}",
            )
    else:
        why = (
            "no EGL device reports a CUDA ordinal (NVIDIA's EGL driver is not loaded)"
            if not cuda_capable
            else f"no EGL device reports CUDA ordinal {cuda_index}"
        )
        raise _no_match(devices, cuda_index, pci_bus_id, why)
    if env_index not in (None, "") and env_index.strip() != str(match.index):
        raise RuntimeError(
            f"${DEVICE_INDEX_ENV}={env_index} would make glcontext open EGL device {env_index}, but CUDA device "
            f"{cuda_index} is EGL device {match.index}; unset {DEVICE_INDEX_ENV} (glrast picks the device itself)"
        )
    return match.index


def egl_device_for_cuda(cuda_index: int) -> int:
    """glcontext's `device_index` of the EGL device that is torch's `cuda:<cuda_index>`."""
    try:
        devices = query_devices()
    except EglUnavailableError as e:
        raise RuntimeError(f"cannot enumerate EGL devices to find CUDA device {cuda_index}: {e}") from None
    return select_device(devices, cuda_index, cuda_driver.pci_bus_id(cuda_index), os.environ.get(DEVICE_INDEX_ENV))


# ---------------------------------------------------------------------------
# Libraries with an LLVM of their own

# Python packages whose extension links its own LLVM and exports its symbols. Mesa loads
# its GL driver with RTLD_GLOBAL, and with it the driver's libLLVM (another version): a
# library loaded after that binds its LLVM calls to Mesa's and crashes in its static
# constructors (triton: SIGSEGV in `import triton`, which torch's CUDA builds do from
# torch._dynamo, e.g. on the first optimizer step). Loaded before, with RTLD_LOCAL, it
# binds to its own LLVM, and the later import finds it loaded.
OWN_LLVM_LIBRARIES = {"triton": ("_C", "libtriton.so")}


@functools.cache
def load_own_llvm_libraries() -> list[str]:
    """Load the installed OWN_LLVM_LIBRARIES (without importing their packages); call
    before the first GL context of the process. Returns the paths loaded."""
    loaded = []
    for package, parts in OWN_LLVM_LIBRARIES.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            path = Path(root, *parts)
            if path.is_file():
                try:
                    ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
                    loaded.append(str(path))
                except OSError as e:  # its own import will say what is wrong
                    logger.info("could not preload %s: %s", path, e)
                break
    return loaded


# ---------------------------------------------------------------------------
# Forked children (see the module docstring)

_fork_lock = threading.Lock()
_forked = False  # this process was forked from one that had imported glrast
_opened_here: set[int] = set()  # device indices this process initialised (forgotten by a forked child)
_threadless: set[int] = set()  # displays initialised without rasterizer threads (safe in forked children)


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    _opened_here.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def opened(device_index: int) -> None:
    """Record that this process initialised the display of EGL device `device_index`."""
    _opened_here.add(device_index)


def _initialized(display: int) -> bool:
    """eglQueryString answers only for an initialised display."""
    return _egl().display_string(display, EGL_VERSION) is not None


def inherited_display(device_index: int) -> bool:
    """True when the display of EGL device `device_index` was initialised before this
    process was forked (by glrast or anyone else) and not by this process since: its
    driver's threads are the parent's and do not exist here."""
    if not _forked or device_index in _opened_here:
        return False
    try:
        handles = _device_handles()
    except EglUnavailableError:
        return False  # glcontext reports the missing EGL
    if not 0 <= device_index < len(handles):
        return False  # and the bad index
    display = _egl().context_calls.get_platform_display(EGL_PLATFORM_DEVICE_EXT, handles[device_index], None)
    return bool(display) and _initialized(display)


def _fork_safe_display() -> int:
    """Mesa's surfaceless display, initialised here without rasterizer threads (and with
    Mesa's software renderer) when no ancestor did so; an ancestor's such display is
    reused: it has no threads to lose."""
    egl = _egl()
    display = egl.context_calls.get_platform_display(EGL_PLATFORM_SURFACELESS_MESA, None, None)
    if not display:
        raise EglUnavailableError(f"Mesa's surfaceless EGL platform is not available ({egl.error()})")
    with _fork_lock:
        if display in _threadless:
            return display
        if _initialized(display):
            raise EglUnavailableError("Mesa's surfaceless EGL display was initialised before this process was forked")
        # Mesa reads both when it creates the display's driver screen, in eglInitialize.
        saved = {name: os.environ.get(name) for name in ("LP_NUM_THREADS", "LIBGL_ALWAYS_SOFTWARE")}
        os.environ.update(LP_NUM_THREADS="0", LIBGL_ALWAYS_SOFTWARE="1")
        try:
            ok = egl.context_calls.initialize(display, None, None)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        if not ok:
            raise EglUnavailableError(f"eglInitialize of Mesa's surfaceless display failed ({egl.error()})")
        _threadless.add(display)
        return display


class ForkSafeContext:
    """An OpenGL 4.3 core context on `_fork_safe_display()`, in the form ModernGL takes
    for an external context (`moderngl.create_context(context=...)`): it loads GL entry
    points and makes itself current. No surface: glrast renders into framebuffers."""

    def __init__(self) -> None:
        egl = _egl()
        self.display = _fork_safe_display()
        if not egl.context_calls.bind_api(EGL_OPENGL_API):
            raise EglUnavailableError(f"eglBindAPI(EGL_OPENGL_API) failed ({egl.error()})")
        attribs = (ctypes.c_int32 * 7)(
            EGL_CONTEXT_MAJOR_VERSION,
            4,
            EGL_CONTEXT_MINOR_VERSION,
            3,
            EGL_CONTEXT_OPENGL_PROFILE_MASK,
            EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
            EGL_NONE,
        )
        # No config (EGL_KHR_no_config_context): nothing is ever drawn to a surface.
        self.context = egl.context_calls.create_context(self.display, None, None, attribs)
        if not self.context:
            raise EglUnavailableError(f"eglCreateContext on Mesa's surfaceless display failed ({egl.error()})")
        self.__enter__()

    def load_opengl_function(self, name: str) -> int:
        return _egl().lib.eglGetProcAddress(name.encode()) or 0

    def __enter__(self) -> None:
        _egl().context_calls.make_current(self.display, None, None, self.context)

    def __exit__(self, *exc: object) -> None:
        _egl().context_calls.make_current(self.display, None, None, None)

    def release(self) -> None:
        egl = _egl()
        if self.context:
            if egl.context_calls.get_current_context() == self.context:
                self.__exit__()
            egl.context_calls.destroy_context(self.display, self.context)
            self.context = None

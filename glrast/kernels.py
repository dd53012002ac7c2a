"""Kernel runtime: one source in csrc/, two compilers.

``module(name, device)`` returns the compiled ``csrc/<name>.cu`` for a torch
device: built with NVRTC (cuda-python) into a cubin and launched through the
CUDA driver API on torch's current stream for CUDA devices, or built with the
host C++ compiler into a shared library loaded with ctypes for the CPU.
Every kernel takes ``(params, n)`` where params is a `params.Params` mirror of
the C struct (see csrc/common.h); the same structure object serves both
launches, and each mirror is checked against the compiled struct's exported
layout the first time a module launches with it (glrast/params.py). Scatter-adds
of gradients go through `accumulator` (per-thread copies on the CPU, atomics on
CUDA), whose memory is capped by ``$GLRAST_ACCUMULATOR_MB``.

Deterministic gradients: with ``torch.use_deterministic_algorithms(True)``,
`accumulator` makes a fixed-point accumulator instead (csrc/common.h,
Accumulator) and `launch` runs each scatter kernel (GLRAST_SCATTER_KERNEL) twice:
a first pass records each gradient entry's largest term, the second adds every
term as an integer multiple of 2^-40 of that entry's scale into a 128-bit sum,
which no order of addition can change; `collect` converts the sums to float32.
The gradient is then the same bits whatever the thread count, the scheduling
of the host threads or of CUDA's atomics, from run to run. Cost: the scatter
kernel's time twice over (the per-pixel outputs it writes are computed twice,
the same both times), 20 bytes per gradient entry instead of 4 per thread, and
integer atomics on the host. Precision: each term is rounded to 2^-40 of its
entry's largest term (float32 rounds a sum to 2^-24 of its own size at every
addition), so an entry's absolute error is at most k·2^-40 of its largest term
for k terms: below float32's own rounding unless the sum cancels to less than
k·2^-16 of its largest term. NaN terms make the entry NaN, as in the fast path;
infinite terms count as the largest float, to which the gradient saturates
anyway (the fast path gives NaN where +inf and -inf terms meet).

Compiled artifacts are cached on disk in ``$GLRAST_CACHE_DIR`` (default
``~/.cache/glrast``) under a key that hashes the source, every header it
includes, the flags, the compiler's version, glrast's version and the target
architecture. Builds run in a private folder (``.build-*``) and are moved into
place with ``os.replace``, so concurrent processes never block on a lock and an
interrupted build leaves nothing half-written in place. The file's name also
carries a hash of its bytes: an artifact is loaded only after its bytes match
it, so a truncated, emptied or replaced file is rebuilt instead of crashing the
loader. A build folder holds a lock for its lifetime; one whose process has died
is removed by the next build. A cache directory that cannot be written falls
back, with one warning, to a private temporary one for the process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from . import ids
from ._log import logger
from ._resources import resource_dir
from ._version import __version__
from .cuda_driver import check_cuda, cuda_context
from .params import Accumulator, FixedParams, Params, check_constants, check_layout, expect_constants

# Both compilers read the kernels as the same C++ dialect.
CXX_STANDARD = "-std=c++20"
HOST_FLAGS = (CXX_STANDARD, "-O3", "-pthread", "-shared", "-fPIC", "-x", "c++")
NVRTC_FLAGS = (CXX_STANDARD, "-default-device")
ACCUMULATOR_MB_ENV = "GLRAST_ACCUMULATOR_MB"
DEFAULT_ACCUMULATOR_MB = 256
CUDA_BLOCK = 256
CACHE_ENV = "GLRAST_CACHE_DIR"
BUILD_PREFIX = ".build-"
STALE_BUILD_S = 60  # a build folder this old whose lock is free belongs to a dead process

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
_lock = threading.Lock()
_modules: dict[tuple[str, torch.device], object] = {}


# Accumulator modes and the fixed-point format of deterministic mode (csrc/common.h).
ACC_FLOAT, ACC_PEAK, ACC_FIXED = 0, 1, 2
FIXED_BITS = 40
PEAK_NAN = 0xFFFFFFFF

expect_constants("*", "triangle_ids", ids.C_CONSTANTS)
expect_constants(
    "*",
    "accumulation",
    {
        "GLRAST_ACC_FLOAT": ACC_FLOAT,
        "GLRAST_ACC_PEAK": ACC_PEAK,
        "GLRAST_ACC_FIXED": ACC_FIXED,
        "GLRAST_FIXED_BITS": FIXED_BITS,
        "GLRAST_PEAK_NAN": PEAK_NAN,
    },
)


class KernelBuildError(RuntimeError):
    """A kernel failed to compile; the message holds the compiler's log."""


def csrc_dir() -> Path:
    return resource_dir("csrc")


def cache_dir() -> Path:
    """The configured cache: $GLRAST_CACHE_DIR, default ~/.cache/glrast."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "glrast"
    return Path(root)


def kernel_names() -> list[str]:
    """Every kernel source shipped with glrast (csrc/*.cu), without the suffix."""
    return sorted(p.stem for p in csrc_dir().glob("*.cu"))


def _source_closure(name: str) -> list[Path]:
    """The .cu file and every header it includes (transitively), in a stable order."""
    root = csrc_dir()
    seen: list[Path] = []
    pending = [root / f"{name}.cu"]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"kernel source {path} not found")
        seen.append(path)
        pending.extend(root / inc for inc in _INCLUDE_RE.findall(path.read_text()))
    return seen


def _digest(name: str, *parts: str) -> str:
    h = hashlib.sha256()
    for path in _source_closure(name):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for part in (*parts, __version__):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------------------
# The disk cache

_private_caches: dict[str, Path] = {}  # configured cache dir -> this process's replacement


def _content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _cache_roots() -> list[Path]:
    """Where artifacts are looked up: the configured cache, then this process's private one."""
    root = cache_dir()
    private = _private_caches.get(str(root))
    return [root] if private is None else [root, private]


def _cached(subdir: str, stem: str, suffix: str) -> tuple[Path, bytes] | None:
    """A verified artifact `<stem>-<hash of its bytes><suffix>` and its bytes, or None.
    Files whose bytes do not match their name (truncated, emptied, overwritten) are
    removed where the cache is writable, and never loaded."""
    for root in _cache_roots():
        for path in sorted((root / subdir).glob(f"{stem}-*{suffix}")):
            try:
                data = path.read_bytes()
            except OSError:
                continue  # removed meanwhile, or unreadable
            if path.name == f"{stem}-{_content_hash(data)}{suffix}":
                return path, data
            logger.warning("glrast: kernel cache file %s is corrupt (its bytes do not match its name); rebuilding",
                           path)
            with contextlib.suppress(OSError):
                path.unlink()
    return None


def _private_cache(root: Path, error: OSError) -> Path:
    """This process's temporary cache in place of `root` (created once, with a warning)."""
    private = _private_caches.get(str(root))
    if private is None:
        private = Path(tempfile.mkdtemp(prefix="glrast-cache-"))
        atexit.register(_remove_private_cache, private, os.getpid())
        logger.warning(
            "glrast: the kernel cache %s (%s) is not a writable directory (%s); this process builds into %s "
            "instead (set %s to a writable directory to keep the kernels between runs)",
            root, CACHE_ENV, error.strerror or error, private, CACHE_ENV,
        )  # fmt: skip
        _private_caches[str(root)] = private
    return private


def _remove_private_cache(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child, whose parent still uses it
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_builds(root: Path) -> None:
    """Build folders left by processes that died mid-build (SIGKILL, power loss). A live
    build holds an exclusive lock on its folder, which the kernel drops when the process
    ends; a folder is removed only when older than STALE_BUILD_S and its lock is free."""
    now = time.time()
    for folder in root.glob(f"{BUILD_PREFIX}*"):
        try:
            if now - folder.stat().st_mtime < STALE_BUILD_S:
                continue
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # locked: a live build
        finally:
            os.close(fd)


@contextlib.contextmanager
def _build_folder(name: str) -> Iterator[tuple[Path, Path]]:
    """(cache root, a private build folder in it), the folder locked while the build runs
    and removed after. Falls back to this process's private cache when the configured one
    cannot be written."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{name}-", dir=root))
    except OSError as e:
        root = _private_cache(root, e)
        folder = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{name}-", dir=root))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_stale_builds(root)
        yield root, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def _publish(built: Path, root: Path, subdir: str, stem: str, suffix: str) -> Path:
    """Move a finished build into the cache as `<stem>-<hash of its bytes><suffix>`."""
    final = root / subdir / f"{stem}-{_content_hash(built.read_bytes())}{suffix}"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, final)
    return final


# ---------------------------------------------------------------------------
# Host build


@functools.cache
def host_compiler() -> tuple[str, str]:
    """(path, version line) of the C++ compiler: $CXX if set (and then only it),
    else the first of c++, g++, clang++ on PATH."""
    wanted = os.environ.get("CXX")
    candidates = [wanted] if wanted else ["c++", "g++", "clang++"]
    path = next((found for found in map(shutil.which, candidates) if found), None)
    if path is None:
        looked = f"$CXX={wanted!r}" if wanted else "c++, g++, clang++ on PATH"
        raise KernelBuildError(
            f"no C++ compiler found (looked for {looked}); CPU tensors need one to build glrast's kernels: "
            "install g++ 11 or newer (Debian/Ubuntu: apt-get install g++) or point $CXX at a C++20 compiler"
        )
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return path, (out.stdout.splitlines() or ["unknown"])[0]


def _extra_host_flags() -> tuple[str, ...]:
    return tuple(os.environ.get("GLRAST_HOST_CFLAGS", "").split())


def build_host(name: str) -> Path:
    """Compile csrc/<name>.cu with the host compiler; returns the cached .so path."""
    compiler, version = host_compiler()
    flags = HOST_FLAGS + _extra_host_flags()
    stem = f"{name}-{_digest(name, 'host', version, *flags)}"
    hit = _cached("host", stem, ".so")
    if hit is not None:
        return hit[0]
    with _build_folder(name) as (root, folder):
        out = folder / f"{name}.so"
        cmd = [compiler, *flags, str(csrc_dir() / f"{name}.cu"), "-I", str(csrc_dir()), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise KernelBuildError(f"host build of csrc/{name}.cu failed:\n$ {' '.join(cmd)}\n{res.stderr}")
        return _publish(out, root, "host", stem, ".so")


class _Module:
    """What both builds share: the mirror checks and the function table. Each
    build provides `read_global(symbol, size) -> bytes | None`: the first `size`
    bytes of an exported global (up to its NUL for size None), None if absent."""

    name: str

    def __init__(self) -> None:
        self._checked: set[type] = set()
        self._functions: dict[str, object] = {}
        self.scatters: set[str] = set()  # kernels declared with GLRAST_SCATTER_KERNEL, as looked up
        check_constants(self.name, self.read_global)

    def _note_scatter(self, kernel: str) -> None:
        if self.read_global(f"glrast_scatters_{kernel}", 4) is not None:
            self.scatters.add(kernel)

    def _passes(self, kernel: str, params: Params) -> Iterable[None]:
        """The runs of one launch: one, or for a scatter kernel's params with deterministic
        accumulators two (see _deterministic_passes). Until `accumulator` has made a deterministic
        one no params can hold one, and looking costs more than a small launch."""
        return _deterministic_passes(params) if _fixed_sums_made and kernel in self.scatters else _ONE_PASS

    def _check(self, kind: type) -> None:
        """Once per params type: its layout equals the compiled struct's (see params.py)."""
        if not issubclass(kind, Params):
            raise TypeError(f"csrc/{self.name}.cu kernels take a params.Params mirror, got {kind.__name__}")
        check_layout(kind, self.name, self.read_global)
        self._checked.add(kind)


class HostModule(_Module):
    """A host-compiled kernel library; kernels run synchronously on its thread pool
    (csrc/common.h, glrast_host) with as many threads as torch uses (torch.get_num_threads())."""

    def __init__(self, name: str):
        self.name = name
        path = build_host(name)
        try:
            self._lib = ctypes.CDLL(str(path))
        except OSError as e:  # verified bytes that still do not load (e.g. a missing runtime library)
            raise KernelBuildError(f"cannot load the host build of csrc/{name}.cu ({path}): {e}") from None
        super().__init__()

    def read_global(self, symbol: str, size: int | None) -> bytes | None:
        try:
            address = ctypes.addressof(ctypes.c_char.in_dll(self._lib, symbol))
        except ValueError:
            return None
        return ctypes.string_at(address) if size is None else ctypes.string_at(address, size)

    @staticmethod
    def threads() -> int:
        """Threads per launch: torch's intra-op thread count, so that glrast's kernels and
        torch's ops never run more threads than torch was told to (torch.set_num_threads,
        OMP_NUM_THREADS; 1 in DataLoader workers)."""
        return max(1, torch.get_num_threads())

    def accumulation_slots(self, floats: int) -> int:
        """Slots for an Accumulator of `floats` values: one per launch thread while
        their total stays within the accumulator cap, else 1 (shared, atomic)."""
        threads = self.threads()
        return threads if threads * floats * 4 <= accumulator_cap_bytes() else 1

    def _function(self, kernel: str):
        fn = getattr(self._lib, kernel)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int]
        self._note_scatter(kernel)
        self._functions[kernel] = fn
        return fn

    def launch(self, kernel: str, params: Params, n: int) -> None:
        if n <= 0:
            return
        if type(params) not in self._checked:
            self._check(type(params))
        fn = self._functions.get(kernel) or self._function(kernel)
        for _ in self._passes(kernel, params):
            fn(ctypes.addressof(params), n, self.threads())


# ---------------------------------------------------------------------------
# NVRTC build


@functools.cache
def nvrtc_version() -> str:
    try:
        from cuda.bindings import nvrtc

        major, minor = check_cuda(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except (ImportError, RuntimeError) as e:  # the bindings raise RuntimeError when libnvrtc is missing
        raise KernelBuildError(
            "NVRTC is not available: install cuda-python and nvidia-cuda-nvrtc "
            f"(pip install cuda-python nvidia-cuda-nvrtc) ({e})"
        ) from None
    return f"{major}.{minor}"


@functools.cache
def nvrtc_supported_archs() -> tuple[int, ...]:
    """Compute capabilities (major*10+minor) this NVRTC can emit cubins for, ascending."""
    from cuda.bindings import nvrtc

    nvrtc_version()
    return tuple(int(a) for a in check_cuda(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


def select_target(arch: int, supported: tuple[int, ...]) -> tuple[str, int]:
    """Pick ("cubin", arch) when NVRTC knows the GPU's architecture, else
    ("ptx", newest known arch not above it) so the driver JIT-compiles forward.
    `arch` is the compute capability as major*10+minor (e.g. 90)."""
    if arch in supported:
        return "cubin", arch
    older = [a for a in supported if a <= arch]
    if not older:
        raise KernelBuildError(
            f"GPU architecture sm_{arch} is older than every architecture this NVRTC supports "
            f"({', '.join(f'sm_{a}' for a in supported)}); install an NVRTC that supports it"
        )
    return "ptx", max(older)


def build_nvrtc(name: str, arch: int, target: str = "cubin") -> bytes:
    """Compile csrc/<name>.cu with NVRTC for sm_<arch>; returns cubin or PTX bytes
    (target "cubin" or "ptx"; PTX is for compute_<arch> and JIT-compiles forward)."""
    if target not in ("cubin", "ptx"):
        raise ValueError(f"build_nvrtc: target must be 'cubin' or 'ptx', got {target!r}")
    from cuda.bindings import nvrtc

    version = nvrtc_version()
    arch_flag = f"--gpu-architecture={'sm' if target == 'cubin' else 'compute'}_{arch}"
    flags = (*NVRTC_FLAGS, arch_flag, f"-I{csrc_dir()}")
    stem = f"{name}-sm{arch}-{_digest(name, 'nvrtc', version, target, *flags[:-1])}"
    hit = _cached("nvrtc", stem, f".{target}")
    if hit is not None:
        return hit[1]
    source = (csrc_dir() / f"{name}.cu").read_bytes()
    prog = check_cuda(nvrtc.nvrtcCreateProgram(source, f"{name}.cu".encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(flags), [f.encode() for f in flags])
        size = check_cuda(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = b" " * size
        check_cuda(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        if int(err) != 0:
            raise KernelBuildError(
                f"NVRTC {version} build of csrc/{name}.cu for {arch_flag} failed ({err!r}):\n"
                f"{log.decode(errors='replace')}"
            )
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
            if target == "cubin"
            else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        size = check_cuda(get_size(prog), "nvrtc get size")
        image = b" " * size
        check_cuda(get(prog, image), "nvrtc get image")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    with _build_folder(name) as (root, folder):
        out = folder / f"{name}.{target}"
        out.write_bytes(image)
        _publish(out, root, "nvrtc", stem, f".{target}")
    return image


class CudaModule(_Module):
    """An NVRTC-compiled module loaded into torch's primary context on one CUDA device.

    Kernels launch on torch's current stream of that device, so they order with
    torch's own work without synchronization."""

    def __init__(self, name: str, device: torch.device):
        from cuda.bindings import driver

        self.name = name
        self.device = device
        self._driver = driver
        major, minor = torch.cuda.get_device_capability(device)
        self.target, self.arch = select_target(major * 10 + minor, nvrtc_supported_archs())
        image = build_nvrtc(name, self.arch, self.target)
        with cuda_context(device):
            self._module = check_cuda(driver.cuModuleLoadData(image), f"loading csrc/{name}.cu on {device}")
        # Grid-stride kernels: enough blocks to fill the GPU, not one per element.
        self._max_blocks = torch.cuda.get_device_properties(device).multi_processor_count * 32
        super().__init__()

    def read_global(self, symbol: str, size: int | None) -> bytes | None:
        driver = self._driver
        with cuda_context(self.device):
            err, address, nbytes = driver.cuModuleGetGlobal(self._module, symbol.encode())
            if err == driver.CUresult.CUDA_ERROR_NOT_FOUND:
                return None
            check_cuda((err,), f"reading {symbol} of csrc/{self.name}.cu on {self.device}")
            nbytes = nbytes if size is None else min(size, nbytes)
            host = ctypes.create_string_buffer(nbytes)
            check_cuda(
                driver.cuMemcpyDtoH(ctypes.addressof(host), address, nbytes),
                f"reading {symbol} of csrc/{self.name}.cu on {self.device}",
            )
        return host.raw

    def accumulation_slots(self, floats: int) -> int:
        """CUDA kernels accumulate with atomics into a single slot."""
        return 1

    def _function(self, kernel: str):
        fn = check_cuda(self._driver.cuModuleGetFunction(self._module, kernel.encode()), f"{self.name}.{kernel}")
        self._note_scatter(kernel)
        self._functions[kernel] = fn
        return fn

    def launch(self, kernel: str, params: Params, n: int) -> None:
        """Run `kernel(params, n)` over n elements on torch's current stream (asynchronous)."""
        if n <= 0:
            return
        driver = self._driver
        with cuda_context(self.device):
            if type(params) not in self._checked:
                self._check(type(params))
            fn = self._functions.get(kernel) or self._function(kernel)
            count = ctypes.c_longlong(n)
            # kernelParams: the address of an array of pointers to each argument's value;
            # the driver copies the values during the call, so locals suffice.
            args = (ctypes.c_void_p * 2)(ctypes.addressof(params), ctypes.addressof(count))
            blocks = min((n + CUDA_BLOCK - 1) // CUDA_BLOCK, self._max_blocks)
            stream = torch.cuda.current_stream(self.device).cuda_stream
            # The driver copies params at each launch: the second pass of a scatter kernel in
            # deterministic mode sees the accumulators' new mode.
            for _ in self._passes(kernel, params):
                check_cuda(
                    driver.cuLaunchKernel(fn, blocks, 1, 1, CUDA_BLOCK, 1, 1, 0, stream, ctypes.addressof(args), 0),
                    f"launch of {self.name}.{kernel} on {self.device}",
                )


def module(name: str, device: torch.device) -> HostModule | CudaModule:
    """The compiled csrc/<name>.cu for `device` (built and loaded on first use)."""
    key = (name, device)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = CudaModule(name, device) if device.type == "cuda" else HostModule(name)
                _modules[key] = mod
    return mod


def accumulator_cap_bytes() -> int:
    """The most memory one gradient's per-thread copies may take on the host
    (``$GLRAST_ACCUMULATOR_MB``, default 256 MiB); above it the threads share one
    copy and add with atomics, which is slower but needs no extra memory."""
    return _cap_bytes(os.environ.get(ACCUMULATOR_MB_ENV, ""))


@functools.lru_cache(maxsize=8)  # read on every backward: parsing costs more than a small launch
def _cap_bytes(raw: str) -> int:
    try:
        megabytes = float(raw) if raw else DEFAULT_ACCUMULATOR_MB
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ValueError(f"${ACCUMULATOR_MB_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(megabytes * (1 << 20))


def deterministic() -> bool:
    """Whether gradients are scattered deterministically: torch.use_deterministic_algorithms(True)."""
    return torch._C._get_deterministic_algorithms()  # what torch.are_deterministic_algorithms_enabled returns


class FloatSlots:
    """A float gradient and the per-thread spare copies the launch added into (None for none)."""

    __slots__ = ("grad", "spare")

    def __init__(self, grad: torch.Tensor, spare: torch.Tensor | None):
        self.grad, self.spare = grad, spare


class FixedSums:
    """Deterministic mode's accumulator storage: int64 [*shape, 2] 128-bit sums (low, high word)
    and int32 [*shape] the float bits of each entry's largest |term| (csrc/common.h), for the
    kernels of `mod`."""

    __slots__ = ("mod", "sums", "peak")

    def __init__(self, mod: HostModule | CudaModule, sums: torch.Tensor, peak: torch.Tensor):
        self.mod, self.sums, self.peak = mod, sums, peak

    def value(self) -> torch.Tensor:
        """The sums as float32 [*shape]: sum · 2^(e - FIXED_BITS) for the entry's peak < 2^e,
        saturated; NaN where a term was NaN (fixed_to_float in csrc/common.h)."""
        out = torch.empty(self.peak.shape, dtype=torch.float32, device=self.peak.device)
        params = FixedParams(sums=self.sums.data_ptr(), peak=self.peak.data_ptr(), out=out.data_ptr())
        self.mod.launch("fixed_to_float", params, out.numel())
        return out


def accumulator(
    mod: HostModule | CudaModule, shape: Sequence[int], device: torch.device
) -> tuple[FloatSlots | FixedSums, Accumulator]:
    """Zeroed storage on `device` for a float32 gradient of `shape`, and its Accumulator for a
    scatter kernel's params; `collect(storage)` gives the gradient after the launch. In
    deterministic mode (see `deterministic`) a fixed-point accumulator (one, shared), else float
    slots: one per host thread while they fit in the cap (see `accumulator_cap_bytes`), else one."""
    global _fixed_sums_made
    size = math.prod(shape)
    if deterministic():
        _fixed_sums_made = True
        sums = torch.zeros(*shape, 2, dtype=torch.int64, device=device)
        peak = torch.zeros(*shape, dtype=torch.int32, device=device)
        acc = Accumulator(data=sums.data_ptr(), peak=peak.data_ptr(), size=size, count=1, mode=ACC_PEAK)
        return FixedSums(mod, sums, peak), acc
    count = mod.accumulation_slots(size)
    grad = torch.zeros(*shape, dtype=torch.float32, device=device)  # ints: a torch.Size parses 3 µs slower
    if count == 1:
        return FloatSlots(grad, None), Accumulator(data=grad.data_ptr(), size=size, count=1)
    spare = torch.zeros(count - 1, *shape, dtype=torch.float32, device=device)
    return FloatSlots(grad, spare), Accumulator(data=grad.data_ptr(), spare=spare.data_ptr(), size=size, count=count)


def collect(storage: FloatSlots | FixedSums) -> torch.Tensor:
    """The gradient held in an accumulator's storage after its launch, saturated (see `saturate`)."""
    if isinstance(storage, FixedSums):
        return storage.value()
    if storage.spare is not None:
        for copy in storage.spare:  # in place: no third copy of the gradient
            storage.grad.add_(copy)
    return saturate(storage.grad)


@functools.cache
def _accumulator_fields(kind: type[Params]) -> tuple[str, ...]:
    return tuple(name for name, field_type, *_ in kind._fields_ if field_type is Accumulator)


_ONE_PASS = (None,)  # the runs of a launch without deterministic accumulators (_Module._passes)
_fixed_sums_made = False  # set for good by the first deterministic accumulator


def _deterministic_passes(params: Params) -> Iterator[None]:
    """The PEAK pass, then the FIXED pass where params hold fresh deterministic accumulators."""
    fresh = []
    for name in _accumulator_fields(type(params)):
        acc = getattr(params, name)  # a view into params: setting its mode changes params
        if acc.mode == ACC_FIXED:
            raise RuntimeError(
                f"{type(params).__name__}.{name}: a deterministic accumulator serves one scatter launch; "
                "make a new one (kernels.accumulator) for each"
            )
        if acc.mode == ACC_PEAK:
            fresh.append(acc)
    yield
    if fresh:
        for acc in fresh:
            acc.mode = ACC_FIXED
        yield


_FLOAT_MAX = torch.finfo(torch.float32).max


def saturate(grad: torch.Tensor | None) -> torch.Tensor | None:
    """Clamp a scattered gradient to the finite floats, in place: the kernels saturate each
    contribution at the largest float (saturate_f32 in csrc/common.h), but a sum of such contributions
    could still overflow to infinity. NaN stays NaN."""
    return None if grad is None else grad.clamp_(-_FLOAT_MAX, _FLOAT_MAX)

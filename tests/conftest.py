"""Shared fixtures: every numerical test runs once per device (CPU always,
CUDA when present; CUDA cases carry the `gpu` mark and skip without CUDA).
`GPU` is the one definition of that mark: `@gpu_test` for single tests,
`marks=GPU` for parameters."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# tests/beside_triton needs triton, in its own environment: `make test-triton` runs it.
collect_ignore = ["beside_triton"]

import glrast as dr  # noqa: E402
from glrast import kernels  # noqa: E402

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


def gpu_test(fn):
    """Marked `gpu`; skipped without CUDA."""
    for mark in GPU:
        fn = mark(fn)
    return fn


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


_contexts: dict[str, dr.RasterizeGLContext] = {}


def shared_context(device: torch.device) -> dr.RasterizeGLContext:
    """One GL context per device for the whole session (contexts are costly to create)."""
    ctx = _contexts.get(str(device))
    if ctx is None:
        ctx = _contexts[str(device)] = dr.RasterizeGLContext(device=device)
    return ctx


@pytest.fixture
def glctx(device) -> dr.RasterizeGLContext:
    return shared_context(device)


@pytest.fixture
def cpu_glctx() -> dr.RasterizeGLContext:
    """For checks that do not depend on the device (argument validation)."""
    return shared_context(torch.device("cpu"))


@pytest.fixture
def tiny_tree(tmp_path, monkeypatch):
    """csrc/ with one small kernel (tests/tiny_kernel.py) and an empty private cache; returns (csrc, cache)."""
    from tiny_kernel import write_tree

    csrc, cache = write_tree(tmp_path)
    monkeypatch.setattr(kernels, "csrc_dir", lambda: csrc)
    monkeypatch.setenv("GLRAST_CACHE_DIR", str(cache))
    return csrc, cache


@pytest.fixture(scope="session")
def xserver():
    """A private Xvfb server for the window tests (see tests/xserver.py)."""
    from xserver import XServer

    server = XServer()
    yield server
    server.stop()


@pytest.fixture
def xdisplay(xserver, monkeypatch):
    """This process's windows open on the private X server."""
    monkeypatch.setenv("DISPLAY", xserver.display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return xserver


def pytest_sessionfinish(session, exitstatus):
    for ctx in _contexts.values():
        ctx.release()
    _contexts.clear()

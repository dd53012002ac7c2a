"""RasterizeGLContext and RasterizeCudaContext: argument errors, nvdiffrast's class names."""

import pytest
import torch
from scenes import random_scene

import glrast as dr


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gl_context": 1}, TypeError, "gl_context must be a moderngl.Context"),
        ({"device": 3.5}, TypeError, "RasterizeGLContext: device must be None, a torch.device"),
        ({"device": True}, TypeError, "RasterizeGLContext: device must be"),
        ({"device": -1}, ValueError, "RasterizeGLContext: device must be .* negative index -1"),
        ({"device": "garbage"}, ValueError, "RasterizeGLContext: device must be .*'garbage'"),
        ({"device": "meta"}, ValueError, "RasterizeGLContext: device must be a CPU or CUDA device, got meta"),
        ({"device": "cuda:99"} if torch.cuda.is_available() else {"device": "cuda"},
         (RuntimeError, ValueError), "RasterizeGLContext: device 'cuda(:99)?' (needs CUDA|does not exist)"),
    ],
)  # fmt: skip
def test_context_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        dr.RasterizeGLContext(**kwargs)


def test_rasterize_cuda_context_is_a_class(device):
    """nvdiffrast scripts create RasterizeCudaContext and may check isinstance against it."""
    with dr.RasterizeCudaContext(device=device) as ctx:
        assert isinstance(ctx, dr.RasterizeCudaContext) and isinstance(ctx, dr.RasterizeGLContext)
        assert ctx.device.type == device.type
        pos, tri = random_scene(num_tris=2, num_images=1)
        rast, _ = dr.rasterize(ctx, pos.to(device), tri.to(device), (4, 4))
        assert rast.shape == (1, 4, 4, 4)
    with pytest.raises(TypeError, match="RasterizeCudaContext: device must be"):
        dr.RasterizeCudaContext(device=2.5)


def test_automatic_call_after_another_context_was_destroyed_while_current(cpu_glctx):
    """A ModernGL context released while current (doctor's probes do this) stays current until
    replaced, so it cannot be put back after a call: the call still works and leaves none current."""
    import moderngl

    from glrast import egl

    other = moderngl.create_context(standalone=True, backend="egl")
    assert egl.current_context().context is not None
    other.release()
    pos, tri = random_scene(num_tris=4, num_images=1, seed=2)
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (8, 8))
    assert (rast[..., 3] > 0).any()
    assert egl.current_context().context is None

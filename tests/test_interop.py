"""GL render targets -> tensors: the CPU readback, the interop error messages, and
on a GPU the CUDA-GL interop copy against glReadPixels and CUDA rasterization
against the CPU path."""

import torch
from conftest import gpu_test

import glrast as dr
from glrast import cuda_driver, interop


def test_interop_message_includes_pending_gl_error():
    from cuda.bindings import driver

    err = driver.CUresult.CUDA_ERROR_UNKNOWN
    plain = interop.interop_error_message(err, "mapping")
    assert plain == cuda_driver.cuda_error_message(err, "mapping")
    with_gl = interop.interop_error_message(err, "mapping", "GL_INVALID_OPERATION")
    assert with_gl.startswith(plain)
    assert "A GL error was pending: GL_INVALID_OPERATION: " in with_gl and "not current" in with_gl
    assert interop.gl_error_message("GL_NO_ERROR") == ""
    assert interop.gl_error_message("GL_STACK_OVERFLOW") == "GL_STACK_OVERFLOW: unexpected GL error"


def test_cpu_reader_reads_the_id_target(cpu_glctx):
    pos = torch.tensor([[[-1, -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(cpu_glctx, pos, tri, (5, 7))
    with cpu_glctx.activate():
        pipe = cpu_glctx.pipeline
        ids = torch.empty(5, 7, dtype=torch.int32)
        pipe.reader.read(pipe.fbo, [(0, ids)], (0, 0, 7, 5))
        pipe.reader.reset()  # no CUDA registrations: nothing to do
    assert torch.equal(ids.long(), dr.triangle_index(rast)[0] + 1)
    assert (ids == 1).all()


def _scene(n: int, device: str):
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(n, 12, 4, generator=g) * 1.6 - 0.8
    pos[..., 2] = torch.rand(n, 12, generator=g) * 0.5
    pos[..., 3] = 1.0
    tri = torch.randint(0, 12, (10, 3), generator=g, dtype=torch.int32)
    return pos.to(device), tri.to(device)


def _gl_readback(glctx, height, width):
    """What glReadPixels gives for the last image drawn: the id target."""
    with glctx.activate():
        pipe = glctx.pipeline
        ids = torch.empty(height, width, dtype=torch.int32)
        pipe.fbo.read_into(ids.numpy(), viewport=(0, 0, width, height), components=1, attachment=0, dtype="u4")
    return ids


@gpu_test
def test_interop_copy_equals_readpixels():
    with dr.RasterizeGLContext(device="cuda") as glctx:
        pos, tri = _scene(3, "cuda")
        for height, width in [(16, 16), (24, 40), (8, 8)]:  # the second grows (re-registers), the third reuses
            rast, _ = dr.rasterize(glctx, pos, tri, (height, width))
            torch.cuda.synchronize()
            ref = _gl_readback(glctx, height, width)
            assert torch.equal(dr.triangle_index(rast[-1]).cpu() + 1, ref.long())
            with glctx.activate():
                pipe = glctx.pipeline
                ids = torch.empty(height, width, dtype=torch.int32, device="cuda")
                pipe.reader.read(pipe.fbo, [(0, ids)], (0, 0, width, height))
            torch.cuda.synchronize()
            assert torch.equal(ids.cpu(), ref)
            assert (rast[..., 3] > 0).any()


@gpu_test
def test_rasterize_cuda_matches_cpu(cpu_glctx):
    pos, tri = _scene(2, "cpu")
    with dr.RasterizeGLContext(device="cuda") as gctx:
        rast_gpu, db_gpu = dr.rasterize(gctx, pos.cuda(), tri.cuda(), (32, 48))
    rast_cpu, db_cpu = dr.rasterize(cpu_glctx, pos, tri, (32, 48))
    same = rast_gpu[..., 3].cpu() == rast_cpu[..., 3]
    assert same.float().mean() > 0.99  # coverage ties on shared edges may differ between GL drivers
    assert torch.allclose(rast_gpu.cpu()[same], rast_cpu[same], atol=1e-4)
    assert torch.allclose(db_gpu.cpu()[same], db_cpu[same], atol=1e-3)

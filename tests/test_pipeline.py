"""The CPU's GL pass with its three shortcuts, culling (raster_cull drops triangles that cover no
pixel centre), slicing (consecutive runs of the triangle list drawn on helper contexts at once,
merged per pixel by raster_merge) and runs (a draw issued in runs with a flush after each), against
the plain draw (one context, every triangle, one run): rast and
rast_db must be bit-identical, on meshes and on soups made of the hard cases (edges through pixel
centres, depth ties within and across slices, clipped and non-finite triangles)."""

import logging
import os
import threading

import moderngl
import numpy as np
import pytest
import torch
from scenes import tri_tensor

import glrast as dr
from glrast import glcalls, kernels, mesh, pipeline
from glrast.camera import look_at, perspective, transform

MODES = {  # (cull, contexts, fewest triangles per slice, triangles per run); the cull modes cull whatever
    # the sample says
    "plain": (False, 1, pipeline.SLICE_TRIS, None),
    "cull": (True, 1, pipeline.SLICE_TRIS, pipeline.FLUSH_TRIS),
    "runs": (False, 1, pipeline.SLICE_TRIS, 7),
    "slices": (False, 3, 16, None),
    "cull+slices+runs": (True, 3, 16, 5),
}


@pytest.fixture(scope="module")
def ctx():
    """A context of this module's own (its pipeline's settings are changed here)."""
    glctx = dr.RasterizeGLContext(device="cpu")
    yield glctx
    glctx.release()


def _set_mode(glctx, mode: str) -> None:
    with glctx.activate():
        pipe = glctx.pipeline
    pipe.cull, pipe.contexts, pipe.slice_tris, pipe.flush_tris = MODES[mode]
    pipe.cull_min_share = 0.0


def _rasterize_all_modes(glctx, pos, tri, resolution, ranges=None):
    """{mode: (rast, rast_db)}, checking that the shortcuts were taken: some triangles culled,
    the sliced modes drawn on the helper contexts, and the runs flushed."""
    results, flushes = {}, {}
    flush = glcalls.flush
    for mode in MODES:
        _set_mode(glctx, mode)
        count = [0]
        glcalls.flush = lambda count=count: (count.__setitem__(0, count[0] + 1), flush())
        try:
            results[mode] = dr.rasterize(glctx, pos, tri, resolution, ranges=ranges)
        finally:
            glcalls.flush = flush
        flushes[mode] = count[0]
    assert flushes["plain"] == 0 and flushes["runs"] > 0
    _set_mode(glctx, "plain")
    with glctx.activate():
        pipe = glctx.pipeline
        kept = pipe._cull(pos if pos.ndim == 3 else pos[None], tri, 0, *resolution)
    assert 0 < kept.numel() < tri.shape[0]
    assert len(pipe.workers) == MODES["slices"][1] - 1
    return results


def _assert_all_equal(results):
    ref_rast, ref_db = results["plain"]
    assert (ref_rast[..., 3] > 0).any()
    for mode, (rast, db) in results.items():
        assert torch.equal(rast, ref_rast), mode
        assert torch.equal(db, ref_db), mode


def _icosphere(level: int, num_images: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard job's scene (benchmarks/standard_job.py): unit icosphere at distance 3, fov 45°;
    further images turn the camera."""
    verts, tri = mesh.icosphere(level)
    proj = perspective(45.0, 1.0, 0.1, 10.0)
    eyes = [(0.0, 0.0, 3.0), (1.2, 0.7, 2.6), (0.0, -2.9, 0.8)][:num_images]
    return torch.stack(
        [transform(proj @ look_at(eye, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)), verts)[0] for eye in eyes]
    ), tri


def _soup(seed: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip-space triangles [1, 3T, 4] and tri [T, 3] made of the cases that decide exactness."""
    g = torch.Generator().manual_seed(seed)

    def clip(x, y, z, w):  # window coordinates (pixels) -> clip space
        return torch.stack([(x / width * 2 - 1) * w, (y / height * 2 - 1) * w, z * w, w], -1)

    parts = []
    n = 1500
    # Sub-pixel and pixel-sized triangles around pixel centres, random depths.
    centre_x = torch.randint(0, width, (n, 1), generator=g) + 0.5
    centre_y = torch.randint(0, height, (n, 1), generator=g) + 0.5
    size = torch.rand(n, 1, generator=g) ** 2 * 2.5
    x = centre_x + (torch.rand(n, 3, generator=g) - 0.5) * size
    y = centre_y + (torch.rand(n, 3, generator=g) - 0.5) * size
    z = (torch.rand(n, 1, generator=g) * 1.8 - 0.9).expand(n, 3)
    w = (torch.rand(n, 1, generator=g) * 2 + 0.5).expand(n, 3)
    parts.append(clip(x, y, z, w))
    # Vertices on pixel centres and quarter-pixel points: edges through centres (GL's fill rule
    # decides), axis-aligned and diagonal, with depths on a coarse grid (ties).
    x = torch.randint(0, 4 * width, (n, 3), generator=g) / 4.0
    y = torch.randint(0, 4 * height, (n, 3), generator=g) / 4.0
    x[: n // 2, 1], y[: n // 2, 2] = x[: n // 2, 0], y[: n // 2, 0]  # right angles at vertex 0
    x[: n // 2, 1] += torch.randint(1, 3, (n // 2,), generator=g).float()
    y[: n // 2, 2] += torch.randint(1, 3, (n // 2,), generator=g).float()
    z = (torch.randint(0, 4, (n, 1), generator=g) / 4.0 - 0.5).expand(n, 3)
    parts.append(clip(x, y, z, torch.ones(n, 3)))
    # Clipped or outside: behind the eye (w < 0 at one or all corners), beyond near/far, off-screen.
    m = 200
    x = torch.rand(m, 3, generator=g) * 3 * width - width
    y = torch.rand(m, 3, generator=g) * 3 * height - height
    z = torch.rand(m, 3, generator=g) * 3 - 1.5
    w = torch.rand(m, 3, generator=g) * 2 - 0.5
    parts.append(torch.stack([x / width * 2 - 1, y / height * 2 - 1, z, w], -1))
    # Huge and tiny magnitudes (the same points, rescaled by the corner kernel), degenerate
    # triangles and non-finite corners.
    big = parts[0][:50] * 1e30
    tiny = parts[0][50:100] * 1e-30
    degenerate = parts[0][100:150].clone()
    degenerate[:, 2] = degenerate[:, 1]
    bad = parts[0][150:170].clone()
    bad[:10, 0, 0], bad[10:, 1, 3] = float("nan"), float("inf")
    soup = torch.cat(parts + [big, tiny, degenerate, bad])
    # Exact copies later in the list (ties across slices: the earlier one must win everywhere).
    soup = torch.cat([soup, soup[torch.randperm(soup.shape[0], generator=g)[:600]]])
    pos = soup.reshape(1, -1, 4).float()
    tri = torch.arange(pos.shape[1], dtype=torch.int32).view(-1, 3)
    return pos, tri


@pytest.mark.parametrize("resolution", [(64, 64), (37, 90), (256, 256)])
@pytest.mark.parametrize("seed", [0, 1])
def test_soup_bit_identical(ctx, seed, resolution):
    pos, tri = _soup(seed, *resolution)
    results = _rasterize_all_modes(ctx, pos, tri, resolution)
    _assert_all_equal(results)


@pytest.mark.parametrize("level,res", [(4, 64), (4, 256), (4, 512), (6, 256)])
def test_icosphere_bit_identical(ctx, level, res):
    pos, tri = _icosphere(level, num_images=2)
    _assert_all_equal(_rasterize_all_modes(ctx, pos, tri, (res, res)))


def test_ranges_bit_identical(ctx):
    pos, tri = _soup(3, 48, 64)
    t = tri.shape[0]
    ranges = torch.tensor([[0, t], [t // 3, t // 2], [t // 2, 0], [5, 700], [t - 40, 40]], dtype=torch.int32)
    _assert_all_equal(_rasterize_all_modes(ctx, pos[0], tri, (48, 64), ranges=ranges))


def test_depth_peeler_bit_identical(ctx):
    pos, tri = _icosphere(3, num_images=2)
    layers = {}
    for mode in MODES:
        _set_mode(ctx, mode)
        with dr.DepthPeeler(ctx, pos, tri, (64, 64)) as peeler:
            layers[mode] = [peeler.rasterize_next_layer() for _ in range(3)]
    _set_mode(ctx, "plain")
    for mode, got in layers.items():
        for (rast, db), (ref_rast, ref_db) in zip(got, layers["plain"]):
            assert torch.equal(rast, ref_rast) and torch.equal(db, ref_db), mode


def _gl_covered(glctx, corners: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[T] bool: whether GL gives triangle t of `corners` ([3T, 4]) a fragment (a shader flags it)."""
    gl = glctx.gl
    fragment = (
        "#version 430\nlayout(std430, binding = 0) buffer Flags { uint flags[]; };\n"
        "out vec4 colour;\nvoid main() { flags[gl_PrimitiveID] = 1u; colour = vec4(1.0); }\n"
    )
    vertex = "#version 430\nin vec4 in_pos;\nvoid main() { gl_Position = in_pos; }\n"
    with glctx.activate():
        program = gl.program(vertex_shader=vertex, fragment_shader=fragment)
        buffer = gl.buffer(corners.numpy().tobytes())
        flags = gl.buffer(np.zeros(corners.shape[0] // 3, np.uint32).tobytes())
        vao = gl.vertex_array(program, [(buffer, "4f", "in_pos")])
        target = gl.renderbuffer((width, height))
        fbo = gl.framebuffer(color_attachments=[target])
        fbo.use()
        gl.disable(moderngl.DEPTH_TEST)
        flags.bind_to_storage_buffer(0)
        vao.render(moderngl.TRIANGLES)
        gl.memory_barrier()  # the shader's storage writes, before reading the buffer back
        gl.finish()
        covered = torch.from_numpy(np.frombuffer(flags.read(), np.int32).copy()) > 0
        for obj in (vao, program, buffer, flags, fbo, target):
            obj.release()
    return covered


@pytest.mark.parametrize("resolution", [(64, 64), (256, 256), (1024, 1024), (40, 4096)])
def test_cull_keeps_every_triangle_gl_covers(ctx, resolution):
    """Against GL itself: no triangle GL rasterizes is dropped, and most that it does not are."""
    height, width = resolution
    g = torch.Generator().manual_seed(7)
    n = 60000  # tiny triangles near pixel centres, a third with vertices on the quarter-pixel grid
    x = torch.randint(0, width, (n, 1), generator=g) + 0.5 + (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    y = torch.randint(0, height, (n, 1), generator=g) + 0.5 + (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    x[: n // 3], y[: n // 3] = torch.round(x[: n // 3] * 4) / 4, torch.round(y[: n // 3] * 4) / 4
    w = torch.rand(n, 1, generator=g) * 3 + 0.2
    pos = torch.stack([(x / width * 2 - 1) * w, (y / height * 2 - 1) * w, torch.zeros(n, 3), w.expand(n, 3)], -1)
    pos = pos.reshape(1, -1, 4).float()
    tri = torch.arange(3 * n, dtype=torch.int32).view(-1, 3)
    covered = _gl_covered(ctx, pos[0], height, width)
    with ctx.activate():
        kept = ctx.pipeline._cull(pos, tri, 0, height, width)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[kept.long()] = True
    assert not (covered & ~keep).any(), f"{int((covered & ~keep).sum())} covered triangles culled"
    assert (~keep).sum() > 0.7 * (~covered).sum()


def test_merge_kernel_picks_nearest_then_earliest():
    ids = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 0, 8], [9, 10, 11, 0, 12]], dtype=torch.int32)
    depth = torch.tensor([[1.0, 0.5, 0.5, 0.2, 0.3], [0.7, 0.5, 0.4, 1.0, 0.3], [0.9, 0.1, 0.4, 1.0, 0.2]])
    kept = torch.arange(100, 113, dtype=torch.int32)  # drawn index d is triangle 100 + d
    out = torch.empty(5, dtype=torch.int32)
    pipeline.RasterPipeline._merge(ids, depth, kept, out, 3)
    assert out.tolist() == [5 + 100, 10 + 100, 7 + 100, 3 + 100, 12 + 100]
    pipeline.RasterPipeline._merge(ids[:1], None, None, out, 1)
    assert out.tolist() == [0, 1, 2, 3, 4]


def test_slices_and_worker_lifetime():
    glctx = dr.RasterizeGLContext(device="cpu")
    before = threading.active_count()
    pos, tri = _icosphere(4)
    with glctx.activate():
        pipe = glctx.pipeline
    pipe.contexts, pipe.slice_tris = 3, 1000
    assert pipe._slices(10, 3001) == [(10, 1000), (1010, 1000), (2010, 1001)]
    assert pipe._slices(0, 2500) == [(0, 1250), (1250, 1250)]  # slices of at least slice_tris
    assert pipe._slices(0, 1999) == [(0, 1999)]
    pipe.cull = False  # all 5120 triangles: three slices
    dr.rasterize(glctx, pos, tri, (32, 32))
    assert len(pipe.workers) == 2 and threading.active_count() == before + 2
    glctx.release()
    assert threading.active_count() == before


def test_helper_context_failure_falls_back_to_one(monkeypatch, caplog):
    glctx = dr.RasterizeGLContext(device="cpu")
    pos, tri = _icosphere(3)
    ref, _ = dr.rasterize(glctx, pos, tri, (32, 32))

    def refuse(self, make_context):
        raise RuntimeError("no more contexts")

    monkeypatch.setattr(pipeline.SliceWorker, "__init__", refuse)
    with glctx.activate():
        pipe = glctx.pipeline
    pipe.contexts, pipe.slice_tris = 2, 100
    with caplog.at_level(logging.WARNING, logger="glrast"):
        got, _ = dr.rasterize(glctx, pos, tri, (32, 32))
    assert "helper GL context could not be created (no more contexts)" in caplog.text
    assert pipe.contexts == 1 and torch.equal(got, ref)
    glctx.release()


def test_wrapped_context_draws_alone(ctx):
    """Only a headless context slices: a wrapped one's GL may render differently from EGL's."""
    wrapped = dr.RasterizeGLContext(device="cpu", gl_context=ctx.gl)
    with wrapped.activate():
        assert wrapped.pipeline.helper_context is None and wrapped.pipeline.cull
    with ctx.activate():
        assert ctx.pipeline.helper_context is not None
    wrapped.release()


def test_context_count_settings(monkeypatch):
    monkeypatch.delenv("GLRAST_PLAIN_DRAW", raising=False)
    monkeypatch.delenv("GLRAST_GL_CONTEXTS", raising=False)
    assert pipeline.default_contexts() == 1
    monkeypatch.setenv("GLRAST_GL_CONTEXTS", "cores")
    assert pipeline.default_contexts() == min(pipeline.MAX_CONTEXTS, len(os.sched_getaffinity(0)))
    monkeypatch.setenv("GLRAST_GL_CONTEXTS", "3")
    assert pipeline.default_contexts() == 3
    monkeypatch.setenv("GLRAST_GL_CONTEXTS", "zero")
    with pytest.raises(ValueError, match="GLRAST_GL_CONTEXTS must be a positive integer or 'cores', got 'zero'"):
        pipeline.default_contexts()
    monkeypatch.setenv("GLRAST_PLAIN_DRAW", "1")
    assert pipeline.default_contexts() == 1
    glctx = dr.RasterizeGLContext(device="cpu")
    with glctx.activate():
        assert not glctx.pipeline.cull and glctx.pipeline.contexts == 1 and glctx.pipeline.flush_tris is None
    glctx.release()


def test_margin_follows_subpixel_bits(ctx):
    with ctx.activate():
        bits = glcalls.integer(glcalls.GL_SUBPIXEL_BITS)
        margin = ctx.pipeline._margin(256, 1024)
    assert bits >= 4
    assert margin == 2.0 ** -min(bits, 16) + 1024 * (2.0**-20 + 2.0**-23)


def test_corner_kernel_gathers_kept_triangles():
    pos = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 5, 4) + 1
    tri = tri_tensor([[0, 1, 2], [2, 3, 4], [4, 0, 1], [1, 2, 3]])
    kept = torch.tensor([0, 2, 3], dtype=torch.int32)
    corners = torch.empty(6, 4)
    params = pipeline.CornerParams(
        pos=pos.data_ptr(), tri=tri.data_ptr(), kept=kept.data_ptr(), corners=corners.data_ptr(), first=1, count=2,
        image=1, verts_per_image=5,
    )  # fmt: skip
    kernels.module("raster", torch.device("cpu")).launch("raster_corners", params, 6)
    assert torch.equal(corners, pos[1][tri[kept[1:].long()].flatten().long()])


def test_cull_only_where_the_sample_says_it_pays(ctx):
    """A sample of the blocks decides: a fine mesh at a low resolution is culled, a coarse one
    at a high resolution (nearly every triangle covers a centre) is drawn whole."""
    fine, fine_tri = _icosphere(6)
    coarse, coarse_tri = _icosphere(4)
    with ctx.activate():
        pipe = ctx.pipeline
        pipe.cull_min_share = pipeline.CULL_MIN_SHARE
        kept = pipe._cull(fine, fine_tri, 0, 64, 64, sample=True)
        assert kept is not None and kept.numel() < 0.5 * fine_tri.shape[0]
        assert pipe._cull(coarse, coarse_tri, 0, 1024, 1024, sample=True) is None
        assert pipe._cull(coarse, coarse_tri, 0, 1024, 1024).numel() > 0.5 * coarse_tri.shape[0]

"""The GL visibility pass of rasterize: programs, buffers, render targets and
readback, owned by one RasterizeGLContext (glrast/context.py).

`RasterPipeline.draw` rasterizes one image per draw and returns the triangle id
(+1) of every pixel; glrast/raster.py turns the ids into rast and rast_db with
its kernels. Nothing here sees gradients.

On the CPU, llvmpipe spends most of a large mesh's time before rasterizing, on
one thread per context (vertex processing, triangle setup, binning). Three things
cut that, none of which changes a pixel:
  * culling: the raster_cull kernel (csrc/raster.cu) drops the triangles that
    provably cover no pixel centre, most of a fine mesh at a low resolution;
  * slicing: the remaining triangles of a large draw are cut into consecutive
    slices, drawn at once by this context and by helper contexts on threads of
    their own (ids and depth per slice), and the raster_merge kernel keeps per
    pixel what one draw of the whole list keeps;
  * runs: a draw is issued in runs of FLUSH_TRIS triangles with a flush after
    each, so that llvmpipe's threads rasterize one run while this thread bins
    the next (it rasterizes only at a flush).
`GLRAST_PLAIN_DRAW=1` turns all three off (one context draws every triangle in one
run, as the GL pass did before): the reference the tests compare the fast path with, bit
for bit. `GLRAST_GL_CONTEXTS=K` (or `cores`) lets one draw use K contexts
(default 1: see default_contexts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import moderngl
import numpy as np
import torch

from . import glcalls, ids, interop, kernels
from ._log import logger
from ._resources import resource_dir
from .params import Params, expect_constants, ptr

MAX_CONTEXTS = 8  # helper contexts beyond this gain nothing on llvmpipe (its rasterizer threads share the cores)
CULL_MIN_TRIS = 1 << 12  # fewer triangles cost llvmpipe less than the cull's launches
CULL_SAMPLE_STRIDE = 32  # the cull first tries one block in this many ...
CULL_MIN_SHARE = 0.25  # ... and runs only where it drops this share of them (measured with the prefetching
# cull: a full cull pass costs ~35 ns a triangle, drawing one ~200 ns; at a third dropped, 80k triangles at
# 256² and 1.3M at 1024², culling took 5-12% off the step, at 0.5 it was skipped there)
FLUSH_TRIS = 1 << 13  # triangles per run of a CPU draw: rasterize of 1.3M triangles at 256² and of 80k at
# 256² took 10-20% less with runs of 2k-16k (within the noise of each other) than with one; no change at 5k
SLICE_TRIS = 1 << 17  # fewest triangles per slice: a slice's clear, readback and merge cost more below


class CornerParams(Params):
    """Mirror of CornerParams in csrc/raster.cu (the raster_corners kernel)."""

    _fields_ = [
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("kept", ctypes.c_void_p),
        ("corners", ctypes.c_void_p),
        ("first", ctypes.c_int),
        ("count", ctypes.c_int),
        ("image", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
    ]


class CullParams(Params):
    """Mirror of CullParams in csrc/raster.cu (the raster_window, raster_cull and raster_compact kernels)."""

    _fields_ = [
        ("pos", ctypes.c_void_p),
        ("tri", ctypes.c_void_p),
        ("window", ctypes.c_void_p),
        ("kept", ctypes.c_void_p),
        ("counts", ctypes.c_void_p),
        ("offsets", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("num_tris", ctypes.c_int),
        ("image", ctypes.c_int),
        ("verts_per_image", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("margin", ctypes.c_float),
        ("block_stride", ctypes.c_int),
    ]


CULL_BLOCK = 16  # triangles per element of the raster_cull launch
expect_constants("raster", "cull", {"GLRAST_CULL_BLOCK": CULL_BLOCK})


class MergeParams(Params):
    """Mirror of MergeParams in csrc/raster.cu (the raster_merge kernel)."""

    _fields_ = [
        ("ids", ctypes.c_void_p),
        ("depth", ctypes.c_void_p),
        ("kept", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("slices", ctypes.c_int),
        ("pixels", ctypes.c_longlong),
    ]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_contexts() -> int:
    """How many GL contexts one CPU draw may use: $GLRAST_GL_CONTEXTS ("cores": the usable cores, at
    most MAX_CONTEXTS), else 1; 1 with $GLRAST_PLAIN_DRAW. One by default: on the 2-core machine
    this was measured on, a second context drew 1.3M triangles no faster (its rasterizer threads
    compete with the first's for the same cores) and holds another llvmpipe context's memory."""
    if _flag("GLRAST_PLAIN_DRAW"):
        return 1
    value = os.environ.get("GLRAST_GL_CONTEXTS", "").strip()
    if value:
        if value == "cores":
            return max(1, min(MAX_CONTEXTS, len(os.sched_getaffinity(0))))
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"GLRAST_GL_CONTEXTS must be a positive integer or 'cores', got {value!r}")
        return int(value)
    return 1


class CornerBuffer:
    """The GL buffer of triangle corners that the raster_corners kernel writes straight into: mapped
    into the process (glMapBufferRange) for CPU tensors, registered with CUDA and mapped into the
    device's address space for CUDA tensors (once per allocation; the buffer only grows). A CPU
    draw fills it one run at a time (RasterPipeline.draw_slice)."""

    def __init__(self, gl: moderngl.Context):
        self.gl = gl
        self.buffer = gl.buffer(reserve=48)
        self._cuda: interop.CudaBuffer | None = None

    @contextlib.contextmanager
    def mapped(self, nbytes: int, device: torch.device) -> Iterator[int]:
        """The address of the buffer's first `nbytes` (> 0), writable on `device` until the block ends."""
        if self.buffer.size < nbytes:
            self._unregister()
            self.buffer.orphan(nbytes)
        if device.type == "cpu":
            address = glcalls.map_buffer(self.buffer.glo, nbytes)
            try:
                yield address
            finally:
                glcalls.unmap_buffer(self.buffer.glo)
            return
        if self._cuda is None or self._cuda.device != device:
            self._unregister()
            self._cuda = interop.CudaBuffer(self.gl, self.buffer, device)
        with self._cuda.mapped() as address:
            yield address

    def gather(
        self, pos: torch.Tensor, tri: torch.Tensor, kept: torch.Tensor | None, image: int, first: int, count: int
    ) -> None:
        """Corners of triangles first ... first + count - 1 (of kept, or of tri when kept is None) of
        position set `image` into the buffer's start, with the raster_corners kernel on pos's device."""
        if count == 0:
            return
        with self.mapped(48 * count, pos.device) as address:
            params = CornerParams(
                pos=pos.data_ptr(),
                tri=tri.data_ptr(),
                kept=ptr(kept),
                corners=address,
                first=first,
                count=count,
                image=image,
                verts_per_image=pos.shape[1] if pos.ndim == 3 else 0,
            )
            kernels.module("raster", pos.device).launch("raster_corners", params, 3 * count)

    def _unregister(self) -> None:
        cuda, self._cuda = self._cuda, None
        if cuda is not None:
            cuda.release()

    def release(self) -> None:
        self._unregister()
        self.buffer.release()


class SliceWorker:
    """A thread with a GL context of its own, made there by `make_context` (a headless CPU
    RasterizeGLContext: the context module passes it in, being above this one), on which a
    RasterPipeline draws slices of its triangle lists (`submit`, then `wait`)."""

    def __init__(self, make_context: Callable[[], Any]) -> None:
        self._make_context = make_context
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="glrast-gl-slice", daemon=True)
        self._thread.start()
        self.renderer: str = self.wait()

    def _run(self) -> None:
        try:
            glctx = self._make_context()
        except BaseException as e:  # reported by __init__'s wait
            self._results.put(e)
            return
        self._results.put(glctx.info["renderer"])
        while (task := self._tasks.get()) is not None:
            try:
                with glctx.activate():
                    task(glctx.pipeline)
                self._results.put(None)
            except BaseException as e:  # re-raised on the submitting thread
                self._results.put(e)
        glctx.release()

    def submit(self, task: Callable[[RasterPipeline], None]) -> None:
        self._tasks.put(task)

    def wait(self) -> Any:
        result = self._results.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        if self._thread.is_alive():
            self._tasks.put(None)
            self._thread.join(timeout=10)


class RasterPipeline:
    """The GL objects of the visibility pass, owned by one RasterizeGLContext.

    The GL pass draws the triangles' corners (the raster_corners kernel gathers
    them from pos and tri into the corner buffer) as a plain triangle list and
    writes one triangle id (+1) per pixel into an R32UI target. Buffers and
    render targets grow to the largest size seen and are reused; images of a
    batch are drawn one after another into the same target and read back in
    turn, so the target never needs more than one image.

    helper_context: makes a context for a helper thread (given only where slices may be
    handed to helpers: a headless CPU context, not a wrapped one, whose GL may differ
    from EGL's).
    The attributes cull, cull_min_share, contexts, slice_tris and flush_tris steer the CPU path (see the
    module docstring); tests set them directly.
    """

    def __init__(self, gl: moderngl.Context, helper_context: Callable[[], Any] | None = None):
        self.gl = gl
        self.corners = CornerBuffer(gl)  # [3T, 4] corners of the triangles drawn
        self.pos_buf = gl.buffer(reserve=16)  # depth peeling reads pos and tri as storage buffers
        self.tri_buf = gl.buffer(reserve=12)
        self.programs: dict[bool, tuple[moderngl.Program, moderngl.VertexArray]] = {}
        self.size = (0, 0)  # (width, height) of the render target
        self.targets: list[Any] = []
        self.prev_tex: moderngl.Texture | None = None  # depth peeling only, created on first use
        self.reader = interop.TargetReader()
        self.cull = not _flag("GLRAST_PLAIN_DRAW")
        self.cull_min_share = CULL_MIN_SHARE
        self.helper_context = helper_context
        self.contexts = default_contexts() if helper_context is not None else 1
        self.slice_tris = SLICE_TRIS
        self.flush_tris = None if _flag("GLRAST_PLAIN_DRAW") else FLUSH_TRIS  # None: one run
        self.workers: list[SliceWorker] = []
        self._cull_buffers: tuple[torch.Tensor, ...] | None = None  # raster_cull's and raster_compact's, [T] int32
        self._window: torch.Tensor | None = None  # raster_window's, [V, 2] float32
        self._slice_ids: torch.Tensor | None = None  # [slices, H, W] int32 and float32 for raster_merge
        self._slice_depth: torch.Tensor | None = None
        self._margin_px: float | None = None

    def _program(self, peel: bool) -> tuple[moderngl.Program, moderngl.VertexArray]:
        """The plain program, or the depth-peeling variant (built on first use)."""
        if peel not in self.programs:
            shaders = resource_dir("shaders")
            defines = ids.glsl_defines() + ("#define PEEL\n" if peel else "")
            frag = (shaders / "rasterize.frag").read_text().replace("#version 430\n", "#version 430\n" + defines, 1)
            program = self.gl.program(vertex_shader=(shaders / "rasterize.vert").read_text(), fragment_shader=frag)
            if peel:
                program["prev_id"].value = 0
            vao = self.gl.vertex_array(program, [(self.corners.buffer, "4f", "in_pos")])
            self.programs[peel] = (program, vao)
        return self.programs[peel]

    def _grow(self, height: int, width: int) -> None:
        w, h = max(width, self.size[0]), max(height, self.size[1])
        if (w, h) == self.size:
            return
        self.reader.reset()
        for obj in self.targets:
            obj.release()
        if self.prev_tex is not None:
            self.prev_tex.release()
            self.prev_tex = None
        ids = self.gl.texture((w, h), 1, dtype="u4")
        depth = self.gl.depth_renderbuffer((w, h))
        self.fbo = self.gl.framebuffer(color_attachments=[ids], depth_attachment=depth)
        self.targets = [self.fbo, ids, depth]
        self.size = (w, h)

    def _peel_texture(self) -> moderngl.Texture:
        """The previous layer's id channel (rast[..., 3]) as a texture, sized like the render target."""
        if self.prev_tex is None:
            self.prev_tex = self.gl.texture(self.size, 1, dtype="f4")
            self.prev_tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return self.prev_tex

    @staticmethod
    def _upload(buf: moderngl.Buffer, host: torch.Tensor) -> None:
        # Uploaded on every call: a cache keyed on the tensor's version counter would
        # miss in-place changes made through `.data`, and the copy is a small part of
        # the draw.
        if buf.size < host.numel() * host.element_size():
            buf.orphan(host.numel() * host.element_size())
        buf.write(host.numpy())

    def _margin(self, height: int, width: int) -> float:
        """How far (pixels, in x and in y) GL's snapped vertices may lie from the cull's window
        coordinates: GL's subpixel grid's step (twice the rounding error), plus the float error of
        its viewport transform (8 units in the last place of the largest window coordinate), plus
        raster_window's rounding to float (half a unit there, counted as one)."""
        if self._margin_px is None:
            bits = glcalls.integer(glcalls.GL_SUBPIXEL_BITS)
            self._margin_px = 2.0 ** -max(4, min(bits, 16))  # GL guarantees at least 4 bits
        return self._margin_px + max(height, width) * (2.0**-20 + 2.0**-23)

    def _cull(
        self, pos: torch.Tensor, tri: torch.Tensor, image: int, height: int, width: int, sample: bool = False
    ) -> torch.Tensor | None:
        """The triangles of position set `image` that may cover a pixel centre, in order: [K] int32
        (a view of a buffer that the next call overwrites). sample: first test one block in
        CULL_SAMPLE_STRIDE, and return None without culling where fewer than CULL_MIN_SHARE of those
        would go. All kernels, no torch op: torch's OpenMP threads spin after a parallel region,
        which costs llvmpipe's threads their cores."""
        num_tris = tri.shape[0]
        blocks = -(-num_tris // CULL_BLOCK)
        if self._cull_buffers is None or self._cull_buffers[0].numel() < num_tris:
            self._cull_buffers = tuple(torch.empty(num_tris, dtype=torch.int32) for _ in range(3))
        kept, counts, out = self._cull_buffers
        num_verts = pos.shape[-2]
        if self._window is None or self._window.shape[0] < num_verts:
            self._window = torch.empty(num_verts, 2)
        params = CullParams(
            pos=pos.data_ptr(),
            tri=tri.data_ptr(),
            window=self._window.data_ptr(),
            kept=kept.data_ptr(),
            counts=counts.data_ptr(),
            out=out.data_ptr(),
            num_tris=num_tris,
            image=image,
            verts_per_image=pos.shape[1] if pos.ndim == 3 else 0,
            height=height,
            width=width,
            margin=self._margin(height, width),
            block_stride=CULL_SAMPLE_STRIDE,
        )
        mod = kernels.module("raster", pos.device)
        mod.launch("raster_window", params, num_verts)
        if sample:
            tested = -(-blocks // CULL_SAMPLE_STRIDE)
            mod.launch("raster_cull", params, tested)
            if counts[:tested].numpy().sum() > (1 - self.cull_min_share) * tested * CULL_BLOCK:
                return None
        params.block_stride = 1
        mod.launch("raster_cull", params, blocks)
        ends = np.cumsum(counts[:blocks].numpy(), dtype=np.int64)
        offsets = ends - counts[:blocks].numpy()
        params.offsets = offsets.ctypes.data
        mod.launch("raster_compact", params, blocks)
        return out[: int(ends[-1]) if blocks else 0]

    def _slices(self, first: int, count: int) -> list[tuple[int, int]]:
        """[(first, count)] of each context's consecutive run of the draw."""
        n = max(1, min(self.contexts, count // self.slice_tris))
        bounds = [first + count * k // n for k in range(n + 1)]
        return [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(n)]

    def _start_workers(self, n: int) -> int:
        """Start helper contexts until there are n; returns how many there are (fewer when one
        cannot be made, or renders with another GL than this context: then slicing stops)."""
        renderer = self.gl.info["GL_RENDERER"]
        while len(self.workers) < n:
            try:
                worker = SliceWorker(self.helper_context)
            except Exception as e:
                logger.warning("rasterize: a helper GL context could not be created (%s); drawing on one", e)
                self.contexts = 1
                break
            self.workers.append(worker)
            if worker.renderer != renderer:
                logger.warning(
                    "rasterize: helper contexts render with %r, not %r; drawing on one", worker.renderer, renderer
                )
                self.contexts = 1
                break
        return len(self.workers) if self.contexts > 1 else 0

    def _scratch(self, slices: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[slices, H, W] ids (int32) and depth (float32) for the slices of one image."""
        need = slices * height * width
        if self._slice_ids is None or self._slice_ids.numel() < need:
            self._slice_ids = torch.empty(need, dtype=torch.int32)
            self._slice_depth = torch.empty(need, dtype=torch.float32)
        shape = (slices, height, width)
        return self._slice_ids[:need].view(shape), self._slice_depth[:need].view(shape)

    def draw_slice(
        self,
        pos: torch.Tensor,
        tri: torch.Tensor,
        kept: torch.Tensor | None,
        image: int,
        first: int,
        count: int,
        height: int,
        width: int,
        out_ids: torch.Tensor,
        out_depth: torch.Tensor | None = None,
        peel: bool = False,
    ) -> None:
        """Draw triangles first ... first + count - 1 (indices into kept, or into tri when kept is
        None) of position set `image`; reads ids ([H, W] int32: index + 1, 0 where empty) and, if
        out_depth is given, depth ([H, W] float32, 1 where empty). The GL context must be current."""
        self._grow(height, width)
        program, vao = self._program(peel)
        gl = self.gl
        gl.enable(moderngl.DEPTH_TEST)
        gl.depth_func = "<"
        gl.disable(moderngl.CULL_FACE | moderngl.BLEND)
        viewport = (0, 0, width, height)
        self.fbo.use()
        self.fbo.viewport = viewport
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=viewport)
        # Runs on the CPU (see the module docstring); a GPU's GL starts work without flushes.
        run = self.flush_tris if pos.device.type == "cpu" and self.flush_tris else max(count, 1)
        for start in range(0, count, run):
            n = min(run, count - start)
            # Each run's corners are gathered just before its draw, so the buffer holds one run
            # (48 B a triangle: 42 MB fewer for 1.3M triangles at 1024²) and is still in cache.
            self.corners.gather(pos, tri, kept, image, first + start, n)
            program["tri_base"].value = first + start
            glcalls.draw_triangles(program.glo, vao.glo, 0, 3 * n)
            if start + n < count:
                glcalls.flush()
        self.reader.read(self.fbo, [(0, out_ids)] + ([(-1, out_depth)] if out_depth is not None else []), viewport)

    def draw(
        self,
        pos: torch.Tensor,
        tri: torch.Tensor,
        draws: list[tuple[int, int, int]],
        height: int,
        width: int,
        prev_rast: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rasterize one image per (position set, first_tri, tri_count) in `draws`;
        returns the ids [N, H, W] int32 (triangle id + 1, 0 where empty)."""
        pos = pos.detach()
        peel = prev_rast is not None
        self._grow(height, width)
        program, _ = self._program(peel)
        if peel:  # the peeling shader reads the vertices itself
            self._upload(self.pos_buf, pos.cpu().contiguous())
            self._upload(self.tri_buf, tri.cpu())
            self.pos_buf.bind_to_storage_buffer(0)
            self.tri_buf.bind_to_storage_buffer(1)
            program["ndc_scale"].value = (2.0 / width, 2.0 / height)
        # The CPU's GL (llvmpipe) gains from culling and slicing; peeling's shader needs the drawn
        # index to be the triangle id, and a GPU's GL has no use for either.
        fast = pos.device.type == "cpu" and not peel
        out = torch.empty(len(draws), height, width, dtype=torch.int32, device=pos.device)
        kept, culled = None, None
        for layer, (image, first, count) in enumerate(draws):
            if fast and self.cull and tri.shape[0] >= CULL_MIN_TRIS and image != culled:
                kept, culled = self._cull(pos, tri, image, height, width, sample=True), image
                if kept is not None and kept.numel() == tri.shape[0]:  # nothing culled: no indirection
                    kept = None
            if kept is not None and (first, count) != (0, tri.shape[0]):  # the range's run of survivors
                first, end = np.searchsorted(kept.numpy(), [first, first + count]).tolist()
                count = end - first
            elif kept is not None:
                count = kept.numel()
            if peel:
                prev_tex = self._peel_texture()
                prev_tex.write(
                    prev_rast[layer, ..., 3].detach().cpu().contiguous().numpy(), viewport=(0, 0, width, height)
                )
                prev_tex.use(0)
                program["vertex_base"].value = image * pos.shape[-2]
            slices = self._slices(first, count) if fast else [(first, count)]
            if len(slices) > 1 and self._start_workers(len(slices) - 1) < len(slices) - 1:
                slices = [(first, count)]
            self._draw_image(pos, tri, kept, image, slices, height, width, out[layer], peel)
        return out

    def _draw_image(
        self,
        pos: torch.Tensor,
        tri: torch.Tensor,
        kept: torch.Tensor | None,
        image: int,
        slices: list[tuple[int, int]],
        height: int,
        width: int,
        out: torch.Tensor,
        peel: bool,
    ) -> None:
        """Draw one image into out ([H, W] int32 triangle ids + 1): the first slice on this context,
        the others on helper contexts at the same time, then merge."""
        if len(slices) == 1:
            self.draw_slice(pos, tri, kept, image, *slices[0], height, width, out, peel=peel)
            if kept is not None:  # drawn indices -> triangle ids, in place
                self._merge(out, None, kept, out, 1)
            return
        slice_ids, slice_depth = self._scratch(len(slices), height, width)
        for k, (worker, (first, count)) in enumerate(zip(self.workers, slices[1:]), start=1):
            args = (pos, tri, kept, image, first, count, height, width, slice_ids[k], slice_depth[k])
            worker.submit(lambda pipe, args=args: pipe.draw_slice(*args))
        try:
            self.draw_slice(pos, tri, kept, image, *slices[0], height, width, slice_ids[0], slice_depth[0])
        finally:
            errors = []
            for worker in self.workers[: len(slices) - 1]:
                try:
                    worker.wait()
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
        self._merge(slice_ids, slice_depth, kept, out, len(slices))

    @staticmethod
    def _merge(
        slice_ids: torch.Tensor,
        slice_depth: torch.Tensor | None,
        kept: torch.Tensor | None,
        out: torch.Tensor,
        slices: int,
    ) -> None:
        params = MergeParams(
            ids=slice_ids.data_ptr(),
            depth=ptr(slice_depth),
            kept=ptr(kept),
            out=out.data_ptr(),
            slices=slices,
            pixels=out.numel(),
        )
        kernels.module("raster", out.device).launch("raster_merge", params, out.numel())

    def release(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.close()
        self.reader.reset()
        for program, vao in self.programs.values():
            vao.release()
            program.release()
        for obj in (*self.targets, self.prev_tex, self.pos_buf, self.tri_buf):
            if obj is not None:
                obj.release()
        self.corners.release()
        self.targets = []
        self.prev_tex = None
        self.programs = {}

"""Per-call overhead on tiny inputs: what a call costs when there is almost no work.

For each public function on an 8x8 image of one triangle (and a 4x4 texture):
microseconds per call, forward and forward + backward, as the minimum over
several repeats of a batch of calls (the minimum is the figure least disturbed
by other load on the machine). Also the bare launch of a host kernel through the
kernel runtime (`launch`), the floor under every op, at sizes below and above the
one at which a launch starts using more than the calling thread, and the cost of a
bare ctypes call with the same argument types (the floor under a launch).

    python benchmarks/bench_tiny.py                 # default threads
    python benchmarks/bench_tiny.py --threads 1     # OMP_NUM_THREADS for the host kernels
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
from collections.abc import Callable

import torch

# Elements per launch: tiny, and around the size at which a launch stops running on the calling
# thread alone (csrc/common.h hands out chunks of 1024 elements; a second chunk wakes a worker).
LAUNCH_SIZES = (3, 1024, 1025, 4096)


def per_call_us(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Minimum over `repeats` batches of the mean time of one call, in microseconds."""
    for _ in range(max(10, calls // 10)):  # warm-up: compile, allocate, fill caches
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return 1e6 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # many short batches: on a busy machine some of them run undisturbed, and the minimum is theirs
    parser.add_argument("--calls", type=int, default=100, help="calls per timed batch (default 100)")
    parser.add_argument("--repeats", type=int, default=50, help="timed batches; the minimum is reported (default 50)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the host kernels")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import glrast as dr
    from glrast import kernels

    glctx = dr.RasterizeGLContext(device="cpu")
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    col = torch.rand(3, 3)
    tex = torch.rand(1, 4, 4, 3)
    res = (8, 8)
    rast, rast_db = dr.rasterize(glctx, pos, tri, res)
    uv, uv_da = dr.interpolate(torch.rand(3, 2), rast, tri, rast_db=rast_db, diff_attrs="all")
    image, _ = dr.interpolate(col, rast, tri)
    topo = dr.antialias_construct_topology_hash(tri)
    leaves = {name: t.clone().requires_grad_(True) for name, t in (("pos", pos), ("col", col), ("tex", tex))}

    from glrast.pipeline import CornerParams

    mod = kernels.module("raster", torch.device("cpu"))
    # raster_corners gathers one corner (4 floats) per element: n corners of triangles of `pos`
    most = max(LAUNCH_SIZES)
    corner_tri = torch.arange(most, dtype=torch.int32) % 3
    corners = torch.empty(most, 4)
    corner_params = CornerParams(pos=pos.data_ptr(), tri=corner_tri.data_ptr(), corners=corners.data_ptr())
    # the floor of any ctypes call with a pointer, a 64-bit and a 32-bit argument: memset of 0 bytes
    memset = ctypes.CDLL(None).memset
    memset.restype, memset.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    scratch = ctypes.addressof(corner_params)

    def launch(n: int) -> Callable[[], object]:
        return lambda: mod.launch("raster_corners", corner_params, n)

    cases: list[tuple[str, Callable[[], object], Callable[[], object] | None]] = [
        ("ctypes call floor (memset, 0 bytes)", lambda: memset(scratch, 0, 0), None),
        *[(f"launch (raster_corners, n={n})", launch(n), None) for n in LAUNCH_SIZES],
        (
            "rasterize",
            lambda: dr.rasterize(glctx, pos, tri, res),
            lambda: dr.rasterize(glctx, leaves["pos"], tri, res)[0].sum().backward(),
        ),
        (
            "interpolate",
            lambda: dr.interpolate(col, rast, tri),
            lambda: dr.interpolate(leaves["col"], rast, tri)[0].sum().backward(),
        ),
        (
            "texture (linear)",
            lambda: dr.texture(tex, uv),
            lambda: dr.texture(leaves["tex"], uv).sum().backward(),
        ),
        (
            "texture (mipmapped)",
            lambda: dr.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear"),
            lambda: dr.texture(leaves["tex"], uv, uv_da, filter_mode="linear-mipmap-linear").sum().backward(),
        ),
        (
            "antialias (prebuilt hash)",
            lambda: dr.antialias(image, rast, pos, tri, topology_hash=topo),
            lambda: dr.antialias(image, rast, leaves["pos"], tri, topology_hash=topo).sum().backward(),
        ),
        ("antialias_construct_topology_hash", lambda: dr.antialias_construct_topology_hash(tri), None),
    ]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"8x8 image, 1 triangle; OMP_NUM_THREADS={threads}, torch threads {torch.get_num_threads()}; "
          f"min over {args.repeats} batches of {args.calls} calls")  # fmt: skip
    print("| call | fwd (µs) | fwd+bwd (µs) |")
    print("|---|---:|---:|")
    for name, fwd, fwd_bwd in cases:
        with torch.no_grad():
            t_fwd = per_call_us(fwd, args.calls, args.repeats)
        t_bwd = f"{per_call_us(fwd_bwd, args.calls, args.repeats):.1f}" if fwd_bwd else "–"
        print(f"| {name} | {t_fwd:.1f} | {t_bwd} |", flush=True)
    glctx.release()


if __name__ == "__main__":
    main()

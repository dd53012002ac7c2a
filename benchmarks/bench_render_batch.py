"""Batch rendering and data-parallel fitting across processes on this machine.

1. `glrast render` over a folder of icosphere meshes (80k triangles by default, 4 orbit
   views at 512² each): meshes per second with 1 worker (in-process) and with K
   workers (spawned processes, one GL context each).
2. What a fresh worker pays before its first mesh: interpreter start and imports, the
   GL context, the kernel modules from the disk cache; and the first mesh against later ones.
3. examples/distributed_fit.py with 1 rank and with 2 ranks (torchrun, Gloo), the same
   total views a step: time of the steps, and the scaling efficiency
   (time with 1 rank) / (ranks × time with `ranks` ranks).

    python benchmarks/bench_render_batch.py                 # the defaults above
    python benchmarks/bench_render_batch.py --meshes 4 --level 4 --res 256   # quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STARTUP = """
import time
t0 = time.perf_counter()
import torch, glrast as dr
from glrast import kernels
t1 = time.perf_counter()
ctx = dr.RasterizeGLContext(device="cpu")
t2 = time.perf_counter()
for name in kernels.kernel_names():
    kernels.module(name, torch.device("cpu"))
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def write_meshes(folder: Path, count: int, level: int) -> None:
    import torch
    import trimesh

    from glrast import mesh

    verts, tri = mesh.icosphere(level)
    g = torch.Generator().manual_seed(0)
    for k in range(count):
        scaled = verts * (0.6 + 0.8 * torch.rand(3, generator=g))
        trimesh.Trimesh(scaled.numpy(), tri.numpy(), process=False).export(folder / f"mesh{k:03d}.ply")


def time_render(folder: Path, out: Path, workers: int, res: int, views: int) -> tuple[float, list[float]]:
    from glrast import render

    options = render.Options(res=(res, res), views=views, device="cpu")
    start = time.perf_counter()
    outcomes = render.run(folder, out, options, workers=workers, quiet=True)
    assert all(o.status == "rendered" for o in outcomes), [o.error for o in outcomes if o.error]
    return time.perf_counter() - start, [o.seconds for o in outcomes]


def distributed_fit(ranks: int, steps: int) -> float:
    """Seconds of the fit's steps (rank 0), with `ranks` processes."""
    script = str(ROOT / "examples" / "distributed_fit.py")
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "r.pt"
        args = [script, "--steps", str(steps), "--batch", "8", "--out", tmp, "--record", str(record)]
        if ranks == 1:
            cmd = [sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        import torch

        return float(torch.load(record)["result"]["steps_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", type=int, default=8)
    parser.add_argument("--level", type=int, default=6, help="icosphere level (6: 81,920 triangles)")
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fit-steps", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="glrast-batch-") as tmp:
        folder = Path(tmp) / "meshes"
        folder.mkdir()
        write_meshes(folder, args.meshes, args.level)
        tris = 20 * 4**args.level
        print(f"{args.meshes} meshes of {tris:,} triangles, {args.views} views at {args.res}², "
              f"CPU ({os.cpu_count()} cores)")  # fmt: skip
        print("| workers | wall (s) | meshes/s | per mesh in its worker (s): first, median of the rest |")
        print("|---:|---:|---:|---|")
        for workers in (1, args.workers):
            wall, per_mesh = time_render(folder, Path(tmp) / f"out{workers}", workers, args.res, args.views)
            rest = sorted(per_mesh[1:]) or [float("nan")]
            median = rest[len(rest) // 2]
            rate = args.meshes / wall
            print(f"| {workers} | {wall:.2f} | {rate:.2f} | {per_mesh[0]:.2f}, {median:.2f} |", flush=True)

    start = time.perf_counter()
    imports, context, modules = (float(x) for x in subprocess.check_output([sys.executable, "-c", STARTUP]).split())
    process = time.perf_counter() - start
    print(f"\nfresh process: {process:.2f} s in all; imports {imports:.2f} s, GL context {context:.2f} s, "
          f"kernel modules from the cache {modules:.2f} s")  # fmt: skip

    one = distributed_fit(1, args.fit_steps)
    two = distributed_fit(2, args.fit_steps)
    print(f"\ndistributed_fit, {args.fit_steps} steps of 8 views: 1 rank {one:.2f} s, 2 ranks {two:.2f} s; "
          f"speed-up {one / two:.2f}x, scaling efficiency {one / (2 * two):.0%}")


if __name__ == "__main__":
    main()

"""Rendering in other processes, for tests/test_processes.py: run as a script
(`python process_jobs.py JOB METHOD`), it renders in this process, then in child
processes started with METHOD (fork, spawn, forkserver), and prints one JSON line
per rendering with its differences from this process's. The functions are
importable by name, as spawn and forkserver children need them to be."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys

import numpy as np
import torch

import glrast as dr

RES = 64  # 4096 pixels: four chunks per launch, so the children's kernels use their thread pool
SHIFTS = (0.0, 0.1, 0.2)


def render(ctx: dr.RasterizeGLContext, shift: float) -> dict[str, np.ndarray]:
    """rasterize -> interpolate -> antialias of one triangle, and the gradients of the
    image's sum to the positions and colours."""
    pos = torch.tensor(
        [[[-0.8 + shift, -0.8, 0.0, 1.0], [0.8, -0.7, 0.2, 1.0], [0.1, 0.8, -0.1, 1.0]]], requires_grad=True
    )
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    col = torch.rand(3, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rast, _ = dr.rasterize(ctx, pos, tri, (RES, RES))
    img, _ = dr.interpolate(col[None], rast, tri)
    img = dr.antialias(img, rast, pos, tri)
    img.sum().backward()
    return {"rast": rast.detach().numpy(), "image": img.detach().numpy(), "pos_grad": pos.grad.numpy(),
            "col_grad": col.grad.numpy()}  # fmt: skip


def child(method: str, shift: float, depth: int, queue) -> None:
    """Render with a context of this process's own and release it, then (depth > 0) start
    a child that does the same."""
    with dr.RasterizeGLContext(device="cpu") as ctx:
        queue.put((shift, render(ctx, shift)))
    if depth > 0:
        grandchild = mp.get_context(method).Process(target=child, args=(method, shift + 0.1, depth - 1, queue))
        grandchild.start()
        grandchild.join()


def use_inherited(ctx: dr.RasterizeGLContext, queue) -> None:
    """Try the parent's context, then release it (which must only forget it)."""
    try:
        render(ctx, 0.0)
        queue.put("rendered with the parent's context")
    except RuntimeError as e:
        ctx.release()
        queue.put(f"{type(e).__name__}: {e}")


class Renders(torch.utils.data.Dataset):
    """Item k: the rendering at SHIFTS[k], with a context per worker process."""

    ctx: dr.RasterizeGLContext | None = None

    def __len__(self) -> int:
        return len(SHIFTS)

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        if Renders.ctx is None:
            Renders.ctx = dr.RasterizeGLContext(device="cpu")
        return render(Renders.ctx, SHIFTS[k])


def differences(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per output, relative to the largest |value| for the gradients
    (their sums run in a thread-dependent order)."""
    out = {}
    for key, value in want.items():
        diff = float(np.abs(np.asarray(got[key]) - value).max())
        out[key] = diff / max(float(np.abs(value).max()), 1e-30) if key.endswith("grad") else diff
    return out


def main(job: str, method: str, release: bool) -> None:
    torch.set_num_threads(2)  # the kernels' thread pool in use before the fork
    ctx = dr.RasterizeGLContext(device="cpu")
    want = {shift: render(ctx, shift) for shift in SHIFTS}
    mpc = mp.get_context(method)
    if job == "inherited":
        queue = mpc.Queue()
        proc = mpc.Process(target=use_inherited, args=(ctx, queue))
        proc.start()
        print(json.dumps({"message": queue.get(timeout=120)}))
        proc.join()
        return
    if release:
        ctx.release()
    if job == "dataloader":
        loader = torch.utils.data.DataLoader(
            Renders(), batch_size=None, num_workers=2, multiprocessing_context=method, timeout=120
        )
        results = [(SHIFTS[k], {key: v.numpy() for key, v in item.items()}) for k, item in enumerate(loader)]
    else:  # a chain: child, grandchild, great-grandchild
        queue = mpc.Queue()
        proc = mpc.Process(target=child, args=(method, 0.0, len(SHIFTS) - 1, queue))
        proc.start()
        results = [queue.get(timeout=120) for _ in SHIFTS]
        proc.join()
    for shift, got in results:
        print(json.dumps({"shift": round(shift, 1), **differences(got, want[round(shift, 1)])}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "release" in sys.argv[3:])

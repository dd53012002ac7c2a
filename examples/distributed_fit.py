"""Fit a mesh's vertex positions and colours to many views, data-parallel across processes.

Every process (rank) has its own GL context on its own device (cuda:LOCAL_RANK, or the
CPU) and renders its share of each step's views; DistributedDataParallel averages the
gradients, so K ranks with B/K views each take exactly the steps one process takes with
B views (torch's DistributedSampler deals the views). The target is a bumpy, coloured
sphere; the fit starts from a grey unit sphere. Rank 0 writes the images and the plot.

    python examples/distributed_fit.py                           # one process
    torchrun --nproc_per_node=2 examples/distributed_fit.py      # two ranks on this machine
    glrast demo distributed --nproc 2                            # the same, started for you
    # several machines: the same command on each, with torchrun's rendezvous flags, e.g.
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=fit1 examples/distributed_fit.py

The backend follows the device: NCCL for CUDA, Gloo for the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # examples/_common.py: output and options shared by the examples
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import glrast as dr
from glrast import camera, mesh


def random_rotations(gen: torch.Generator, n: int) -> torch.Tensor:
    """[n, 4, 4] uniformly distributed rotations (QR of Gaussian matrices, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = q * torch.linalg.det(q)[:, None, None]
    m = torch.eye(4).repeat(n, 1, 1)
    m[:, :3, :3] = q
    return m


def target_radius(direction: torch.Tensor) -> torch.Tensor:  # [..., 3] unit vectors -> [...]
    """The target surface: a sphere with smooth bumps, as its radius in each direction."""
    x, y, z = direction.unbind(-1)
    return 1 + 0.15 * torch.sin(3 * x) * torch.sin(2 * y + 1) + 0.1 * torch.cos(4 * z)


def target_mesh(level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions [V, 3], colours [V, 3], tri [T, 3]) of the target, coloured by direction."""
    sphere, tri = mesh.icosphere(level)
    x, y, z = sphere.unbind(-1)
    colors = 0.5 + 0.4 * torch.stack([torch.sin(2 * x + 1), torch.cos(3 * y), torch.sin(2 * z - 1)], -1)
    return sphere * target_radius(sphere)[:, None], colors, tri


def surface_error(pos: torch.Tensor) -> float:
    """RMS distance, along the ray from the centre, of the vertices to the target surface (vertices
    may slide along the surface without changing the images, so this is the error images can see)."""
    radius = pos.norm(dim=-1)
    return float(((radius - target_radius(pos / radius[:, None])) ** 2).mean().sqrt())


class Blob(torch.nn.Module):
    """A sphere whose vertices move by `offset` and carry `color`; renders antialiased views."""

    def __init__(self, glctx: dr.RasterizeGLContext, sphere: torch.Tensor, tri: torch.Tensor):
        super().__init__()
        self.glctx = glctx
        self.register_buffer("sphere", sphere)
        self.register_buffer("tri", tri)
        self.offset = torch.nn.Parameter(torch.zeros_like(sphere))
        self.color = torch.nn.Parameter(torch.full_like(sphere, 0.5))
        self.proj_view = camera.perspective(35.0, 1.0, 1.0, 10.0) @ camera.look_at((0.0, 0.0, 4.5), (0.0, 0.0, 0.0))

    def forward(self, models: torch.Tensor, res: int) -> torch.Tensor:  # [N, 4, 4] -> [N, res, res, 3]
        return render(self.glctx, self.proj_view, self.sphere + self.offset, self.color, self.tri, models, res)


def render(glctx, proj_view, pos, col, tri, models: torch.Tensor, res: int) -> torch.Tensor:
    clip = camera.transform((proj_view @ models).to(pos.device), pos).contiguous()
    rast, _ = dr.rasterize(glctx, clip, tri, (res, res))
    color, _ = dr.interpolate(col[None], rast, tri)
    return dr.antialias(color, rast, clip, tri)


def laplacian(tri: torch.Tensor, num_verts: int) -> torch.Tensor:
    """Uniform graph Laplacian [V, V] of the mesh: each row gives the vertex minus the mean of its neighbours."""
    t = tri.long().cpu()
    adjacency = torch.zeros(num_verts, num_verts)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        adjacency[t[:, a], t[:, b]] = adjacency[t[:, b], t[:, a]] = 1.0
    return torch.eye(num_verts) - adjacency / adjacency.sum(1, keepdim=True)


def _setup(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun, where
    each rank takes cuda:LOCAL_RANK (or the CPU without CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, _common.pick_device(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), world, dev


def run(steps: int = 300, res: int = 48, batch: int = 8, views: int = 64, level: int = 3, lr: float = 0.01,
        smooth: float = 2.0, display_res: int = 256, out: Path | None = None, device: str | None = None,
        seed: int = 0, record: Path | None = None, quiet: bool = False,
        display: _common.LiveDisplay | None = None) -> dict:  # fmt: skip
    """Fit the blob; `batch` views a step in total, split evenly across the ranks.

    Returns (on every rank) the vertex and colour RMSE to the target at the start and at
    the end, the image losses, the world size, the time of the steps and the whole time. `record`: rank 0 saves the
    parameters and the (averaged) gradients of every step there, for comparisons.
    """
    start = time.perf_counter()
    rank, world, device = _setup(device)
    if batch % world:
        raise ValueError(f"distributed_fit: --batch {batch} must be a multiple of the {world} ranks")
    pos_ref, col_ref, tri = target_mesh(level)
    glctx = dr.RasterizeGLContext(device=device)  # one context per process, on its own device
    blob = Blob(glctx, mesh.icosphere(level)[0], tri).to(device)
    model = DistributedDataParallel(blob) if world > 1 else blob
    lap = laplacian(tri, pos_ref.shape[0]).to(device)
    pos_ref, col_ref, tri = pos_ref.to(device), col_ref.to(device), tri.to(device)

    all_views = random_rotations(torch.Generator().manual_seed(seed), views)
    dataset = TensorDataset(all_views)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch // world, sampler=sampler, drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def errors() -> tuple[float, float]:
        col = blob.color.detach()
        return surface_error((blob.sphere + blob.offset).detach()), float(((col - col_ref) ** 2).mean().sqrt())

    rmse_start, col_start = errors()
    losses, trace = [], []
    loop_start = time.perf_counter()
    step, epoch = 0, 0
    with _common.bar(steps, "distributed_fit", quiet or rank != 0) as progress:
        while step < steps:
            sampler.set_epoch(epoch)
            for (models,) in loader:
                with torch.no_grad():
                    target = render(glctx, blob.proj_view, pos_ref, col_ref, tri, models, res)
                image = model(models, res)
                loss = ((image - target) ** 2).mean() + smooth * (lap @ blob.offset).square().mean()
                opt.zero_grad()
                loss.backward()  # DDP averages the gradients over the ranks here
                if record is not None:
                    trace.append([p.grad.detach().cpu().clone() for p in (blob.offset, blob.color)])
                opt.step()
                reported = loss.detach().clone()
                if world > 1:
                    dist.all_reduce(reported, op=dist.ReduceOp.AVG)
                losses.append(float(reported))
                if display is not None:
                    display.update(target[0], image[0], losses[-1], "loss (mean over ranks)")
                progress.update()
                step += 1
                if step == steps:
                    break
            epoch += 1

    rmse_end, col_end = errors()
    result = {"world_size": world, "surface_rmse_start": rmse_start, "surface_rmse": rmse_end,
              "col_rmse_start": col_start, "col_rmse": col_end, "loss": sum(losses[-10:]) / len(losses[-10:]),
              "steps_s": time.perf_counter() - loop_start, "time_s": time.perf_counter() - start}  # fmt: skip
    if rank == 0 and record is not None:
        torch.save({"grads": trace, "offset": blob.offset.detach().cpu(), "color": blob.color.detach().cpu(),
                    "losses": losses, "result": result}, record)  # fmt: skip
    if rank == 0 and out is not None:
        out = Path(out)
        held_out = random_rotations(torch.Generator().manual_seed(seed + 1), 3)
        start_pos, start_col = blob.sphere, torch.full_like(blob.color, 0.5)
        with torch.no_grad():
            for k in range(3):
                m = held_out[k : k + 1]
                meshes = [(pos_ref, col_ref), (start_pos, start_col), (blob.sphere + blob.offset, blob.color)]
                images = [render(glctx, blob.proj_view, p, c, tri, m, display_res)[0] for p, c in meshes]
                _common.save_images(out / f"view{k}_target_start_result.png", images)
        _common.save_plot(out / "loss.png", {"loss (mean over ranks)": losses}, "loss")
    if world > 1:
        dist.destroy_process_group()
    glctx.release()
    return result


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _common.parser("distributed_fit", __doc__, steps=300, res=48)
    p.add_argument("--batch", type=_common.positive_int, default=8, help="views per step over all ranks (default 8)")
    p.add_argument("--views", type=_common.positive_int, default=64, help="views in the dataset (default 64)")
    p.add_argument("--nproc", type=_common.positive_int, default=None,
                   help="start this many ranks on this machine (through torchrun) instead of here")  # fmt: skip
    p.add_argument("--record", type=Path, default=None, help="rank 0 saves parameters and gradients of every step")
    args = p.parse_args(argv)
    if args.nproc is not None and "WORLD_SIZE" not in os.environ:
        rest = [a for k, a in enumerate(argv) if a != "--nproc" and (k == 0 or argv[k - 1] != "--nproc")]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
        code = subprocess.call([*launcher, str(Path(__file__).resolve()), *rest])
        if code:
            raise SystemExit(code)
        return None
    if args.device is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        p.error("--device: under torchrun every rank uses cuda:LOCAL_RANK (or the CPU without CUDA)")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with _common.LiveDisplay(args.display and rank0, "glrast distributed_fit") as display:  # rank 0's window
        r = run(steps=args.steps, res=args.res, batch=args.batch, views=args.views, out=args.out,
                device=args.device, seed=args.seed, record=args.record, display=display)  # fmt: skip
    if rank0:
        print(f"distributed_fit: {r['world_size']} rank(s), surface RMSE {r['surface_rmse_start']:.3f} -> "
              f"{r['surface_rmse']:.4f}, colour RMSE {r['col_rmse_start']:.3f} -> {r['col_rmse']:.3f}, "
              f"loss {r['loss']:.2e}, {r['steps_s']:.1f} s of steps, {r['time_s']:.1f} s in all")  # fmt: skip
    return r


if __name__ == "__main__":
    main()

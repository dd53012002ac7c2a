"""`glrast render`: meshes to PNGs on headless machines, one mesh or whole folders.

A job is a list of meshes (a file, a folder searched recursively, or a list file
of paths) times a set of cameras (orbit views around each mesh, or OpenCV cameras
from a JSON file). Meshes are rendered by a pool of worker processes (`workers`,
started with spawn, each with its own GL context, reused for every mesh it gets);
under torchrun each rank takes its share (meshes sorted by path, rank r takes every
WORLD_SIZE-th from the r-th), with no communication between ranks.

Every output file is written under a temporary name and renamed into place, and a
mesh's cameras.json is written last, so a killed job leaves no half-written image
and `skip_existing` reruns exactly the meshes that are not complete. A mesh that
cannot be loaded or rendered is recorded with its path and reason while the others
go on; the summary and a JSON log (render_log.json, per rank under torchrun) list
every mesh's outcome.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ._progress import progress_bar

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
LIST_SUFFIXES = (".txt", ".lst")


@dataclass(frozen=True)
class Options:
    """What every mesh of a job is rendered with."""

    res: tuple[int, int] = (512, 512)  # (height, width) of orbit views
    views: int = 8
    fov: float = 40.0  # degrees, vertical
    elevation: float = 20.0  # degrees
    camera: str | None = None  # OpenCV camera file instead of the orbit
    device: str | None = None


# ---------------------------------------------------------------------------
# Cameras (the images come from glrast/shading.py)


def orbit_cameras(views: int, fov: float, elevation: float, width: int, height: int) -> list[Any]:
    """Clip matrices of `views` cameras evenly spaced in azimuth around the unit sphere, looking at its centre."""
    import torch

    from . import camera

    # far enough that the unit sphere fits the narrower field of view, with a margin
    half = math.radians(fov) / 2
    half = min(half, math.atan(math.tan(half) * width / height))
    dist = 1.1 / math.sin(half)
    proj = camera.perspective(fov, width / height, max(dist - 1.5, 0.05 * dist), dist + 1.5)
    el = math.radians(elevation)
    mats = []
    for k in range(views):
        az = 2 * math.pi * k / views
        eye = dist * torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
        mats.append(proj @ camera.look_at(eye, torch.zeros(3)))
    return mats


def read_cameras(path: Path, pos: Any) -> list[tuple[Any, int, int]]:
    """(clip matrix, width, height) per entry of an OpenCV camera file (see `glrast render --help`)."""
    import torch

    from . import camera

    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON camera file ({e})") from None
    entries = data if isinstance(data, list) else [data]
    out = []
    for k, cam in enumerate(entries):
        try:
            K, R, t = (torch.tensor(cam[key], dtype=torch.float64) for key in ("K", "R", "t"))
            width, height = int(cam["width"]), int(cam["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: camera {k} needs K (3x3), R (3x3), t (3), width and height ({e})") from e
        depth = (pos.double().cpu() @ R.T + t)[:, 2]
        near = cam.get("near") or max(float(depth.min()) * 0.9, float(depth.max()) * 1e-3, 1e-6)
        far = cam.get("far") or max(float(depth.max()) * 1.1, 2 * near)
        out.append((camera.from_opencv(K, R, t, width, height, near, far, flip_y=True).float(), width, height))
    return out


def cameras_for(m: Any, options: Options) -> list[tuple[Any, int, int]]:
    """(clip matrix, width, height) of every view of mesh `m`: the camera file's, or an orbit
    around the mesh's bounding sphere."""
    from .shading import unit_sphere_transform

    if options.camera:
        return read_cameras(Path(options.camera), m.pos)
    height, width = options.res
    # orbit cameras around the mesh's bounding sphere: centre it and scale it to radius 1
    to_unit, _, _ = unit_sphere_transform(m.pos)
    orbit = orbit_cameras(options.views, options.fov, options.elevation, width, height)
    return [(mvp @ to_unit, width, height) for mvp in orbit]


# ---------------------------------------------------------------------------
# One mesh


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) to a temporary name in path's folder, then rename it to path: readers and a
    rerun after a kill see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_mesh(glctx: Any, mesh_path: Path, out: Path, options: Options) -> tuple[int, int]:
    """Render every view of one mesh into out/view_NNN.png and out/cameras.json (written last);
    returns (views, triangles)."""
    import numpy as np
    from PIL import Image

    from . import camera, mesh
    from .shading import shade

    m = mesh.load(mesh_path, device=glctx.device)
    cams = cameras_for(m, options)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    records = []
    for k, (mvp, width, height) in enumerate(cams):
        K, R, t, near, far = camera.to_opencv(mvp.double(), width, height, flip_y=True)
        rgba = shade(glctx, m, mvp, (-R.T @ t).float(), height, width)
        pixels = (rgba.flip(0).cpu().numpy() * 255 + 0.5).astype(np.uint8)  # row 0 of a PNG is the top
        write_atomically(out / f"view_{k:03d}.png", lambda tmp, p=pixels: Image.fromarray(p, "RGBA").save(tmp, "PNG"))
        records.append({"width": width, "height": height, "K": K.tolist(), "R": R.tolist(), "t": t.tolist(),
                        "near": float(near), "far": float(far)})  # fmt: skip
    write_atomically(out / "cameras.json", lambda tmp: tmp.write_text(json.dumps(records, indent=1)))
    return len(cams), int(m.tri.shape[0])


# ---------------------------------------------------------------------------
# Jobs


def find_meshes(source: Path) -> list[tuple[Path, Path]]:
    """(mesh file, its output folder relative to the job's output) for a mesh file (output: the
    job's folder itself), a folder (every mesh file below it, recursively; output: its path
    relative to the folder, without suffix) or a list file (one path a line, relative to the
    list's folder; '#' starts a comment; output: the path as listed without suffix, or only its
    name for an absolute path or one that leaves the list's folder)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
        entries = [(p, p.relative_to(source).with_suffix("")) for p in files]
    elif source.suffix.lower() in LIST_SUFFIXES:
        entries = []
        for line in source.read_text().splitlines():
            listed = Path(line.split("#", 1)[0].strip())
            if str(listed) == ".":
                continue
            inside = not listed.is_absolute() and ".." not in listed.parts
            entries.append((source.parent / listed, listed.with_suffix("") if inside else Path(listed.stem)))
    else:
        return [(source, Path("."))]
    seen: dict[Path, Path] = {}
    for path, rel in entries:
        if rel in seen:
            raise ValueError(f"{source}: {seen[rel]} and {path} would both be rendered into {rel}/")
        seen[rel] = path
    return entries


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """The items of rank `rank` of `world`: every world-th, from the rank-th."""
    return list(items[rank::world])


@dataclass
class Outcome:
    """What happened to one mesh (a line of the JSON log)."""

    mesh: str
    out: str
    status: str  # "rendered", "skipped" (complete from an earlier run) or "failed"
    views: int = 0
    triangles: int = 0
    seconds: float = 0.0
    error: str | None = None


_worker_context: Any = None


def _worker_init(device: str | None) -> None:
    """In each worker process: one GL context for all the meshes it renders."""
    global _worker_context
    import glrast as dr

    from .context import resolve_device

    if multiprocessing.parent_process() is not None:  # a pool worker: the parent handles interrupts
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_context = dr.RasterizeGLContext(device=resolve_device(device, "glrast render --device"))


def _render_one(mesh_path: str, out: str, options: Options, catch: bool = True) -> Outcome:
    """Render one mesh with this process's context; a failure becomes the outcome's reason
    (catch) or propagates (a job of one mesh file, whose failure is the job's)."""
    start = time.perf_counter()
    try:
        views, triangles = render_mesh(_worker_context, Path(mesh_path), Path(out), options)
    except Exception as e:  # reported in the outcome; the job goes on with the next mesh
        if not catch:
            raise
        reason = f"{type(e).__name__}: {' '.join(str(e).split())}"
        return Outcome(mesh_path, out, "failed", seconds=time.perf_counter() - start, error=reason)
    return Outcome(mesh_path, out, "rendered", views, triangles, time.perf_counter() - start)


def _result(future: concurrent.futures.Future, task: tuple[str, str]) -> Outcome:
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool as e:
        return Outcome(*task, "failed", error=f"the worker process died ({e})")


def _render_all(tasks: list[tuple[str, str]], options: Options, workers: int, catch: bool,
                record: Callable[[Outcome], None]) -> None:  # fmt: skip
    """Render the tasks, in this process (workers = 1) or in a spawned pool, calling `record` with
    each outcome. Interrupted, the pool finishes the meshes it has started (their outcomes are
    recorded too) and cancels the rest."""
    if workers == 1:
        _worker_init(options.device)
        try:
            for mesh_path, out in tasks:
                record(_render_one(mesh_path, out, options, catch))
        finally:
            _worker_context.release()
        return
    context = multiprocessing.get_context("spawn")  # fork would copy this process's GL and thread state
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(options.device,)
    ) as pool:
        futures = {pool.submit(_render_one, mesh_path, out, options): (mesh_path, out) for mesh_path, out in tasks}
        pending = set(futures)
        try:
            for future in concurrent.futures.as_completed(futures):
                pending.discard(future)
                record(_result(future, futures[future]))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            for future in pending:
                if future.done() and not future.cancelled():
                    record(_result(future, futures[future]))
            raise


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(source: Path, out: Path, options: Options, workers: int = 1, skip_existing: bool = False,
        log: Path | None = None, quiet: bool = False) -> list[Outcome]:  # fmt: skip
    """Render every mesh of `source` (this rank's share under torchrun) into `out`; returns the
    outcomes, also written as JSON to `log` (default out/render_log.json, or
    render_log.rank<R>.json under torchrun). SIGTERM stops the job like Ctrl-C: the meshes
    done so far are logged, nothing half-written is left. A job of one mesh file raises its
    failure instead of recording it."""
    from .context import resolve_device

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if options.device is None and world > 1:
        import torch

        if torch.cuda.is_available():  # one GPU per rank, as torchrun numbers them
            options = replace(options, device=f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    resolve_device(options.device, "glrast render --device")  # a bad device fails here, before any worker starts
    catch = source.is_dir() or source.suffix.lower() in LIST_SUFFIXES
    entries = shard(find_meshes(source), rank, world)
    if log is None:
        log = out / ("render_log.json" if world == 1 else f"render_log.rank{rank}.json")
    outcomes, tasks = [], []
    for mesh_path, rel in entries:
        target = out / rel
        if skip_existing and (target / "cameras.json").is_file():
            outcomes.append(Outcome(str(mesh_path), str(target), "skipped"))
        else:
            tasks.append((str(mesh_path), str(target)))
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    desc = "glrast render" + (f" (rank {rank}/{world})" if world > 1 else "")
    try:
        with progress_bar(len(tasks), desc, quiet) as bar:

            def record(outcome: Outcome) -> None:
                outcomes.append(outcome)
                bar.update()

            _render_all(tasks, options, max(1, min(workers, len(tasks))), catch, record)
    finally:
        signal.signal(signal.SIGTERM, previous)
        order = {str(p): k for k, (p, _) in enumerate(entries)}
        outcomes.sort(key=lambda o: order.get(o.mesh, len(order)))
        write_atomically(log, lambda tmp: tmp.write_text(json.dumps([asdict(o) for o in outcomes], indent=1)))
    return outcomes


def summary(outcomes: Sequence[Outcome], out: Path, seconds: float) -> str:
    """The lines `glrast render` prints at the end: counts, then one line per failed mesh."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("rendered", "skipped", "failed")}
    views = sum(o.views for o in outcomes)
    lines = [f"glrast render: {counts['rendered']} mesh(es) rendered ({views} views), {counts['skipped']} skipped "
             f"(complete), {counts['failed']} failed -> {out}, {seconds:.1f} s"]  # fmt: skip
    lines += [f"  failed: {o.mesh}: {o.error}" for o in outcomes if o.status == "failed"]
    return "\n".join(lines)


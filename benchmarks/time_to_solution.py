"""Time to solution: the cube example's inverse problem fitted by glrast and by Mitsuba 3.

The problem is examples/cube.py's: the eight vertex positions and colours of a cube, from a
start displaced by uniform noise in [-0.5, 0.5], fitted to renders of the reference cube from
4 random views a step (MSE over the images), Adam with lr 0.03 decaying to 1/100 over
--decay-steps steps (then held). Both sides get the same reference and initial mesh, the same
sequence of views, the same camera and the same Adam settings through one .npz file; each
renders its own reference images every step, as the example does. glrast renders rasterize →
interpolate → antialias (examples/cube.py's Renderer); Mitsuba (llvm_ad_rgb) ray-traces the
cube with its `prb_projective` integrator (benchmarks/time_to_solution_mitsuba.py, run with
the peers' Python in a process of its own: the libraries never share one).

Reported per resolution and library: steps and wall time until the vertex RMSE is 10× lower
than at the start (the clock starts at the first step, after the context or scene is made;
it includes compilation not already in the kernel caches), and the RMSE after --budget
seconds. Each (resolution, library) runs in a fresh process, the two alternating.

    python benchmarks/time_to_solution.py --table             # 16² … 256², markdown table
    python benchmarks/time_to_solution.py --res 16,64 --budget 20
    python benchmarks/time_to_solution.py --out tts.jsonl   # then: --load tts.jsonl --budget 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _fit_record import fit_record, rss_mb
from compare import PEER_PYTHONS, find_peer_python

HERE = Path(__file__).resolve().parent
RESOLUTIONS = [16, 32, 64, 128, 256]
# examples/cube.py's camera, optimizer and start
FOVY, EYE, NEAR, FAR = 30.0, (0.0, 0.0, 7.0), 1.0, 20.0
LR, BETAS, EPS, NOISE, BATCH = 0.03, (0.9, 0.999), 1e-8, 0.5, 4


def write_problem(path: Path, seed: int, decay_steps: int, views: int) -> None:
    """The cube problem as examples/cube.py draws it from `seed`, with the first `views` steps'
    view rotations ([views, 4, 4, 4] model matrices; a run longer than that cycles through them)."""
    import torch

    sys.path.insert(0, str(HERE.parent / "examples"))
    import cube

    from glrast import mesh

    gen = torch.Generator().manual_seed(seed)
    pos_ref, tri = mesh.cube()
    # the example's order of draws: reference colours, start positions, start colours, then views
    col_ref = torch.rand(8, 3, generator=gen)
    pos_init = pos_ref + NOISE * (2 * torch.rand(8, 3, generator=gen) - 1)
    col_init = torch.rand(8, 3, generator=gen)
    models = torch.stack([cube.random_rotations(gen, BATCH) for _ in range(views)])
    np.savez(
        path,
        pos_ref=pos_ref.numpy(), tri=tri.numpy(), col_ref=col_ref.numpy(), pos_init=pos_init.numpy(),
        col_init=col_init.numpy(), views=models.numpy(), fovy=FOVY, eye=np.array(EYE), near=NEAR, far=FAR,
        lr=LR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, decay_steps=decay_steps,
    )  # fmt: skip


def fit_glrast(problem_path: str, res: int, budget: float, max_steps: int, device: str = "cpu") -> dict:
    """glrast's side: the fit of the problem in `problem_path` at res², for `budget` seconds or
    `max_steps` steps; returns the record (the same keys as the Mitsuba side's)."""
    import torch

    sys.path.insert(0, str(HERE.parent / "examples"))
    import cube

    import glrast as dr
    from glrast import camera

    rss_import = rss_mb()
    t_setup = time.perf_counter()
    p = {k: torch.from_numpy(v) for k, v in np.load(problem_path).items()}
    dev = torch.device(device)
    glctx = dr.RasterizeGLContext(device=dev)
    render = cube.Renderer(glctx, p["tri"].to(dev))
    expected = camera.perspective(float(p["fovy"]), 1.0, float(p["near"]), float(p["far"])) @ camera.look_at(
        tuple(p["eye"].tolist()), (0.0, 0.0, 0.0)
    )
    if not torch.allclose(render.proj_view, expected):
        raise RuntimeError("examples/cube.py's camera is not the problem file's: update FOVY, EYE, NEAR, FAR")
    pos_ref, col_ref = p["pos_ref"].to(dev), p["col_ref"].to(dev)
    pos = p["pos_init"].to(dev).clone().requires_grad_()
    col = p["col_init"].to(dev).clone().requires_grad_()
    decay_steps = int(p["decay_steps"])
    opt = torch.optim.Adam(
        [pos, col], lr=float(p["lr"]), betas=(float(p["beta_1"]), float(p["beta_2"])), eps=float(p["epsilon"])
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 100.0 ** (-min(k, decay_steps) / decay_steps))
    views = p["views"]
    setup_s = time.perf_counter() - t_setup

    def pos_rmse() -> float:
        return float(((pos.detach() - pos_ref) ** 2).mean().sqrt())

    rmse_start = pos_rmse()
    trace, step_times = [], []
    reached = None
    t0 = time.perf_counter()
    step = 0
    while True:
        ts = time.perf_counter()
        models = views[step % len(views)]
        with torch.no_grad():
            target = render(pos_ref, col_ref, models, res)
        loss = ((render(pos, col, models, res) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        rmse = pos_rmse()  # reads the new positions: the step has run to completion (also on CUDA)
        now = time.perf_counter()
        step_times.append(now - ts)
        step += 1
        trace.append((step, round(now - t0, 4), rmse, float(loss.detach())))
        if reached is None and rmse <= rmse_start / 10:
            reached = (step, now - t0)
        if now - t0 >= budget or step >= max_steps:
            break
    glctx.release()
    return {
        "peer": "glrast",
        "version": f"glrast {dr.__version__}, torch {torch.__version__}",
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "res": res,
        **fit_record(setup_s, step_times, rmse_start, reached, step, trace, rss_import),
    }


def run_side(cmd: list[str], timeout: float) -> dict:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    lines = [ln.split("RESULT ", 1)[1] for ln in proc.stdout.splitlines() if "RESULT " in ln]
    return json.loads(lines[-1]) if lines else {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def table(records: list[dict], budget: float) -> str:
    """Markdown: one row per resolution, glrast beside Mitsuba, and the speed-up to the target."""
    by = {(r["peer"], r["res"]): r for r in records}
    rows = [
        "| res | glrast steps · s to 10× | Mitsuba steps · s to 10× | speed-up | glrast ms/step | "
        f"Mitsuba ms/step | RMSE after {budget:g} s: glrast · Mitsuba |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in sorted({r["res"] for r in records}):
        a, b = by.get(("glrast", res), {}), by.get(("mitsuba", res), {})

        def reach(r: dict) -> str:
            if "error" in r or not r:
                return "error" if r else "–"
            if r["steps_to_target"] is None:
                return f"not in {r['steps']} steps"
            return f"{r['steps_to_target']} · {r['time_to_target_s']:.2f}"

        ta, tb = a.get("time_to_target_s"), b.get("time_to_target_s")
        up = "–"
        if ta and tb:
            up = f"{tb / ta:.1f}×"
        elif ta and b.get("steps_to_target", 0) is None:  # Mitsuba ran out of time: a lower bound
            up = f"> {b['elapsed_s'] / ta:.1f}×"
        ms = [fmt(r.get("median_step_s") and 1e3 * r["median_step_s"], ".1f") for r in (a, b)]
        final = " · ".join(fmt(r.get("rmse_final"), ".2e") for r in (a, b))
        rows.append(f"| {res}² | {reach(a)} | {reach(b)} | {up} | {ms[0]} | {ms[1]} | {final} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", default=",".join(map(str, RESOLUTIONS)), help="comma-separated resolutions")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of fitting per run (default 30)")
    parser.add_argument("--max-steps", type=int, default=20000, help="stop a run after this many steps")
    parser.add_argument("--decay-steps", type=int, default=1000, help="steps over which lr decays to 1/100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", default="glrast,mitsuba", help="which sides run (comma-separated)")
    parser.add_argument("--peer-python", default="", help="a Python with mitsuba (default: looks for a peers venv)")
    parser.add_argument("--spp", type=int, default=1, help="Mitsuba's rays per pixel (default 1)")
    parser.add_argument("--device", default="cpu", help="glrast's torch device (default cpu)")
    parser.add_argument("--out", default="", help="append every record to this JSON-lines file")
    parser.add_argument("--table", action="store_true", help="print the markdown table at the end")
    parser.add_argument("--load", default="", help="print the table of this JSON-lines file instead of running")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # a problem file: run glrast's side here
    args = parser.parse_args()
    res_list = [int(r) for r in args.res.split(",")]
    if args.worker:
        rec = fit_glrast(args.worker, res_list[0], args.budget, args.max_steps, args.device)
        print("RESULT " + json.dumps(rec), flush=True)
        return
    if args.load:
        with open(args.load) as fh:
            print(table([json.loads(ln) for ln in fh if ln.strip()], args.budget))
        return
    peers = args.peers.split(",")
    peer_python = find_peer_python(args.peer_python)
    if "mitsuba" in peers and peer_python is None:
        print(f"Mitsuba: no Python found ({args.peer_python or ', '.join(map(str, PEER_PYTHONS))}): glrast runs alone")
        peers.remove("mitsuba")
    records = []
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        problem = Path(tmp) / "cube_problem.npz"
        write_problem(problem, args.seed, args.decay_steps, min(args.max_steps, 5000))
        common = ["--budget", str(args.budget), "--max-steps", str(args.max_steps)]
        for i, res in enumerate(res_list):
            cmds = {
                "glrast": [sys.executable, __file__, "--worker", str(problem), "--res", str(res), "--device",
                           args.device, *common],
                "mitsuba": [str(peer_python), str(HERE / "time_to_solution_mitsuba.py"), "--problem", str(problem),
                            "--res", str(res), "--spp", str(args.spp), *common],
            }  # fmt: skip
            order = [p for p in ("glrast", "mitsuba") if p in peers]
            for peer in order[::-1] if i % 2 else order:
                rec = run_side(cmds[peer], timeout=args.budget * 3 + 300)
                rec.update(peer=peer, res=res)
                records.append(rec)
                brief = {k: v for k, v in rec.items() if k != "trace"}
                print(json.dumps(brief), file=sys.stderr, flush=True)
                if args.out:
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
    if args.table:
        print(table(records, args.budget))


if __name__ == "__main__":
    main()

"""Mitsuba 3's side of benchmarks/time_to_solution.py: the cube fit, run by a Python that has
mitsuba and drjit (numpy only besides; no torch, no glrast), in a process of its own.

The problem (meshes, views, camera, Adam settings) comes in the .npz that time_to_solution.py
writes. How it maps onto Mitsuba, a ray tracer:
  * the cube is an in-memory mi.Mesh with a per-vertex attribute 'vertex_color'; it is an area
    emitter whose radiance is that attribute and its BSDF is black, so a pixel is the
    interpolated vertex colour of the surface its primary ray hits (background 0): the same
    image as rasterize + interpolate, with Mitsuba's box-filtered pixel integral in place of
    glrast's antialias;
  * a view rotates the mesh (the vertex positions are set to R @ p) and leaves the camera alone,
    as the glrast side does with its model matrices;
  * integrator 'prb_projective' (max_depth 1, no indirect visibility): colour gradients and
    vertex-position gradients with their silhouette (primary visibility) terms;
  * 'independent' sampler, --spp rays per pixel (default 1, glrast's one sample per pixel);
    the reference images are rendered with other seeds than the estimate, so that their noise
    is independent.
Each view is rendered and differentiated before the next one moves the mesh (Mitsuba's
path-replay backward traces the scene as it is when the backward runs); the gradients of the
four views add up on the optimizer's variables, then one Adam step.

Prints one line 'RESULT {json}' (time_to_solution.run_fit's record).
"""

from __future__ import annotations

import argparse
import json
import time

import drjit as dr
import mitsuba as mi
import numpy as np
from _fit_record import fit_record, rss_mb


def build_scene(problem: dict, res: int, spp: int) -> mi.Scene:
    props = mi.Properties()
    props["bsdf"] = mi.load_dict({"type": "diffuse", "reflectance": 0.0})
    props["emitter"] = mi.load_dict({"type": "area", "radiance": {"type": "mesh_attribute", "name": "vertex_color"}})
    tri = problem["tri"].astype(np.uint32)
    mesh = mi.Mesh("cube", len(problem["pos_ref"]), len(tri), props=props, has_vertex_normals=False,
                   has_vertex_texcoords=False)  # fmt: skip
    mesh.add_attribute("vertex_color", 3, mi.Float(problem["col_ref"].ravel()))
    mesh_params = mi.traverse(mesh)
    mesh_params["vertex_positions"] = mi.Float(problem["pos_ref"].ravel())
    mesh_params["faces"] = mi.UInt32(tri.ravel())
    mesh_params.update()
    eye = [float(x) for x in problem["eye"]]
    return mi.load_dict({
        "type": "scene",
        "integrator": {"type": "prb_projective", "max_depth": 1, "sppi": 0},
        "sensor": {
            "type": "perspective", "fov": float(problem["fovy"]), "fov_axis": "y",
            "near_clip": float(problem["near"]), "far_clip": float(problem["far"]),
            "to_world": mi.ScalarTransform4f().look_at(origin=eye, target=[0, 0, 0], up=[0, 1, 0]),
            "film": {"type": "hdrfilm", "width": res, "height": res, "pixel_format": "rgb", "rfilter": {"type": "box"}},
            "sampler": {"type": "independent", "sample_count": spp},
        },
        "cube": mesh,
    })  # fmt: skip


def rotated(rot: np.ndarray, p: mi.Point3f) -> mi.Float:
    """R @ p for every vertex, flattened as Mitsuba stores vertex positions (differentiable in p)."""
    r = [[float(x) for x in row] for row in rot[:3, :3]]
    q = mi.Point3f(*(r[i][0] * p.x + r[i][1] * p.y + r[i][2] * p.z for i in range(3)))
    return dr.ravel(q)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", required=True, help=".npz written by time_to_solution.py")
    ap.add_argument("--res", type=int, required=True)
    ap.add_argument("--budget", type=float, required=True, help="seconds of fitting")
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("--spp", type=int, default=1)
    a = ap.parse_args()
    mi.set_variant("llvm_ad_rgb")
    # quiet: prb_projective warns that moving shapes could leave the image (film 'sample_border'
    # would follow them out); the reference cube stays inside it in every view (its corners reach
    # 95% of the half-width), and a start vertex that leans out has no silhouette gradient
    # there in glrast either
    mi.set_log_level(mi.LogLevel.Error)
    rss_import = rss_mb()
    t_setup = time.perf_counter()
    problem = dict(np.load(a.problem))
    scene = build_scene(problem, a.res, a.spp)
    params = mi.traverse(scene)
    kpos, kcol = "cube.vertex_positions", "cube.vertex_color"
    pos_ref = dr.unravel(mi.Point3f, mi.Float(problem["pos_ref"].ravel()))
    col_ref = mi.Float(problem["col_ref"].ravel())
    pos_ref_np = problem["pos_ref"].astype(np.float64)
    lr0, decay_steps = float(problem["lr"]), int(problem["decay_steps"])
    opt = mi.ad.Adam(lr=lr0, beta_1=float(problem["beta_1"]), beta_2=float(problem["beta_2"]),
                     epsilon=float(problem["epsilon"]))  # fmt: skip
    opt["pos"] = mi.Float(problem["pos_init"].ravel())
    opt["col"] = mi.Float(problem["col_init"].ravel())
    views = problem["views"]
    setup_s = time.perf_counter() - t_setup

    def pos_rmse() -> float:
        p = np.array(opt["pos"], dtype=np.float64).reshape(-1, 3)
        return float(np.sqrt(((p - pos_ref_np) ** 2).mean()))

    rmse_start = pos_rmse()
    trace, step_times = [], []
    reached = None
    t0 = time.perf_counter()
    step = 0
    while True:
        ts = time.perf_counter()
        opt.set_learning_rate(lr0 * 100.0 ** (-min(step, decay_steps) / decay_steps))
        models = views[step % len(views)]
        loss_sum = 0.0
        for k, model in enumerate(models):
            seed = 2 * (step * len(models) + k)
            params[kpos], params[kcol] = rotated(model, pos_ref), col_ref
            params.update()
            target = mi.render(scene, spp=a.spp, seed=seed)
            dr.eval(target)
            p = dr.unravel(mi.Point3f, opt["pos"])
            params[kpos], params[kcol] = rotated(model, p), opt["col"]
            params.update()
            image = mi.render(scene, params, spp=a.spp, seed=seed + 1)
            loss = dr.mean(dr.square(image - target), axis=None) / len(models)
            dr.backward(loss)
            loss_sum += float(loss.array[0])
        opt.step()
        rmse = pos_rmse()  # reads the new positions back: the step has run to completion
        now = time.perf_counter()
        step_times.append(now - ts)
        step += 1
        trace.append((step, round(now - t0, 4), rmse, loss_sum))
        if reached is None and rmse <= rmse_start / 10:
            reached = (step, now - t0)
        if now - t0 >= a.budget or step >= a.max_steps:
            break
    rec = {
        "peer": "mitsuba",
        "version": f"mitsuba {mi.__version__}, drjit {dr.__version__}",
        "integrator": "prb_projective",
        "spp": a.spp,
        "threads": dr.thread_count(),
        "res": a.res,
        **fit_record(setup_s, step_times, rmse_start, reached, step, trace, rss_import),
    }
    print("RESULT " + json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

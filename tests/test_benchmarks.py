"""The standard-job benchmark computes the shared job and reports what the comparison reads."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glrast import glcalls, kernels, mesh

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import standard_job  # noqa: E402

# sha256 of the float32 vertices then int32 faces of the standard job's 5,120-triangle
# icosphere, as the peers' benchmarks generate it
ICOSPHERE_L4_SHA256 = "b71608a411c9264db4a90306a7fc368a2bf64252192900991acacf985f8cd565"


@pytest.mark.parametrize("mode", standard_job.MODES)
def test_standard_job_record(mode):
    rec = standard_job.run("5k", 64, mode, runs=2, min_total_s=0.0)
    assert rec["peer"] == "glrast" and rec["mode"] == mode and rec["tris"] == 5120 and rec["verts"] == 2562
    assert rec["res"] == 64 and rec["runs"] == 2
    assert 0 < rec["min_s"] <= rec["median_s"] <= rec["max_s"] and rec["first_s"] > 0 and rec["second_s"] > 0
    assert rec["peak_rss_mb"] > 0
    # the unit sphere at distance 3 with a 45 degree field of view covers 57% of the image;
    # antialias also tints the background pixels along the silhouette (about 2% at 64x64)
    assert rec["coverage"] == pytest.approx(0.57 if mode != "vis" else 0.59, abs=0.01)
    assert 0 < rec["loss"] < 1
    assert ("grad_col_l1" in rec) == (mode in ("col", "pos", "vis"))
    assert ("grad_pos_l1" in rec) == (mode in ("pos", "vis"))
    if mode in ("col", "pos", "vis"):
        assert rec["grad_col_l1"] > 0
    if mode in ("pos", "vis"):
        assert rec["grad_pos_l1"] > 0


def test_command_line_result_line_and_breakdown(tmp_path):
    saved = tmp_path / "image.npy"
    cmd = [sys.executable, str(BENCHMARKS / "standard_job.py"), "--tris", "5k", "--res", "64", "--mode", "vis"]
    cmd += ["--runs", "1", "--device", "cpu", "--breakdown", "1", "--save", str(saved)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1
    rec = json.loads(lines[0][len("RESULT ") :])
    for key in (
        "median_s",
        "first_s",
        "second_s",
        "min_s",
        "max_s",
        "runs",
        "peak_rss_mb",
        "rss_after_import_mb",
        "loss",
    ):
        assert key in rec
    assert rec["peer"] == "glrast" and rec["grad_pos_l1"] > 0
    stages = rec["breakdown_ms"]
    for stage in ("rasterize", "interpolate", "antialias", "loss backward", "antialias backward"):
        assert stage in stages
    for stage in ("interpolate backward", "rasterize backward", "transform backward"):
        assert stage in stages
    image = np.load(saved)
    # row 0 is the top of the image; the sphere is centred, so the corners are background
    assert image.shape == (64, 64, 3) and image[0, 0].sum() == 0 and image[32, 32].sum() > 0


def test_calls_time_each_kernel_and_gl_call():
    """--calls: the record has each launched kernel and the GL draw and readback, per step, and
    the library's functions are restored afterwards."""
    launch, draw = kernels.HostModule.launch, glcalls.draw_triangles
    rec = standard_job.run("5k", 64, "vis", runs=1, min_total_s=0.0, calls=2)
    calls = rec["calls_ms"]
    for name in ("raster_fwd", "interpolate_fwd", "antialias_blend", "raster_grad", "gl draw", "gl readback"):
        assert calls[name] > 0, name
    assert kernels.HostModule.launch is launch and glcalls.draw_triangles is draw
    with pytest.raises(ValueError, match="device is cuda"):
        standard_job.run("5k", 64, "fwd", device="cuda", calls=1)


def test_same_mesh_as_the_peers():
    verts, tri = mesh.icosphere(4)
    digest = hashlib.sha256(verts.numpy().tobytes() + tri.numpy().tobytes()).hexdigest()
    assert digest == ICOSPHERE_L4_SHA256


def test_target_image():
    image = standard_job.target_image(8).numpy()
    assert image.shape == (8, 8, 3) and image.dtype == np.float32
    # pixel (row 1, column 2): centre x = 2.5/8, y = 1.5/8 with y growing downwards (row 0 = top)
    assert image[1, 2] == pytest.approx([0.5 + 0.4 * np.sin(6 * 2.5 / 8), 0.5 + 0.4 * np.cos(5 * 1.5 / 8), 0.3])


def test_loss_matches_the_peers():
    # Mitsuba 3 and Warp both give 0.17235 for the static forward at 5k/256^2 (the same pixels)
    rec = standard_job.run("5k", 256, "fwd", runs=1, min_total_s=0.0)
    assert rec["loss"] == pytest.approx(0.172354, abs=2e-6)


def test_time_to_solution_problem_and_glrast_fit(tmp_path):
    import time_to_solution

    problem = tmp_path / "cube.npz"
    time_to_solution.write_problem(problem, seed=0, decay_steps=1000, views=50)
    p = np.load(problem)
    assert p["views"].shape == (50, 4, 4, 4) and p["tri"].shape == (12, 3) and p["pos_ref"].shape == (8, 3)
    rot = p["views"][..., :3, :3].astype(np.float64)
    assert np.allclose(rot @ rot.transpose(0, 1, 3, 2), np.eye(3), atol=1e-5)  # proper rotations
    assert np.allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    assert np.abs(p["pos_init"] - p["pos_ref"]).max() <= 0.5
    # the example's fit at 16^2 gets the vertex error 10x lower within a few dozen steps
    rec = time_to_solution.fit_glrast(str(problem), res=16, budget=60.0, max_steps=60)
    assert rec["rmse_start"] == pytest.approx(np.sqrt(((p["pos_init"] - p["pos_ref"]) ** 2).mean()), rel=1e-6)
    assert rec["steps_to_target"] is not None and rec["steps_to_target"] < 60
    assert rec["rmse_final"] < rec["rmse_start"] / 10 and rec["steps"] == 60
    assert 0 < rec["time_to_target_s"] <= rec["elapsed_s"] and rec["peak_rss_mb"] >= rec["rss_after_import_mb"]
    steps, times, rmses, _ = zip(*rec["trace"])
    assert list(steps) == sorted(steps) and list(times) == sorted(times)
    reached = next(s for s, e in zip(steps, rmses) if e <= rec["rmse_start"] / 10)
    assert reached == rec["steps_to_target"]
    theirs = {"peer": "mitsuba", "res": 16, "steps_to_target": None, "steps": 7, "elapsed_s": 3.5,
              "median_step_s": 0.5, "rmse_final": 0.2}  # fmt: skip
    row = time_to_solution.table([rec, theirs], budget=60.0).splitlines()[2]
    # Mitsuba ran out of time: the speed-up is a lower bound, its time over glrast's time to the target
    assert row.startswith("| 16² |") and "not in 7 steps" in row and "500.0" in row
    assert f"> {3.5 / rec['time_to_target_s']:.1f}×" in row

"""The examples at reduced size: each must reach its acceptance figure; and the
`glrast demo / render / bench` commands.

The examples live in examples/ at the repository root (scripts, not part of the
package); they are loaded from there the way `glrast demo` loads them.
"""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from xserver import wait_for

from glrast.cli import load_example


@pytest.fixture
def example():
    return load_example


def test_triangle(example, glctx, device, tmp_path):
    result = example("triangle").run(res=64, out=tmp_path, device=str(device), glctx=glctx)
    # pixel centres inside the triangle (-0.8,-0.8), (0.8,-0.8), (0,0.8): |x| < (0.8 - y) / 2, y > -0.8
    c = (np.arange(64) + 0.5) / 32 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    assert result["coverage"] == np.mean((np.abs(x) < (0.8 - y) / 2) & (y > -0.8))
    png = np.asarray(Image.open(tmp_path / "triangle.png"))
    assert png.shape == (64, 64, 3)
    # upright: the apex (blue vertex) is near the top, the red vertex bottom left, green bottom right
    assert png[10, 32].argmax() == 2 and png[56, 10].argmax() == 0 and png[56, 54].argmax() == 1
    assert png[5, 5].max() == 0


def test_earth_mipmaps_beat_no_mipmaps(example, glctx, device, tmp_path):
    r = example("earth").run(steps=80, res=32, tex_res=256, train_views=16, test_views=4, out=tmp_path,
                             device=str(device), glctx=glctx, quiet=True)  # fmt: skip
    assert r["psnr_mip"] >= r["psnr_nomip"] + 2.0, r
    assert r["psnr_mip"] > 25.0, r
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "heldout0_target_mip_nomip.png").is_file()


def test_envphong_reproduces_heldout_views(example, glctx, device, tmp_path):
    r = example("envphong").run(steps=250, res=48, env_res=16, train_views=32, test_views=4, level=3,
                                out=tmp_path, device=str(device), glctx=glctx, quiet=True)  # fmt: skip
    assert r["psnr"] >= 30.0, r
    assert abs(r["phong"]["kd"][0] - 0.25) < 0.05, r
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "envmap_learned.png").is_file()


def test_cli_demo_runs_an_example(tmp_path, capsys):
    from glrast.cli import main

    assert main(["demo", "triangle", "--out", str(tmp_path), "--res", "32", "--device", "cpu"]) == 0
    assert "triangle: 32x32" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "triangle.png")).shape == (32, 32, 3)
    with pytest.raises(SystemExit):
        main(["demo", "nosuchexample"])
    for bad in (["cube", "--steps", "0"], ["earth", "--res", "-4"], ["pose", "--steps", "1"]):
        with pytest.raises(SystemExit):
            main(["demo", *bad])
    assert "must be >= " in capsys.readouterr().err


PLY = "\n".join([
    "ply", "format ascii 1.0", "element vertex 4",
    "property float x", "property float y", "property float z",
    "property uchar red", "property uchar green", "property uchar blue",
    "element face 4", "property list uchar int vertex_indices", "end_header",
    "10 20 30 255 0 0", "12 20 30 0 255 0", "10 22 30 0 0 255", "10 20 32 255 255 255",
    "3 0 2 1", "3 0 1 3", "3 1 2 3", "3 0 3 2", "",
])  # fmt: skip


def test_cli_render_orbit_and_opencv_cameras(tmp_path, capsys):
    """Orbit views, their cameras written as OpenCV K/R/t, and the same views rendered again from that file."""
    import json

    from glrast.cli import main

    (tmp_path / "tet.ply").write_text(PLY)
    assert main(["render", str(tmp_path / "tet.ply"), "--out", str(tmp_path / "a"), "--res", "48", "64",
                 "--views", "3", "--device", "cpu"]) == 0  # fmt: skip
    assert "3 views" in capsys.readouterr().out
    cams = json.loads((tmp_path / "a" / "cameras.json").read_text())
    assert len(cams) == 3 and cams[0]["width"] == 64 and cams[0]["height"] == 48
    first = np.asarray(Image.open(tmp_path / "a" / "view_000.png"))
    assert first.shape == (48, 64, 4)
    # the mesh is centred: its bounding-box centre (11, 21, 31) projects to the image centre
    K, R, t = (np.array(cams[0][k]) for k in ("K", "R", "t"))
    u, v, w = K @ (R @ np.array([11.0, 21.0, 31.0]) + t)
    assert abs(u / w - 31.5) < 1e-3 and abs(v / w - 23.5) < 1e-3
    alpha = first[..., 3]
    assert alpha[24, 32] == 255 and alpha[0, 0] == 0 and 0.05 < (alpha > 0).mean() < 0.6
    # vertex colours: pure red, green, blue and white corners, so some pixels are strongly saturated
    assert (first[..., :3].max(-1) - first[..., :3].min(-1)).max() > 150

    assert main(["render", str(tmp_path / "tet.ply"), "--out", str(tmp_path / "b"), "--camera",
                 str(tmp_path / "a" / "cameras.json"), "--device", "cpu"]) == 0  # fmt: skip
    for k in range(3):
        a = np.asarray(Image.open(tmp_path / "a" / f"view_{k:03d}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "b" / f"view_{k:03d}.png")).astype(int)
        assert np.abs(a - b).max() <= 2


def test_cli_bench_arguments():
    from glrast.cli import build_parser

    args = build_parser().parse_args(["bench", "--full", "--runs", "3"])
    assert args.full and args.runs == 3 and args.device is None


def test_cube_converges_from_tiny_images(example, glctx, device, tmp_path):
    r = example("cube").run(steps=300, res=16, out=tmp_path, display_res=64, device=str(device), glctx=glctx,
                            quiet=True)  # fmt: skip
    assert r["pos_rmse"] * 10 <= r["pos_rmse_start"], r
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "view0_target_start_result.png").is_file()


def test_pose_recovers_rotations(example, glctx, device, tmp_path):
    r = example("pose").run(trials=5, res=48, search_steps=50, refine_steps=80, out=tmp_path, device=str(device),
                            glctx=glctx, quiet=True)  # fmt: skip
    assert r["success_rate"] >= 0.8, r
    assert sum(s > 60.0 for s in r["start_deg"]) >= 2  # the trials do start far away
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "trial0_target_start_result.png").is_file()


def test_cli_render_texture_and_grey_shading(tmp_path):
    import trimesh

    from glrast import mesh
    from glrast.cli import main

    # a sphere whose texture is red on the northern half (image top) and blue on the southern
    pos, tri, uv = mesh.uv_sphere(12, 24)
    image = np.zeros((8, 16, 3), np.uint8)
    image[:4, :, 0] = 255
    image[4:, :, 2] = 255
    visual = trimesh.visual.TextureVisuals(uv=uv.numpy(), image=Image.fromarray(image))
    trimesh.Trimesh(pos.numpy(), tri.numpy(), visual=visual, process=False).export(tmp_path / "ball.obj")
    assert main(["render", str(tmp_path / "ball.obj"), "--out", str(tmp_path / "tex"), "--res", "32", "32",
                 "--views", "1", "--device", "cpu"]) == 0  # fmt: skip
    png = np.asarray(Image.open(tmp_path / "tex" / "view_000.png"))
    assert png[6, 16].tolist() == [255, 0, 0, 255] and png[26, 16].tolist() == [0, 0, 255, 255]

    # no texture, no colours: grey, brightest where the surface faces the camera
    pos, tri = mesh.icosphere(3)
    trimesh.Trimesh(pos.numpy(), tri.numpy(), process=False).export(tmp_path / "plain.ply")
    assert main(["render", str(tmp_path / "plain.ply"), "--out", str(tmp_path / "grey"), "--res", "32", "32",
                 "--views", "1", "--device", "cpu"]) == 0  # fmt: skip
    png = np.asarray(Image.open(tmp_path / "grey" / "view_000.png")).astype(int)
    centre, rim = png[16, 16], png[16, 6]
    assert centre[0] == centre[1] == centre[2] and abs(centre[0] - 0.9 * 255) < 6
    assert rim[3] == 255 and rim[0] < centre[0] - 40


def test_load_example_errors():
    with pytest.raises(FileNotFoundError, match="no example 'nosuch'"):
        load_example("nosuch")


def test_display_without_a_display_writes_files(tmp_path, monkeypatch, capsys):
    from glrast.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo", "cube", "--steps", "2", "--out", str(tmp_path), "--display", "--device", "cpu"]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--display")]
    assert len(said) == 1 and "there is no display" in said[0] and said[0].endswith("Writing files only.")
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "view0_target_start_result.png").is_file()


def test_display_shows_target_current_difference_and_loss(example, xdisplay, cpu_glctx):
    cube = example("cube")
    live = sys.modules["_common"].LiveDisplay  # examples/_common.py, imported by the example
    title = "glrast test cube display"
    with live(True, title, max_fps=None) as display:  # every step drawn
        cube.run(steps=12, res=16, device="cpu", glctx=cpu_glctx, quiet=True, display=display)
        viewer = display.viewer
        assert viewer.frames == 12 and len(viewer._curves["loss"]) == 12
        shot = viewer.screenshot()
        assert np.array_equal(shot, xdisplay.screenshot(xdisplay.find_window(title)))
    assert viewer.closed
    target, current, difference = (shot[y : y + h, x : x + w].astype(int) for x, y, w, h in viewer.image_rects)
    assert target.shape == current.shape == difference.shape == (256, 256, 3)  # 16 x 16 enlarged 16 times
    assert np.abs(np.abs(target - current) - difference).max() <= 1  # each rounded to 8 bits on its own
    assert difference.max() > 0  # 12 steps do not fit the cube
    curve = np.all(np.abs(shot.astype(int) - (250, 153, 51)) <= 2, axis=-1)  # the loss curve's colour
    assert curve[viewer.image_rects[0][1] + 256 :].sum() > 20


def test_demo_display_in_a_window(xserver, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "glrast", "demo", "triangle", "--display", "--res", "64", "--out", str(tmp_path),
         "--device", "cpu"], env=xserver.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        window = xserver.find_window("glrast triangle")
        png = np.asarray(Image.open(tmp_path / "triangle.png"))  # written before the window opens
        enlarged = png.repeat(4, 0).repeat(4, 1)  # 64 px are shown 4 times enlarged under a label strip
        wait_for(lambda: np.array_equal(xserver.screenshot(window)[-256:], enlarged), what="the triangle shown")
        xserver.key(window, "Escape")
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out
    assert "--display: close the window" in out and "triangle: 64x64" in out

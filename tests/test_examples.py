"""The examples at reduced size: each must reach its acceptance figure.

The examples live in examples/ at the repository root (scripts, not part of the
package); they are imported from there, as `glrast demo` does.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest.fixture
def example():
    import importlib

    return importlib.import_module


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

"""`glrast render` over folders of meshes: worker processes, failures reported while the
others go on, atomic and resumable output, and shards under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from glrast import mesh, render
from glrast.cli import main

FAST = ["--res", "32", "40", "--views", "2", "--device", "cpu"]


def _mesh_folder(folder: Path, count: int, broken: bool) -> list[str]:
    """`count` small procedural meshes (some in a subfolder), and a broken file; returns the
    relative output names of the good ones."""
    g = torch.Generator().manual_seed(0)
    names = []
    for k in range(count):
        verts, tri = mesh.icosphere(1 + k % 2)
        verts = verts * (0.5 + torch.rand(3, generator=g)) + torch.randn(3, generator=g)
        colors = (torch.rand(verts.shape[0], 3, generator=g) * 255).to(torch.uint8)
        name = f"sub/m{k:02d}" if k % 4 == 0 else f"m{k:02d}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        trimesh.Trimesh(verts.numpy(), tri.numpy(), vertex_colors=colors.numpy(), process=False).export(
            folder / f"{name}.ply"
        )
        names.append(name)
    if broken:
        (folder / "broken.obj").write_text("v 1 2\nf 1 2 9\n")
    (folder / "notes.txt.bak").write_text("not a mesh")
    return names


def _pngs_decode(folder: Path) -> int:
    count = 0
    for png in folder.rglob("*.png"):
        with Image.open(png) as image:
            image.load()  # raises on a truncated or corrupt file
        count += 1
    return count


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meshes")
    return folder, _mesh_folder(folder, 19, broken=True)


def test_folder_with_workers_renders_every_good_mesh_and_reports_the_broken_one(dataset, tmp_path, capsys):
    folder, names = dataset
    assert main(["render", str(folder), "--out", str(tmp_path / "two"), "--workers", "2", *FAST]) == 1
    out = capsys.readouterr().out
    assert "19 mesh(es) rendered (38 views), 0 skipped (complete), 1 failed" in out
    assert f"failed: {folder / 'broken.obj'}: ValueError: mesh.load: cannot read {folder / 'broken.obj'}" in out
    log = json.loads((tmp_path / "two" / "render_log.json").read_text())
    assert [entry["status"] for entry in log].count("rendered") == 19 and len(log) == 20
    assert {Path(e["out"]).relative_to(tmp_path / "two").as_posix() for e in log if e["status"] == "rendered"} == set(
        names
    )
    # the same images as one process renders
    assert main(["render", str(folder), "--out", str(tmp_path / "one"), *FAST]) == 1
    for name in names:
        for view in ("view_000.png", "view_001.png"):
            a = np.asarray(Image.open(tmp_path / "two" / name / view))
            b = np.asarray(Image.open(tmp_path / "one" / name / view))
            assert a.shape == (32, 40, 4) and np.array_equal(a, b), (name, view)
            assert a[..., 3].max() == 255  # the mesh is in the picture
    assert not list((tmp_path / "two").rglob(".*tmp*"))


def test_list_file_and_skip_existing(dataset, tmp_path, capsys):
    folder, names = dataset
    listing = folder / "some.txt"
    listing.write_text(f"# three of them\n{names[1]}.ply\n{names[2]}.ply  # a comment\n\n{folder / names[3]}.ply\n")
    assert main(["render", str(listing), "--out", str(tmp_path), *FAST]) == 0
    assert (tmp_path / names[1] / "cameras.json").is_file() and (tmp_path / Path(names[3]).name).is_dir()
    (tmp_path / names[2] / "cameras.json").unlink()  # as if killed before it finished
    capsys.readouterr()
    assert main(["render", str(listing), "--out", str(tmp_path), "--skip-existing", *FAST]) == 0
    assert "1 mesh(es) rendered (2 views), 2 skipped (complete), 0 failed" in capsys.readouterr().out


def test_killed_run_resumes_without_corrupt_files(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    names = _mesh_folder(folder, 16, broken=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "glrast", "render", str(folder), "--out", str(out), "--workers", "2"]
    cmd += ["--res", "96", "96", "--views", "12", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.rglob("cameras.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = len(list(out.rglob("cameras.json")))
    assert proc.returncode == 130 and "glrast: interrupted" in err, err
    assert 1 <= done < len(names)
    _pngs_decode(out)
    log = json.loads((out / "render_log.json").read_text())  # what was done before the signal
    assert sum(entry["status"] == "rendered" for entry in log) == done

    # killed outright, workers and all, in the middle of a mesh: nothing half-written either
    killed = subprocess.Popen([*cmd, "--skip-existing"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    while len(list(out.rglob("cameras.json"))) <= done and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    _pngs_decode(out)
    done = len(list(out.rglob("cameras.json")))

    rerun = subprocess.run([*cmd, "--skip-existing"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(names) - done} mesh(es) rendered" in rerun.stdout and f"{done} skipped" in rerun.stdout
    assert _pngs_decode(out) == 12 * len(names)
    assert not list(out.rglob(".*tmp*"))


def test_torchrun_ranks_take_disjoint_shards_covering_every_mesh(dataset, tmp_path):
    folder, names = dataset
    good = tmp_path / "good"
    good.mkdir()
    for name in names[:7]:
        (good / Path(name).name).with_suffix(".ply").write_bytes((folder / f"{name}.ply").read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "glrast"]
    res = subprocess.run([*cmd, "render", str(good), "--out", str(tmp_path / "o"), *FAST], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    shards = [
        {e["mesh"] for e in json.loads((tmp_path / "o" / f"render_log.rank{r}.json").read_text())} for r in (0, 1)
    ]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == {str(p) for p in good.glob("*.ply")}
    assert _pngs_decode(tmp_path / "o") == 2 * 7


def test_shard_and_find_meshes(tmp_path):
    assert render.shard(list(range(7)), 1, 3) == [1, 4]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.obj").write_text("")
    (tmp_path / "x.obj").write_text("")
    (tmp_path / "list.txt").write_text("x.obj\na/x.obj\n")
    assert [rel.as_posix() for _, rel in render.find_meshes(tmp_path / "list.txt")] == ["x", "a/x"]
    (tmp_path / "clash.txt").write_text("x.obj\n../x.obj\n")
    with pytest.raises(ValueError, match="would both be rendered into x/"):
        render.find_meshes(tmp_path / "clash.txt")

"""The `glrast` command's failures: one line `glrast: error: ...`, exit status 2 for usage and 1 for a
failed job, no traceback unless --debug; optional dependencies checked before any work; progress
as plain lines when the output is a log."""

import subprocess
import sys

import pytest
from test_examples import PLY

import glrast.cli as cli
from glrast.cli import main


def run(capsys, *argv):
    """(exit status, stderr) of `glrast argv`, whether it returns or exits (argparse)."""
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glrast: error: "), err
    return lines[0]


@pytest.fixture
def meshes(tmp_path):
    (tmp_path / "tet.ply").write_text(PLY)
    (tmp_path / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1 2\n")
    (tmp_path / "cams.json").write_text('[{"K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "width": 8, "height": 8}]')
    (tmp_path / "notjson.json").write_text("{K: 1")
    return tmp_path


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["{d}/missing.ply"], 2, "render: no such mesh file: {d}/missing.ply"),
        (["{d}/broken.ply"], 1, "mesh.load: cannot read {d}/broken.ply as a mesh"),
        (["{d}/tet.ply", "--camera", "{d}/nocams.json"], 2, "render: no such --camera file: {d}/nocams.json"),
        (["{d}/tet.ply", "--camera", "{d}/cams.json"], 1, "cams.json: camera 0 needs K (3x3), R (3x3), t (3)"),
        (["{d}/tet.ply", "--camera", "{d}/notjson.json"], 1, "notjson.json: not a JSON camera file"),
        (["{d}/tet.ply", "--res", "0", "0"], 2, "render: argument --res: must be >= 1, got 0"),
        (["{d}/tet.ply", "--views", "0"], 2, "render: argument --views: must be >= 1"),
        (["{d}/tet.ply", "--elevation", "90"], 2, "argument --elevation: must be strictly between -90 and 90"),
        (["{d}/tet.ply", "--fov", "180"], 2, "argument --fov: must be strictly between 0 and 180"),
        (["{d}/tet.ply", "--device", "garbage"], 1, "glrast render --device: device must be"),
        (["{d}/tet.ply", "--res", "8"], 2, "argument --res: expected 2 arguments"),
    ],
)
def test_render_failures_are_one_line(meshes, capsys, args, status, message):
    d = str(meshes)
    got, err = run(capsys, "render", *(a.format(d=d) for a in args), "--out", f"{d}/out")
    assert got == status
    assert message.format(d=d) in one_line_error(err)


def test_no_traceback_from_the_command_and_debug_shows_it(meshes):
    """The installed entry point, as a user runs it: one line, exit 1; --debug gives the traceback."""
    cmd = [sys.executable, "-m", "glrast", "render", str(meshes / "broken.ply"), "--out", str(meshes / "o")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert one_line_error(plain.stderr).endswith("(KeyError: 'y')")
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError" in debug.stderr


def test_debug_reraises_in_process(meshes):
    with pytest.raises(ValueError, match="cannot read"):
        main(["render", str(meshes / "broken.ply"), "--out", str(meshes / "o"), "--debug"])


@pytest.mark.parametrize(
    "argv, missing",
    [(["demo", "cube"], "matplotlib"), (["demo", "triangle"], "pillow"), (["render", "{d}/tet.ply"], "trimesh")],
)
def test_optional_dependencies_are_checked_before_any_work(meshes, capsys, monkeypatch, argv, missing):
    module = {"pillow": "PIL"}.get(missing, missing)
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == module else real_find_spec(name))

    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work before checking its dependencies")

    monkeypatch.setattr(cli, "load_example", no_work)
    argv = [a.format(d=meshes) for a in argv]
    status, err = run(capsys, *argv, *(["--out", str(meshes / "o")] if argv[0] == "render" else []))
    assert status == 2
    line = one_line_error(err)
    assert f"needs {missing}" in line and "pip install 'glrast[examples]'" in line


def test_progress_is_plain_lines_in_a_log(capsys):
    sys.path.insert(0, str(cli.examples_dir()))
    import _common

    with _common.bar(20, "fit", quiet=False) as b:  # stderr is captured: not a terminal
        b.every = 0.0
        for _ in range(20):
            b.update()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("fit: 20/20 (100%)") and 2 <= len(lines) <= 11
    assert all("\r" not in line for line in lines)
    with _common.bar(20, "fit", quiet=True) as b:
        b.update(20)
    assert capsys.readouterr().err == ""

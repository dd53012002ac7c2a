"""The package's structure: its modules form layers whose imports run one way (no
cycle), `import glrast` and `glrast --help` load neither torch nor ModernGL, and
no public function is shadowed by (or shadows) a module of the same name."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import glrast

PACKAGE = Path(glrast.__file__).resolve().parent

# Lowest first; a module may import only modules listed before it (README "Layout").
LAYERS = [
    ("base", ["_version", "_log", "_resources", "_progress", "_checks", "ids", "params", "cuda_driver"]),
    ("kernel runtime, EGL, interop", ["kernels", "egl", "glcalls", "interop"]),
    ("GL layer", ["pipeline", "context"]),
    ("ops", ["ops"]),
    ("primitives", ["raster", "interpolation", "texturing", "antialiasing"]),
    ("helpers", ["camera", "mesh"]),
    ("tools", ["shading", "viewer", "mesh_viewer", "diagnostics", "render", "cli", "__main__", "__init__"]),
]
ORDER = [name for _, names in LAYERS for name in names]


def _imports(module: str) -> set[str]:
    """The glrast modules that `module` imports anywhere (top level or inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glrast"):
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("glrast."))
    return found & set(ORDER)


def test_every_module_has_a_layer():
    assert sorted(ORDER) == sorted(p.stem for p in PACKAGE.glob("*.py"))


@pytest.mark.parametrize("module", ORDER)
def test_imports_run_one_way(module):
    rank = ORDER.index(module)
    upward = sorted(m for m in _imports(module) if ORDER.index(m) >= rank)
    assert not upward, f"glrast/{module}.py imports {upward}, which are not below it in the layer order"


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_is_cheap():
    out = _fresh_python("import sys, glrast; print(sorted(m for m in ('torch', 'moderngl') if m in sys.modules))")
    assert out.strip() == "[]"


def test_help_without_torch():
    code = (
        "import sys\nfrom glrast.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'moderngl') if m in sys.modules))"
    )
    out = _fresh_python(code)
    assert "usage: glrast" in out and out.strip().endswith("LOADED []")


def test_public_functions_are_not_shadowed_by_modules():
    # importing every module first: a submodule import sets an attribute of the package, which
    # would replace a public function of the same name
    code = (
        "import importlib, glrast\n"
        f"for m in {ORDER[:-2]!r}: importlib.import_module('glrast.' + m)\n"
        "print(all(callable(getattr(glrast, n)) and not isinstance(getattr(glrast, n), type(glrast))\n"
        "          for n in glrast.__all__ if n not in ('__version__', 'camera', 'mesh')))"
    )
    assert _fresh_python(code).strip() == "True"
    assert set(glrast.__all__) <= set(dir(glrast))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        glrast.no_such_name  # noqa: B018

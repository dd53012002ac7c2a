"""Locating the data shipped with glrast (csrc/, shaders/)."""

from pathlib import Path


def resource_dir(name: str) -> Path:
    """`name` packaged inside glrast (installed wheel), or at the checkout's root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"glrast resource folder {name!r} not found next to {here}")

"""Run times idle and beside busy processes: how glrast's host kernels share the cores.

Two jobs, each run idle and then beside --busy processes that spin on a core each
(`python -c 'while True: pass'`), on the CPU:

  cube      examples/cube.py (--steps steps of 4 views at 16x16: many small launches);
            the figure is the wall time of the whole run, interpreter start included
  standard  benchmarks/standard_job.py --mode vis (rasterize, interpolate, antialias,
            loss, backward); the figure is the median step

--tree DIR runs the jobs against another glrast source tree (put first on PYTHONPATH,
with its own kernel cache), e.g. an export of an older commit, for before/after tables:

    git archive HEAD~3 | tar -x -C /tmp/before
    python benchmarks/bench_load.py --tree /tmp/before
    python benchmarks/bench_load.py

Each figure is the median of --repeat runs. Extra environment for the jobs (e.g.
OMP_WAIT_POLICY=passive) can be given as NAME=VALUE arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY = "while True: pass"


@contextmanager
def busy_processes(count: int):
    """`count` processes spinning on a core each, for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach their loop
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def job_commands(tree: Path, args: argparse.Namespace, out: str) -> dict[str, list[str]]:
    return {
        "cube": [sys.executable, str(tree / "examples" / "cube.py"), "--steps", str(args.steps), "--out", out],
        "standard": [
            sys.executable,
            str(tree / "benchmarks" / "standard_job.py"),
            "--device",
            "cpu",
            "--mode",
            "vis",
            "--tris",
            args.tris,
            "--res",
            str(args.res),
        ],
    }


def run_once(name: str, cmd: list[str], env: dict[str, str], timeout: float) -> float:
    """Seconds: the whole run (cube) or the median step (standard)."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    if name == "standard":
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
        return json.loads(line[len("RESULT ") :])["median_s"]
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", nargs="*", metavar="NAME=VALUE", help="extra environment for the jobs")
    parser.add_argument("--tree", type=Path, default=ROOT, help="glrast source tree to run (default: this one)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded runs (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure, median reported (default 1)")
    parser.add_argument("--steps", type=int, default=1000, help="cube demo steps (default 1000)")
    parser.add_argument("--tris", default="80k", help="standard job mesh (default 80k)")
    parser.add_argument("--res", type=int, default=256, help="standard job resolution (default 256)")
    parser.add_argument("--jobs", default="cube,standard", help="comma-separated subset of cube,standard")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run before giving up")
    args = parser.parse_args()

    tree = args.tree.resolve()
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    if tree != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
        env["GLRAST_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"glrast-cache-{tree.name}")
    with tempfile.TemporaryDirectory(prefix="bench-load-") as out:
        commands = job_commands(tree, args, out)
        names = [n for n in args.jobs.split(",") if n]
        labels = {"cube": f"cube, {args.steps} steps (run)", "standard": f"standard vis {args.tris} {args.res}² (step)"}
        for name in names:  # a first run builds the kernels, so that no figure below includes compiling
            run_once(name, commands[name], env, args.timeout)
        print(f"tree {tree}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
        print(f"extra environment: {' '.join(args.env) or '(none)'}")
        print(f"| job | idle s | beside {args.busy} busy s | ratio |")
        print("|---|---:|---:|---:|")
        for name in names:
            idle = statistics.median(run_once(name, commands[name], env, args.timeout) for _ in range(args.repeat))
            with busy_processes(args.busy):
                loaded = statistics.median(
                    run_once(name, commands[name], env, args.timeout) for _ in range(args.repeat)
                )
            print(f"| {labels[name]} | {idle:.3f} | {loaded:.3f} | {loaded / idle:.1f}x |", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

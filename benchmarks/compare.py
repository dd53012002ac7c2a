"""glrast and Mitsuba 3 on the standard job, case by case in one run, with ratios.

Each case runs in a fresh process (so peak RSS is that case's), glrast and Mitsuba
alternately, so that both see the same machine state. Mitsuba runs the peers'
bench_mitsuba.py (../shared/peers beside the checkout, or --peers-dir) with a Python that
has mitsuba installed (--peer-python); without one, glrast runs alone.

Modes and the Mitsuba integrator each is compared with:
  fwd -> direct (static scene), fwd_dyn -> direct (BVH rebuilt every step),
  col -> prb, pos -> direct (interior term only), vis -> direct_projective.

    python benchmarks/compare.py --quick                 # 5k and 80k, 256^2 and 512^2
    python benchmarks/compare.py --plot out/compare.png  # the full matrix and a plot
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {"fwd": "direct", "fwd_dyn": "direct", "col": "prb", "pos": "direct", "vis": "direct_projective"}
TRIS = ["5k", "80k", "1.3m"]
RESOLUTIONS = [256, 512, 1024]


def run_case(cmd: list[str], timeout: float) -> dict:
    home = tempfile.mkdtemp(prefix="compare-home-")  # cold JIT caches under $HOME
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": home})
        lines = [ln.split("RESULT ", 1)[1] for ln in proc.stdout.splitlines() if "RESULT " in ln]
        if lines:
            return json.loads(lines[-1])
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def ms(record: dict | None) -> str:
    if not record or "median_s" not in record:
        return "–"
    return f"{record['median_s'] * 1e3:.1f}"


def ratio(ours: dict | None, theirs: dict | None) -> str:
    if not ours or not theirs or "median_s" not in ours or "median_s" not in theirs:
        return "–"
    return f"{theirs['median_s'] / ours['median_s']:.2f}×"


def exponent(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k and 80k triangles, 256^2 and 512^2")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument(
        "--peer-python", default=str(HERE.parent / ".venv-peers" / "bin" / "python"), help="a Python with mitsuba"
    )
    parser.add_argument("--peers-dir", default=str(HERE.parent.parent / "shared" / "peers"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="", help="append every record to this JSON-lines file")
    parser.add_argument("--plot", default="", help="write a PNG of time against triangles and pixels")
    args = parser.parse_args()
    modes = args.modes.split(",")
    tris_list, res_list = (TRIS[:2], RESOLUTIONS[:2]) if args.quick else (TRIS, RESOLUTIONS)
    mitsuba_script = Path(args.peers_dir) / "bench_mitsuba.py"
    have_mitsuba = Path(args.peer_python).is_file() and mitsuba_script.is_file()
    if not have_mitsuba:
        print(f"Mitsuba not found ({args.peer_python}, {mitsuba_script}): glrast alone", file=sys.stderr)
    records: dict[tuple[str, str, int, str], dict] = {}
    for tris in tris_list:
        for res in res_list:
            for mode in modes:
                common = ["--tris", tris, "--res", str(res), "--mode", mode, "--runs", str(args.runs)]
                cases = [("glrast", [sys.executable, str(HERE / "standard_job.py"), *common])]
                if have_mitsuba:
                    cases.append(
                        ("mitsuba", [args.peer_python, str(mitsuba_script), *common, "--integrator", MODES[mode]])
                    )
                for peer, cmd in cases:
                    rec = run_case(cmd, args.timeout)
                    rec.update(peer=peer, tris_arg=tris, res=res, mode=mode)
                    records[(peer, tris, res, mode)] = rec
                    print(json.dumps(rec)[:240], file=sys.stderr, flush=True)
                    if args.out:
                        with open(args.out, "a") as fh:
                            fh.write(json.dumps(rec) + "\n")

    print("\nmedian ms per step: glrast | Mitsuba | Mitsuba/glrast (above 1: glrast is faster)\n")
    print("| tris | res | " + " | ".join(f"{m} (Mitsuba {MODES[m]})" for m in modes) + " |")
    print("|---:|---:|" + "---|" * len(modes))
    for tris in tris_list:
        for res in res_list:
            cells = []
            for mode in modes:
                ours, theirs = records.get(("glrast", tris, res, mode)), records.get(("mitsuba", tris, res, mode))
                cells.append(f"{ms(ours)} · {ms(theirs)} · {ratio(ours, theirs)}")
            print(f"| {tris} | {res}² | " + " | ".join(cells) + " |")
    print("\npeak RSS, MB: glrast | Mitsuba\n")
    print("| tris | res | " + " | ".join(modes) + " |")
    print("|---:|---:|" + "---|" * len(modes))
    for tris in tris_list:
        for res in res_list:
            cells = [
                " · ".join(
                    str(records.get((p, tris, res, m), {}).get("peak_rss_mb", "–")) for p in ("glrast", "mitsuba")
                )
                for m in modes
            ]
            print(f"| {tris} | {res}² | " + " | ".join(cells) + " |")

    def ok(peer, tris, res, mode):
        return "median_s" in records.get((peer, tris, res, mode), {})

    print("\nglrast cost exponents (time ∝ size^k, least squares over the matrix):")
    for mode in modes:
        by_pixels = [
            exponent(
                [(r * r, records[("glrast", t, r, mode)]["median_s"]) for r in res_list if ok("glrast", t, r, mode)]
            )
            for t in tris_list
            if sum(ok("glrast", t, r, mode) for r in res_list) > 1
        ]
        by_tris = [
            exponent(
                [
                    (records[("glrast", t, r, mode)]["tris"], records[("glrast", t, r, mode)]["median_s"])
                    for t in tris_list
                    if ok("glrast", t, r, mode)
                ]
            )
            for r in res_list
            if sum(ok("glrast", t, r, mode) for t in tris_list) > 1
        ]
        fmt = " ".join(f"{k:.2f}" for k in by_pixels)
        fmt_t = " ".join(f"{k:.2f}" for k in by_tris)
        print(f"  {mode}: in pixels (per mesh) {fmt}; in triangles (per resolution) {fmt_t}")
    if args.plot:
        plot(records, tris_list, res_list, modes, args.plot)


def plot(records, tris_list, res_list, modes, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    mid_res, mid_tris = res_list[min(1, len(res_list) - 1)], tris_list[min(1, len(tris_list) - 1)]
    for mode in modes:
        for peer, style in (("glrast", "-o"), ("mitsuba", "--s")):
            xs, ys = [], []
            for t in tris_list:
                rec = records.get((peer, t, mid_res, mode), {})
                if "median_s" in rec:
                    xs.append(rec["tris"])
                    ys.append(rec["median_s"] * 1e3)
            if xs:
                axes[0].plot(xs, ys, style, label=f"{peer} {mode}")
            xs, ys = [], []
            for r in res_list:
                rec = records.get((peer, mid_tris, r, mode), {})
                if "median_s" in rec:
                    xs.append(r * r)
                    ys.append(rec["median_s"] * 1e3)
            if xs:
                axes[1].plot(xs, ys, style, label=f"{peer} {mode}")
    for ax, xlabel, title in (
        (axes[0], "triangles", f"time vs triangles at {mid_res}²"),
        (axes[1], "pixels", f"time vs pixels, {mid_tris} triangles"),
    ):
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="ms per step", title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()

"""glrast and Mitsuba 3 on the standard job, case by case in one run, with ratios.

Each case runs in a fresh process (so peak RSS is that case's, and HOME is an empty
temporary folder so that kernel caches start cold and first_s includes compilation),
glrast and Mitsuba alternately (which of the two goes first alternates too), so that
both see the same machine state. Mitsuba runs the peers' bench_mitsuba.py
(../shared/peers beside the checkout, or --peers-dir) with a Python that has mitsuba
installed (--peer-python; by default .venv-peers/ in the checkout or peers-venv/ beside
it); without one, glrast runs alone and the report says so.

glrast mode -> the Mitsuba integrator it is compared with (--also adds more pairs):
  fwd -> direct (static scene: BVH built once, untimed)
  fwd_dyn -> direct (vertices move every step: BVH rebuilt)
  col -> prb (colour gradients; path replay is Mitsuba's fastest here)
  pos -> direct (colour + position gradients, interior term only)
  vis -> direct_projective (colour + position gradients with silhouette terms)

Prints markdown: per mode, median ms per step of both, speed-up (Mitsuba time / glrast
time, above 1: glrast is faster), first call, peak RSS and working set (peak RSS minus the
RSS once the library and its backend are loaded: see working_set); a table of the working sets of
every case; then power-law exponents of cost
against pixels and triangles; then the targets, each with PASS/FAIL.

    python benchmarks/compare.py --quick                     # 5k and 80k, 256^2 and 512^2
    python benchmarks/compare.py --out out/compare.jsonl --plot out/compare.png   # full matrix
    python benchmarks/compare.py --load out/compare.jsonl --plot out/compare.png  # re-report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRS = [("fwd", "direct"), ("fwd_dyn", "direct"), ("col", "prb"), ("pos", "direct"), ("vis", "direct_projective")]
TRIS = ["5k", "80k", "1.3m"]
RESOLUTIONS = [256, 512, 1024]
PEER_PYTHONS = [HERE.parent / ".venv-peers" / "bin" / "python", HERE.parent.parent / "peers-venv" / "bin" / "python"]
# (mode, minimum speed-up over its Mitsuba integrator, triangle counts it applies to: None = all)
SPEED_TARGETS = [("vis", 10.0, None), ("fwd_dyn", 1.5, ("80k", "1.3m"))]

Key = tuple[str, str, str, int, str]  # (peer, integrator, tris, res, mode); integrator "" for glrast


def run_case(cmd: list[str], timeout: float) -> dict:
    home = tempfile.mkdtemp(prefix="compare-home-")  # cold kernel caches under $HOME
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": home})
        lines = [ln.split("RESULT ", 1)[1] for ln in proc.stdout.splitlines() if "RESULT " in ln]
        rec = json.loads(lines[-1]) if lines else {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
    except subprocess.TimeoutExpired:
        rec = {"error": f"timeout after {timeout} s"}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    rec["wall_case_s"] = round(time.perf_counter() - t0, 1)
    return rec


def median(rec: dict | None) -> float | None:
    return rec.get("median_s") if rec else None


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.1f}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def working_set(rec: dict) -> int | None:
    """The working set, MB: peak RSS minus the RSS once the library and its backend are loaded
    (both peers measure the two the same way: getrusage's ru_maxrss at the end, VmRSS before the
    mesh is made). Mitsuba's reading after its imports follows mi.set_variant, which loads its
    LLVM; glrast's GL driver (llvmpipe's LLVM, about 60 MB) loads with the first context, so
    glrast's reading is the one after its context (rss_after_backend_mb)."""
    base = rec.get("rss_after_backend_mb", rec.get("rss_after_import_mb"))
    if "peak_rss_mb" not in rec or base is None:
        return None
    return rec["peak_rss_mb"] - base


def working_set_from_imports(rec: dict) -> int | None:
    """Peak RSS minus the RSS right after the imports, MB: for glrast, the working set with its GL
    driver's code counted in."""
    if "peak_rss_mb" not in rec or "rss_after_import_mb" not in rec:
        return None
    return rec["peak_rss_mb"] - rec["rss_after_import_mb"]


def fmt_mb(mb: int | None) -> str:
    return "–" if mb is None else str(mb)


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(time) against log(size); None below two points."""
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def commit() -> str:
    out = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


class Report:
    """The records of one comparison and the markdown made from them."""

    def __init__(self, records: dict[Key, dict], tris_list: list[str], res_list: list[int], pairs: list):
        self.records, self.tris_list, self.res_list, self.pairs = records, tris_list, res_list, pairs

    def ours(self, tris: str, res: int, mode: str) -> dict | None:
        return self.records.get(("glrast", "", tris, res, mode))

    def theirs(self, tris: str, res: int, mode: str, integrator: str) -> dict | None:
        return self.records.get(("mitsuba", integrator, tris, res, mode))

    def speedup(self, tris: str, res: int, mode: str, integrator: str) -> float | None:
        a, b = median(self.ours(tris, res, mode)), median(self.theirs(tris, res, mode, integrator))
        return b / a if a and b else None

    def cases(self):
        return [(t, r) for t in self.tris_list for r in self.res_list]

    def tables(self) -> None:
        print("\n### Speed-up of glrast (Mitsuba median / glrast median; above 1: glrast is faster)\n")
        print("| tris | res | " + " | ".join(f"{m} vs {i}" for m, i in self.pairs) + " |")
        print("|---:|---:|" + "---:|" * len(self.pairs))
        for t, r in self.cases():
            cells = [self.speedup(t, r, m, i) for m, i in self.pairs]
            print(f"| {t} | {r}² | " + " | ".join("–" if c is None else f"{c:.2f}×" for c in cells) + " |")
        for mode, integ in self.pairs:
            print(f"\n### {mode}: glrast vs Mitsuba {integ}\n")
            print(
                "| tris | res | glrast ms | Mitsuba ms | speed-up | glrast first s | Mitsuba first s "
                "| glrast peak RSS MB | Mitsuba peak RSS MB | glrast working set MB | Mitsuba working set MB |"
            )
            print("|" + "---:|" * 11)
            for t, r in self.cases():
                a, b = self.ours(t, r, mode) or {}, self.theirs(t, r, mode, integ) or {}
                s = self.speedup(t, r, mode, integ)
                cells = [fmt_ms(a.get("median_s")), fmt_ms(b.get("median_s")), "–" if s is None else f"{s:.2f}×"]
                cells += [str(a.get("first_s", "–")), str(b.get("first_s", "–"))]
                cells += [fmt_mb(a.get("peak_rss_mb")), fmt_mb(b.get("peak_rss_mb"))]
                cells += [fmt_mb(working_set(a)), fmt_mb(working_set(b))]
                print(f"| {t} | {r}² | " + " | ".join(cells) + " |")
        print(
            "\n### Working set (peak RSS minus RSS with the backend loaded), MB: "
            "glrast (counted from its imports) · Mitsuba\n"
        )
        print("| tris | res | " + " | ".join(f"{m} (Mitsuba {i})" for m, i in self.pairs) + " |")
        print("|---:|---:|" + "---|" * len(self.pairs))
        for t, r in self.cases():
            pairs = [(self.ours(t, r, m) or {}, self.theirs(t, r, m, i) or {}) for m, i in self.pairs]
            cells = [
                f"{fmt_mb(working_set(a))} ({fmt_mb(working_set_from_imports(a))}) · {fmt_mb(working_set(b))}"
                for a, b in pairs
            ]
            print(f"| {t} | {r}² | " + " | ".join(cells) + " |")
        errors = [(k, v["error"]) for k, v in self.records.items() if "error" in v]
        for key, err in errors:
            print(f"\nerror in {key}: {err}")

    def exponents(self, peer: str, integrator: str, mode: str) -> tuple[list, list]:
        """(k against pixels for each mesh, k against triangles for each resolution)."""

        def rec(t: str, r: int) -> dict:
            return self.records.get((peer, integrator, t, r, mode), {})

        by_pixels = [
            exponent([(r * r, rec(t, r)["median_s"]) for r in self.res_list if "median_s" in rec(t, r)])
            for t in self.tris_list
        ]
        by_tris = [
            exponent([(rec(t, r)["tris"], rec(t, r)["median_s"]) for t in self.tris_list if "median_s" in rec(t, r)])
            for r in self.res_list
        ]
        return by_pixels, by_tris

    def exponent_table(self) -> list[float]:
        """Prints time ∝ size^k for both peers; returns glrast's exponents."""
        print("\n### Cost exponents k (time ∝ size^k, least squares of log time over the matrix)\n")
        head = [f"k pixels @{t}" for t in self.tris_list] + [f"k tris @{r}²" for r in self.res_list]
        print("| mode | peer | " + " | ".join(head) + " |")
        print("|---|---|" + "---:|" * len(head))
        ours = []
        for mode, integ in self.pairs:
            for peer, name, label in (("glrast", "", "glrast"), ("mitsuba", integ, f"Mitsuba {integ}")):
                by_pixels, by_tris = self.exponents(peer, name, mode)
                if peer == "glrast":
                    ours += [k for k in by_pixels + by_tris if k is not None]
                ks = ["–" if k is None else f"{k:.2f}" for k in by_pixels + by_tris]
                print(f"| {mode} | {label} | " + " | ".join(ks) + " |")
        return ours

    def targets(self, glrast_exponents: list[float], have_mitsuba: bool) -> None:
        print("\n### Targets\n")
        if not have_mitsuba:
            print("- speed and memory against Mitsuba: not checked (Mitsuba did not run)")
        for mode, minimum, tris_only in SPEED_TARGETS:
            for mode_, integ in self.pairs:
                if mode_ != mode:
                    continue
                ups = [
                    (t, r, self.speedup(t, r, mode, integ))
                    for t, r in self.cases()
                    if tris_only is None or t in tris_only
                ]
                ups = [u for u in ups if u[2] is not None]
                if ups:
                    worst = min(ups, key=lambda u: u[2])
                    where = "every case" if tris_only is None else "at " + ", ".join(tris_only)
                    verdict = "PASS" if worst[2] >= minimum else "FAIL"
                    print(
                        f"- {verdict}: {mode} ≥ {minimum}× faster than Mitsuba {integ} {where}: "
                        f"worst {worst[2]:.2f}× ({worst[0]}, {worst[1]}²)"
                    )
        if glrast_exponents:
            worst = max(glrast_exponents)
            verdict = "PASS" if worst <= 1.0 else "FAIL"
            print(
                f"- {verdict}: glrast cost grows no worse than linearly in pixels and triangles: largest k {worst:.2f}"
            )
        measures = (
            ("peak RSS", lambda rec: rec.get("peak_rss_mb")),
            ("working set", working_set),
            ("working set counted from the imports", working_set_from_imports),
        )
        for what, measure in measures:
            over, compared = [], 0
            for t, r in self.cases():
                for mode, integ in self.pairs:
                    a, b = measure(self.ours(t, r, mode) or {}), measure(self.theirs(t, r, mode, integ) or {})
                    if a is None or b is None:
                        continue
                    compared += 1
                    if a > b:
                        over.append(a - b)
            if compared:
                verdict = "PASS" if not over else "FAIL"
                extra = f"; higher in {len(over)}/{compared} cases, by {min(over)}–{max(over)} MB" if over else ""
                print(f"- {verdict}: glrast {what} no higher than Mitsuba's{extra}")

    def plot(self, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(self.pairs), figsize=(4 * len(self.pairs), 8), squeeze=False)
        for col, (mode, integ) in enumerate(self.pairs):
            # one colour per fixed size, solid glrast, dashed Mitsuba
            for peer, name, style in (("glrast", "", "-o"), ("mitsuba", integ, "--s")):
                label = "glrast" if peer == "glrast" else f"Mitsuba {integ}"
                for k, r in enumerate(self.res_list):
                    recs = [self.records.get((peer, name, t, r, mode), {}) for t in self.tris_list]
                    pts = [(x["tris"], x["median_s"] * 1e3) for x in recs if "median_s" in x]
                    if pts:
                        axes[0][col].plot(*zip(*pts), style, color=f"C{k}", label=f"{label}, {r}²")
                for k, t in enumerate(self.tris_list):
                    recs = [self.records.get((peer, name, t, r, mode), {}) for r in self.res_list]
                    pts = [(x["res"] ** 2, x["median_s"] * 1e3) for x in recs if "median_s" in x]
                    if pts:
                        axes[1][col].plot(*zip(*pts), style, color=f"C{k}", label=f"{label}, {t} tris")
            for row, xlabel in ((0, "triangles"), (1, "pixels")):
                ax = axes[row][col]
                ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="ms per step", title=f"{mode} vs {integ}")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=6)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        print(f"\nplot: {path}")


def find_peer_python(given: str) -> Path | None:
    candidates = [Path(given)] if given else PEER_PYTHONS
    return next((p for p in candidates if p.is_file()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k and 80k triangles, 256^2 and 512^2")
    parser.add_argument("--tris", default=",".join(TRIS), help="comma-separated subset of " + ",".join(TRIS))
    parser.add_argument("--res", default=",".join(map(str, RESOLUTIONS)), help="comma-separated resolutions")
    parser.add_argument("--modes", default=",".join(m for m, _ in PAIRS), help="comma-separated subset of modes")
    parser.add_argument(
        "--also", action="append", default=[], metavar="MODE:INTEGRATOR", help="another pair, e.g. vis:prb_projective"
    )
    parser.add_argument("--peer-python", default="", help="a Python with mitsuba (default: looks for a peers venv)")
    parser.add_argument("--peers-dir", default=str(HERE.parent.parent / "shared" / "peers"))
    parser.add_argument("--device", default="", help="glrast's --device (default: its own)")
    # At least 12 timed steps a case, for both: this machine has slow phases of about a second, in
    # which a median of 5 steps of 80-300 ms could land.
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="", help="append every record to this JSON-lines file")
    parser.add_argument("--load", default="", help="report the records of this JSON-lines file instead of running")
    parser.add_argument("--plot", default="", help="write a PNG of time against triangles and pixels")
    args = parser.parse_args()
    modes = args.modes.split(",")
    pairs = [p for p in PAIRS if p[0] in modes] + [tuple(a.split(":", 1)) for a in args.also]
    tris_list = TRIS[:2] if args.quick else args.tris.split(",")
    res_list = RESOLUTIONS[:2] if args.quick else [int(r) for r in args.res.split(",")]
    records: dict[Key, dict] = {}

    print(f"machine: {machine()}; glrast commit {commit()}")
    if args.load:
        with open(args.load) as fh:
            for rec in map(json.loads, filter(str.strip, fh)):
                records[
                    (
                        rec["peer"],
                        rec.get("integrator", "") if rec["peer"] == "mitsuba" else "",
                        rec["tris_arg"],
                        rec["res"],
                        rec["mode"],
                    )
                ] = rec
        have_mitsuba = any(k[0] == "mitsuba" for k in records)
    else:
        peer_python = find_peer_python(args.peer_python)
        mitsuba_script = Path(args.peers_dir) / "bench_mitsuba.py"
        have_mitsuba = peer_python is not None and mitsuba_script.is_file()
        if not have_mitsuba:
            looked = args.peer_python or ", ".join(map(str, PEER_PYTHONS))
            print(f"Mitsuba not found (Python: {looked}; script: {mitsuba_script}): glrast runs alone")
        glrast_flags = ["--device", args.device] if args.device else []
        count = 0
        for tris in tris_list:
            for res in res_list:
                for mode in dict.fromkeys(m for m, _ in pairs):
                    common = ["--tris", tris, "--res", str(res), "--mode", mode, "--runs", str(args.runs)]
                    jobs = [("glrast", "", [sys.executable, str(HERE / "standard_job.py"), *common, *glrast_flags])]
                    if have_mitsuba:
                        jobs += [
                            ("mitsuba", integ, [str(peer_python), str(mitsuba_script), *common, "--integrator", integ])
                            for m, integ in pairs
                            if m == mode
                        ]
                    if count % 2:
                        jobs.reverse()
                    count += 1
                    for peer, integ, cmd in jobs:
                        rec = run_case(cmd, args.timeout)
                        rec.update(peer=peer, tris_arg=tris, res=res, mode=mode)
                        if integ:
                            rec["integrator"] = integ
                        records[(peer, integ, tris, res, mode)] = rec
                        print(json.dumps(rec)[:200], file=sys.stderr, flush=True)
                        if args.out:
                            with open(args.out, "a") as fh:
                                fh.write(json.dumps(rec) + "\n")
        print(f"after the run: {machine()}; glrast commit {commit()}")
    versions = sorted({r["version"] for r in records.values() if "version" in r})
    print("versions: " + "; ".join(versions))
    renderers = sorted({r["renderer"] for r in records.values() if "renderer" in r})
    print("glrast GL renderer: " + "; ".join(renderers))
    report = Report(records, tris_list, res_list, pairs)
    report.tables()
    report.targets(report.exponent_table(), have_mitsuba)
    if args.plot:
        report.plot(args.plot)


if __name__ == "__main__":
    main()

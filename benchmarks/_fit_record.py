"""The record both sides of time_to_solution.py print for one fit (numpy only: the Mitsuba side
runs under the peers' Python, without torch or glrast)."""

from __future__ import annotations

import resource

import numpy as np


def rss_mb() -> int:
    """Resident set size of this process now, MB."""
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) // 1024 for ln in fh if ln.startswith("VmRSS:"))


def peak_rss_mb() -> int:
    """Peak resident set size so far, MB: getrusage's high-water mark, or the RSS now where that is
    higher (Linux updates the mark lazily, from per-thread counters, so it can trail VmRSS a little)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, rss_mb())


def fit_record(setup_s: float, step_times: list[float], rmse_start: float, reached: tuple | None,
               steps: int, trace: list[tuple], rss_import: int) -> dict:  # fmt: skip
    """reached: (step, seconds) where the RMSE first fell 10x, or None; trace: (step, seconds,
    rmse, loss) rows; rss_import: RSS in MB after the imports."""
    return {
        "setup_s": round(setup_s, 3),
        "first_step_s": round(step_times[0], 4),
        "median_step_s": round(float(np.median(step_times)), 5),
        "rmse_start": rmse_start,
        "steps_to_target": reached[0] if reached else None,
        "time_to_target_s": round(reached[1], 3) if reached else None,
        "steps": steps,
        "elapsed_s": round(trace[-1][1], 3),
        "rmse_final": trace[-1][2],
        "loss_final": trace[-1][3],
        "rss_after_import_mb": rss_import,
        "peak_rss_mb": peak_rss_mb(),
        "trace": trace[:: max(1, len(trace) // 200)],
    }

"""A longer property-based campaign over glrast's public functions: the cases of tests/fuzz_cases.py
(the same the CI suite runs a few dozen times each), each run for many more examples, every outcome
counted instead of stopping at the first failure. Prints a table of cases per function and their
outcomes, and the inputs of every failing case (as the draws hypothesis made).

    python benchmarks/fuzz_campaign.py                  # 500 cases per function
    python benchmarks/fuzz_campaign.py --cases 2000 --only texture antialias
    python benchmarks/fuzz_campaign.py --seconds 300    # a time budget per function instead
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_cases  # noqa: E402  (tests/fuzz_cases.py)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as seed_of  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Recorder:
    """hypothesis' data object, remembering what was drawn (to print a failing case's inputs)."""

    def __init__(self, data):
        self.data, self.draws = data, []

    def draw(self, strategy, label=None):
        value = self.data.draw(strategy, label=label)
        self.draws.append((label, value))
        return value


def run(name: str, cases: int, seconds: float | None, seed: int) -> tuple[Counter, dict[str, str], int, float]:
    outcomes: Counter = Counter()
    failures: dict[str, str] = {}  # outcome label -> the first failing case's message and inputs
    start = time.perf_counter()

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def campaign(data):
        if seconds is not None and time.perf_counter() - start > seconds:
            return
        rec = Recorder(data)
        try:
            outcomes[fuzz_cases.CASES[name](rec)] += 1
        except AssertionError as e:
            label = "FAILED: " + str(e).split("\n")[0].split(":")[0][:70]
            outcomes[label] += 1
            failures.setdefault(label, f"{e}\n    draws: {rec.draws}")
        except Exception as e:  # noqa: BLE001 - an unexpected exception is a finding too
            label = f"ERROR {type(e).__name__}: {str(e)[:60]}"
            outcomes[label] += 1
            failures.setdefault(label, f"{e}\n    draws: {rec.draws}\n{traceback.format_exc(limit=4)}")

    seed_of(seed)(campaign)()
    return outcomes, failures, sum(outcomes.values()), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=500, help="examples per function (default 500)")
    p.add_argument("--seconds", type=float, default=None, help="stop a function's run after this many seconds")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(fuzz_cases.CASES), metavar="NAME",
                   help=f"functions to run (default all: {', '.join(sorted(fuzz_cases.CASES))})")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of hypothesis' generation (default 0)")
    args = p.parse_args(argv)
    names = args.only or sorted(fuzz_cases.CASES)
    total_fail = 0
    rows = []
    for name in names:
        outcomes, failures, count, elapsed = run(name, args.cases, args.seconds, args.seed)
        failed = sum(v for k, v in outcomes.items() if k.startswith(("FAILED", "ERROR")))
        total_fail += failed
        rows.append((name, count, failed, elapsed, outcomes))
        print(f"\n== {name}: {count} cases, {failed} failed, {elapsed:.0f} s", flush=True)
        for label, k in outcomes.most_common():
            print(f"   {k:6d}  {label}")
        for text in failures.values():  # the first case of each kind of failure
            print("   --- " + text.replace("\n", "\n   "))
    print("\n| function | cases | failed | s |\n|---|---:|---:|---:|")
    for name, count, failed, elapsed, _ in rows:
        print(f"| {name} | {count} | {failed} | {elapsed:.0f} |")
    print(f"| all | {sum(r[1] for r in rows)} | {total_fail} | {sum(r[3] for r in rows):.0f} |")
    return 1 if total_fail else 0


if __name__ == "__main__":
    raise SystemExit(main())

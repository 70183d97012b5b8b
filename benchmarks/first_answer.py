"""Benchmark: how long a new user waits for the first answer of `fitformer select`.

For each budget (``--budgets``, default ``tiny,quick``) a fresh, empty private
FITFORMER_HOME is made whose ``downloads``, ``models``, ``data`` and ``kernels`` link to the
real cache (as tests/conftest.py does: fetched inputs are shared, no run, profile or DSE
result is), and ``fitformer select --budget <budget> --out <tmp>`` runs in it as a
subprocess (its output passes through). Each budget gets its own home, so a later budget
does not reuse what an earlier one cached.

Printed per budget: the wall time in minutes, the 1-minute load average before and after
(the one after includes this run's own work), the CPUs, the CPU time the run used, and
the verdict against the target (tiny < 5 min, quick < 15 min, on a machine whose load
before the run is < 1): PASS (under target, at any load), FAIL (over target at load < 1,
or select failed), or "load too high to judge" (over target while the machine was busy).
Exit status 1 if any budget FAILs.

    .venv/bin/python benchmarks/first_answer.py --budgets tiny
    .venv/bin/python benchmarks/first_answer.py --dry-run
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MIN = {"tiny": 5.0, "quick": 15.0}
MAX_LOAD = 1.0            # targets hold on an otherwise idle machine
SHARED = ("downloads", "models", "data", "kernels")   # as tests/conftest.py
SELECT_ANSWERED = (0, 3)  # 3: select ran but no device qualifies (still an answer)


def load1() -> float:
    """The 1-minute load average (runnable processes)."""
    return os.getloadavg()[0]


def verdict(minutes: float, target_min: float, load_before: float, rc: int) -> str:
    """PASS / FAIL / load too high to judge, for a run of ``minutes`` (min) against
    ``target_min`` (min) started at 1-minute load ``load_before``; ``rc`` is select's exit
    status."""
    if rc not in SELECT_ANSWERED:
        return f"FAIL (select exited {rc})"
    if minutes < target_min:
        return "PASS"
    if load_before >= MAX_LOAD:
        return "load too high to judge"
    return "FAIL"


def private_home(root: Path, real: Path) -> Path:
    """An empty FITFORMER_HOME under ``root`` that links the real cache's fetched inputs."""
    home = root / "home"
    home.mkdir()
    for sub in SHARED:
        (real / sub).mkdir(parents=True, exist_ok=True)
        (home / sub).symlink_to(real / sub)
    return home


def select_command(budget: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "fitformer", "select", "--budget", budget, "--out", str(out)]


def run_budget(budget: str, real: Path, dry_run: bool) -> bool:
    """Times one budget; returns False if it FAILed."""
    target = TARGET_MIN[budget]
    with tempfile.TemporaryDirectory(prefix=f"first-answer-{budget}-") as tmp:
        home = private_home(Path(tmp), real)
        cmd = select_command(budget, Path(tmp) / "select")
        print(f"== {budget}: FITFORMER_HOME={home} (links {', '.join(SHARED)} to {real})")
        print(f"   $ {' '.join(cmd)}", flush=True)
        if dry_run:
            print(f"   dry run: not started; target < {target:g} min at load < {MAX_LOAD:g}, "
                  f"load now {load1():.2f} on {os.cpu_count()} CPUs")
            return True
        before = load1()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env={**os.environ, "FITFORMER_HOME": str(home)}).returncode
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = load1()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result = verdict(wall / 60, target, before, rc)
    print(f"== {budget}: {wall / 60:.2f} min wall (exit {rc}); load (1 min) {before:.2f} "
          f"before, {after:.2f} after (includes this run); {os.cpu_count()} CPUs; CPU time "
          f"{cpu / 60:.2f} min ({cpu / wall:.2f} cores on average); target < {target:g} min "
          f"at load < {MAX_LOAD:g}: {result}", flush=True)
    return not result.startswith("FAIL")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="tiny,quick",
                    help="comma-separated budgets to time, in order (tiny, quick)")
    ap.add_argument("--dry-run", action="store_true",
                    help="set up the private homes and print the commands, run nothing")
    args = ap.parse_args(argv)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    unknown = [b for b in budgets if b not in TARGET_MIN]
    if not budgets or unknown:
        ap.error(f"--budgets {args.budgets!r}: choose from {', '.join(TARGET_MIN)}")

    from fitformer.data.fetch import SOURCES
    from fitformer.paths import fitformer_home

    real = fitformer_home()
    missing = [s.name for s in SOURCES.values()
               if not (real / s.dest_kind / s.dest_name / "fitformer-source.json").is_file()]
    if missing:
        print(f"the real cache {real} lacks {', '.join(missing)}: run ./setup.sh "
              "(or `fitformer fetch`) first", file=sys.stderr)
        return 2
    ok = [run_budget(b, real, args.dry_run) for b in budgets]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())

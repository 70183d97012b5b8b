"""Are two run caches the same runs? For the Ray acceptance check of issue 21: run
``fitformer experiment patterns --budget tiny`` once in process and once with ``--ray``,
each with its own FITFORMER_HOME, then

    .venv/bin/python benchmarks/compare_run_caches.py HOME_A HOME_B

Printed: the pruned runs in each cache, whether their key hashes (directory names) are the
same set, and for every run in both whether ``run.json`` (apart from the fitformer version
and the torch thread count, which it records but which are not part of the key) and the
measured metrics (accuracy at every precision, loss, sparsity, steps, HP split) are equal
bit for bit, plus the thread counts each side recorded. Exit status 0 when everything is
equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MEASURED = ("accuracy", "loss", "sparsity", "steps", "hp_split")
NOT_KEY = ("fitformer_version", "torch_threads")


def _runs(home: Path) -> dict[str, dict]:
    out = {}
    for d in sorted((home / "runs").glob("*/")):
        if (d / "run.json").is_file() and (d / "metrics.json").is_file():
            out[d.name] = {"run": json.loads((d / "run.json").read_text()),
                           "metrics": json.loads((d / "metrics.json").read_text())}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home_a", type=Path)
    ap.add_argument("home_b", type=Path)
    args = ap.parse_args()
    a, b = _runs(args.home_a), _runs(args.home_b)
    pruned_a = {k for k, v in a.items() if v["run"].get("kind") == "prune"}
    pruned_b = {k for k, v in b.items() if v["run"].get("kind") == "prune"}
    print(f"{args.home_a}: {len(pruned_a)} pruned runs; {args.home_b}: {len(pruned_b)}")
    same_keys = pruned_a == pruned_b
    print(f"same run keys: {same_keys}"
          + ("" if same_keys else f" (only in A: {sorted(pruned_a - pruned_b)}; "
             f"only in B: {sorted(pruned_b - pruned_a)})"))
    differ = []
    for name in sorted(pruned_a & pruned_b):
        ra, rb = a[name], b[name]
        key_a = {k: v for k, v in ra["run"].items() if k not in NOT_KEY}
        key_b = {k: v for k, v in rb["run"].items() if k not in NOT_KEY}
        m_a = {k: ra["metrics"].get(k) for k in MEASURED}
        m_b = {k: rb["metrics"].get(k) for k in MEASURED}
        if key_a != key_b or m_a != m_b:
            differ.append(name)
    threads = {side: sorted({str(r["run"].get("torch_threads")) for n, r in runs.items()
                             if n in pruned})
               for side, runs, pruned in (("A", a, pruned_a), ("B", b, pruned_b))}
    print(f"runs in both: {len(pruned_a & pruned_b)}; run.json and metrics equal bit for "
          f"bit: {len(pruned_a & pruned_b) - len(differ)}"
          + (f"; differ: {differ}" if differ else ""))
    print(f"torch threads recorded: A {', '.join(threads['A'])}; B {', '.join(threads['B'])}")
    ok = same_keys and not differ and bool(pruned_a)
    print("verdict: " + ("the same runs" if ok else "NOT the same runs"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Issue 17, item 2: `fitformer formats` on an all-zero matrix (sparsity 1.0): the lower
bound is 0 bits, so the ratio to it is undefined: "-" in the table, null in JSON, exit 0."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from fitformer.formats import FORMATS
from fitformer.formats.report import formats_for_run, formats_for_shape


def run_cli(*args):
    env = dict(os.environ)
    env.pop("FITFORMER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fitformer", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("pattern", ["hp", "unstructured", "block", "cbb", "bank", "nm"])
def test_all_zero_shape_has_no_ratio(pattern):
    rows = formats_for_shape((312, 312), pattern, 1.0)
    assert [r["format"] for r in rows] == list(FORMATS)
    for r in rows:
        assert r["bound_bits"] == 0 and r["ratio_to_bound"] is None
        assert r["value_bits"] == (312 * 312 * 16 if r["format"] == "dense" else 0)


def test_cli_formats_shape_all_zero_prints_the_table():
    proc = run_cli("formats", "--shape", "312x312", "--pattern", "hp", "--sparsity", "1.0")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    hp_row = next(ln for ln in proc.stdout.splitlines() if ln.strip("│ ").startswith("hp "))
    assert hp_row.rstrip(" │").endswith("-")
    assert "ratio is undefined" in proc.stdout
    rows = json.loads(run_cli("formats", "--shape", "312x312", "--pattern", "hp",
                              "--sparsity", "1.0", "--json").stdout,
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert all(r["ratio_to_bound"] is None for r in rows)


def _fake_pruned_run(path, sparsity_one: bool):
    """A minimal pruned HP run directory: one 32x48 layer, its mask and pruning.json."""
    path.mkdir()
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(32, 48, dtype=torch.bool)
    if not sparsity_one:
        mask[:16, :] = True
    save_file({"enc.q.weight": w * mask}, str(path / "model.safetensors"))
    save_file({"enc.q": mask}, str(path / "masks.safetensors"))
    k1 = 0 if sparsity_one else 1
    (path / "pruning.json").write_text(json.dumps({
        "pattern": "hp", "params": {"r": 16, "c": 16, "B": 4, "level2_density": 1.0},
        "layers": {"enc.q": {"K1": k1, "k": 0 if sparsity_one else 4}}}))
    return path


def test_formats_pruned_at_sparsity_one_has_no_ratio(tmp_path):
    run = _fake_pruned_run(tmp_path / "run", sparsity_one=True)
    report = formats_for_run(run)        # was ZeroDivisionError
    assert report["total_bound_bits"] == 0
    assert all(r["ratio_to_bound"] is None for r in report["total"])
    proc = run_cli("formats", "--pruned", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "ratio is undefined" in proc.stdout
    # A run that keeps weights still has its ratios.
    kept = formats_for_run(_fake_pruned_run(tmp_path / "kept", sparsity_one=False))
    assert all(r["ratio_to_bound"] > 0 for r in kept["total"])

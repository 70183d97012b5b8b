"""``fitformer sweep`` (issue 21): a malformed sweep file is refused with a clear error
before any run starts, and a tiny sweep writes its rows, table and plot from the same runs
that ``fitformer prune`` makes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from fitformer.errors import FitformerError
from fitformer.experiments.sweep import chains, load_sweep, run_sweep


@pytest.mark.parametrize("text, message", [
    ("sparsities: [0.5\n", "not valid YAML"),
    ("- 0.5\n", "must be a YAML mapping"),
    ("budget: tiny\n", "sparsities: Field required"),
    ("sparsities: [0.5, 1.0]\n", r"\[1.0\] outside \(0, 1\)"),
    ("sparsities: [0.5]\nbudget: huge\n", "budget: Input should be 'tiny', 'quick' or"),
    ("sparsities: [0.5]\npatterns: [hp, nope]\n", r"patterns \['nope'\] are unknown; choose "
                                                  "from bank, block, cbb, hp, nm, unstructured"),
    ("sparsities: [0.5]\nrecipe: {lr: -1}\n", "recipe.lr: Value error, must be a positive"),
    ("sparsities: [0.5]\nrecipe: {distill_augment: 2}\n",
     "distill_augment labels its copies with the teacher"),
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_augment: true}\n",
     re.escape("recipe.distill_augment: Value error, got true (YAML reads")),
    # YAML true/false is not read as 1/0, nor a quoted number as a number.
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_alpha: true}\n",
     re.escape("recipe.distill_alpha: Value error, got true (YAML reads "
               "true/false/yes/no/on/off as a flag); give a number")),
    ("sparsities: [0.5]\npattern_params: {banks: false}\n",
     "pattern_params.banks: Value error, got false"),
    ("sparsities: [0.5]\nrecipe: {distill: yes}\n",
     re.escape("recipe.distill: Value error, got true (YAML reads true/false/yes/no/on/off "
               "as a flag); give one of 'none', 'logits', 'layers'")),
    ("sparsities: [true]\n", re.escape("sparsities: Value error, got true (YAML reads")),
    ("sparsities: true\n", "give a list of numbers"),
    ("sparsities: ['0.5']\n", "sparsities: Value error, got the string '0.5'; give a list of "
     "numbers, without quotes"),
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_alpha: '0.9'}\n",
     "recipe.distill_alpha: Value error, got the string '0.9'; give a number, without quotes"),
    ("sparsities: [0.5]\nfrom_dense: 'yes'\n",
     "from_dense: Value error, got the string 'yes'; give true or false"),
    # Settings that would be ignored.
    ("sparsities: [0.5]\nrecipe: {distill: none, distill_alpha: 0.5}\n",
     "distill_alpha set, but distill is none"),
    ("sparsities: [0.5]\npattern_params: {nm_m: 20}\n",
     re.escape("pattern_params.nm_m is the m of the nm pattern, and patterns ['hp'] has "
               "none")),
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_augment: 500}\n",
     "recipe.distill_augment: Input should be less than or equal to 100"),
    # The file's own key names, not prune's flags (--distill-alpha).
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_alpha: 2}\n",
     "recipe.distill_alpha: Input should be less than or equal to 1"),
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_temperature: 0}\n",
     "recipe.distill_temperature: Input should be greater than 0"),
    ("sparsities: [0.5]\nrecipe: {distill: logits, distill_alpha: .nan}\n",
     "recipe.distill_alpha: Input should be a finite number"),
    ("sparsities: [0.5]\nrecipe: {distil: logits}\n", "recipe.distil: Extra inputs"),
    ("sparsities: [0.5]\ndatasets: [missing.csv]\n", "dataset 'missing.csv' is not a file"),
    ("sparsities: [0.5]\nmodels: [./no-such-model]\n", "model './no-such-model' is not a folder"),
    ("sparsities: [0.5]\npattern_params: {level2_density: 0.25}\n",
     "hp 0.5: --level2-density 0.25 cannot reach"),
    ("sparsities: [0.5]\npattern_params: {banks: 3}\n", "hp 0.5: --banks 3 must divide"),
])
def test_a_malformed_sweep_file_is_refused_before_any_run(tmp_path, text, message):
    f = tmp_path / "sweep.yaml"
    f.write_text(text)
    with pytest.raises(FitformerError, match=message) as err:
        load_sweep(f)
    assert str(f) in str(err.value)


def test_the_cli_refuses_a_bad_file_before_ray_starts(tmp_path, empty_home):
    f = tmp_path / "sweep.yaml"
    f.write_text("sparsities: [0.5]\npatterns: [hp, nope]\n")
    res = subprocess.run([sys.executable, "-m", "fitformer", "sweep", str(f), "--ray"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "patterns ['nope'] are unknown" in res.stderr
    assert "Ray" not in res.stderr and "Traceback" not in res.stderr
    assert not (empty_home / "runs").exists()
    missing = subprocess.run([sys.executable, "-m", "fitformer", "sweep",
                              str(tmp_path / "none.yaml")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    from fitformer.experiments.sweep import load_sweep

    with pytest.raises(FitformerError, match="is a folder; give a YAML file"):
        load_sweep(tmp_path)


def test_chains_of_a_grid(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("budget: tiny\npatterns: [hp, unstructured]\nsparsities: [0.9, 0.5]\n"
                 "recipe: {distill: logits, distill_alpha: 0.9, lr: 2.0e-4}\n")
    spec = load_sweep(f)
    cs = chains(spec)
    assert [c.name for c in cs] == ["default / rotten-tomatoes / hp",
                                    "default / rotten-tomatoes / unstructured"]
    assert [p.spec.sparsity for p in cs[0].points] == [0.5, 0.9]   # sorted: masks shrink
    assert cs[0].points[0].distill.alpha == 0.9 and cs[0].points[0].learning_rate == 2e-4
    twice = chains(spec.model_copy(update={"patterns": ["hp", "hp"]}))
    assert [c.name for c in twice] == ["default / rotten-tomatoes / hp"]
    split = chains(spec.model_copy(update={"from_dense": True}))
    assert len(split) == 4 and all(c.from_dense for c in split)


def test_a_tiny_sweep_writes_the_runs_prune_makes(tiny_hp_run, tmp_path):
    _, hp = tiny_hp_run
    f = tmp_path / "s.yaml"
    f.write_text("budget: tiny\npatterns: [hp]\nsparsities: [0.8]\n")
    rows = run_sweep(load_sweep(f), out_dir=tmp_path / "out", log=lambda _: None)
    assert len(rows) == 1
    r = rows[0]
    assert r["run_dir"] == str(hp.path)          # the same key as `fitformer prune`
    assert r["dev"] == hp.metrics["accuracy"]["dev"]
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["rows"][0]["requested_sparsity"] == 0.8
    assert saved["spec"]["budget"] == "tiny"
    assert "| default | rotten-tomatoes | hp | 0.8 /" in (tmp_path / "out" / "sweep.md").read_text()
    assert (tmp_path / "out" / "img" / "sweep-accuracy.png").stat().st_size > 1000

"""The pattern-comparison runner on the tiny budget: one series, real runs, real outputs."""

import json

from fitformer.experiments.patterns import protocol, run_patterns, wilson_interval


def test_protocol_covers_the_issue():
    names = [s.name for s in protocol()]
    assert names[:5] == ["hp", "unstructured", "cbb", "bank", "block"]
    assert {"hp-d2-1", "hp-d2-0.75", "hp-d2-0.25", "hp-admm"} <= set(names)
    hp = protocol()[0]
    assert [s.sparsity for s in hp.specs] == [0.5, 0.7, 0.8, 0.9]


def test_wilson_interval_hand_case():
    # 850 of 1000, z = 1.96: centre (p + z^2/2n) / (1 + z^2/n) = 0.84866, half-width
    # z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 0.02213 -> [0.8265, 0.8708].
    lo, hi = wilson_interval(850, 1000)
    assert round(lo, 4) == 0.8265 and round(hi, 4) == 0.8708


def test_runner_writes_table_json_and_plot(in_tiny_home, tmp_path):
    _, dense = in_tiny_home
    rows = run_patterns(budget="tiny", out_dir=tmp_path, only=["hp-admm"],
                        dense_dir=dense.path, log=lambda m: None)
    assert len(rows) == 1 and rows[0]["pruner"] == "admm"
    data = json.loads((tmp_path / "pattern-comparison.json").read_text())
    assert data["budget"] == "tiny" and data["rows"][0]["dev_n"] == 160
    md = (tmp_path / "pattern-comparison.md").read_text()
    assert "HP (default split), ADMM" in md and "--budget tiny" in md
    png = (tmp_path / "img" / "pattern-accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_profile_recipe_adds_hp_1x16_and_distils():
    import pytest

    from fitformer.errors import FitformerError
    from fitformer.experiments.patterns import recipe_kwargs

    names = [s.name for s in protocol("profile")]
    assert names[:7] == ["hp", "hp-1x16", "hp-per-layer-1x16", "unstructured", "cbb", "bank",
                         "block"]
    assert all(sp.block == (1, 16) for sp in protocol("profile")[1].specs)
    per_layer = protocol("profile")[2].specs
    assert [sp.sparsity for sp in per_layer] == [0.5, 0.7, 0.8, 0.9]
    assert all(sp.per_layer and sp.block == (1, 16) for sp in per_layer)
    assert not any(sp.per_layer for s in protocol() for sp in s.specs)
    assert "hp-1x16" not in [s.name for s in protocol()]
    kw = recipe_kwargs("profile")
    assert kw["learning_rate"] == 2e-4
    assert (kw["distill"].mode, kw["distill"].temperature, kw["distill"].alpha) == \
        ("logits", 2.0, 0.9)
    assert recipe_kwargs("none") == {}
    with pytest.raises(FitformerError, match="--recipe 'best': choose none or profile"):
        recipe_kwargs("best")


def test_the_summary_gives_each_series_gap_to_unstructured_and_counts_collapses():
    from fitformer.experiments.patterns import summary_lines

    def row(series, label, s, dev):
        return {"series": series, "label": label, "requested_sparsity": s, "dev_fp32": dev}

    rows = [row("unstructured", "unstructured", 0.5, 0.835), row("unstructured",
            "unstructured", 0.9, 0.793), row("hp", "HP", 0.5, 0.828), row("hp", "HP", 0.9,
            0.578), row("bank", "bank-balanced", 0.5, 0.840)]
    lines = summary_lines(rows, 0.578)
    assert "| series | 0.5 | 0.9 |" in lines
    assert "| HP | -0.007 | -0.215 |" in lines and "| bank-balanced | +0.005 | - |" in lines
    assert lines[-1] == ("Runs at or below the dev majority-class rate (0.578): 1 of 5 "
                         "(HP 0.9).")
    assert summary_lines([], 0.5) == []

import json

import pytest

from fitformer.data import load_dataset
from fitformer.data.classification import load_local
from fitformer.data.splits import duplicate_key
from fitformer.errors import FitformerError


@pytest.fixture(scope="module")
def rt(real_cache):
    return load_dataset("rotten-tomatoes")


def test_rotten_tomatoes_split_sizes_and_labels(rt):
    assert (len(rt.test), len(rt.dev)) == (1000, 1000)
    assert rt.label_names == ("fresh", "rotten")
    # 7,403 fresh + 5,405 rotten rows, less 57 duplicate snippets.
    assert len(rt.train) == 7403 + 5405 - 57 - 2000
    assert rt.dropped == {"not_fresh_or_rotten": 1097, "duplicates": 57,
                          "conflicting_labels": 0}


def test_rotten_tomatoes_split_is_stratified_disjoint_and_deterministic(rt):
    share = rt.train.label_counts(rt.label_names)["fresh"] / len(rt.train)
    for split in (rt.dev, rt.test):
        fresh = split.label_counts(rt.label_names)["fresh"]
        assert abs(fresh - share * 1000) <= 2
    keys = [{duplicate_key(t) for t in s.texts} for s in (rt.train, rt.dev, rt.test)]
    assert sum(map(len, keys)) == len(rt.train) + len(rt.dev) + len(rt.test)  # no dup inside
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    again = load_dataset("rotten-tomatoes")
    assert again.test == rt.test and again.dev == rt.dev and again.train == rt.train


def test_tatoeba_grouped_split_keeps_attribution(real_cache):
    ds = load_dataset("tatoeba-en-fr", task="translation")
    assert len(ds.train) + len(ds.dev) + len(ds.test) == 178009
    assert len(ds.test) >= 1000 and len(ds.dev) >= 1000
    groups = [{duplicate_key(s) for s in split.sources} for split in (ds.train, ds.dev, ds.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2])
    assert not (groups[1] & groups[2])
    assert all(a.startswith("CC-BY 2.0 (France) Attribution: tatoeba.org")
               for a in ds.test.attribution)
    assert "CC-BY 2.0" in ds.license


def test_task_mismatch_is_a_user_error(real_cache):
    with pytest.raises(FitformerError, match="--task classification"):
        load_dataset("rotten-tomatoes", task="translation")


def _rows(n_per_class=30):
    return ([(f"great movie number {i}", "pos") for i in range(n_per_class)]
            + [(f"awful movie number {i}", "neg") for i in range(n_per_class)])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_local_files_in_three_formats(tmp_path, suffix):
    path = tmp_path / f"reviews{suffix}"
    rows = _rows() + [("great movie number 0", "pos")]  # one duplicate
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"review": t, "y": y}) + "\n" for t, y in rows))
    else:
        sep = "," if suffix == ".csv" else "\t"
        path.write_text(f"review{sep}y\n" + "".join(f"{t}{sep}{y}\n" for t, y in rows))
    ds = load_local(path, text_column="review", label_column="y")
    assert ds.label_names == ("neg", "pos")
    assert (len(ds.test), len(ds.dev), len(ds.train)) == (6, 6, 48)
    assert ds.dropped["duplicates"] == 1
    assert ds.test.label_counts(ds.label_names) == {"neg": 3, "pos": 3}


def test_local_file_with_split_column(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["text,label,split"]
    for i, (t, y) in enumerate(_rows(10)):
        lines.append(f"{t},{y},{['train', 'validation', 'test'][i % 3]}")
    path.write_text("\n".join(lines) + "\n")
    ds = load_local(path)
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (7, 7, 6)
    assert "split column" in ds.data_split

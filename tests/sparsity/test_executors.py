"""Chains of pruning points in this process and as Ray tasks (issue 21): the same runs
(keys and metrics) either way, a worker killed mid-run recovered with the same metrics, and
the errors a user can cause.

The Ray tests start a local 2-CPU Ray instance (two one-CPU workers) and run the `tiny`
budget from the session's tiny dense fine-tune, copied into a private home per run, with
one torch thread per chain (results are equal at equal thread counts).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fitformer.errors import FitformerError
from fitformer.sparsity.chains import (
    Chain,
    DenseJob,
    PointJob,
    split_from_dense,
    unique_chains,
)
from fitformer.sparsity.executors import RAY_DEFAULT, Executor, run_chains
from fitformer.sparsity.prune import PruneSpec

#: Two chains of the pattern comparison: HP with d2 = 1 at 0.8 -> 0.9, and HP with ADMM at
#: 0.8 (three tiny points).
SERIES = ["hp-d2-1", "hp-admm"]


def _home_with_dense(tmp: Path, tiny_dense) -> tuple[Path, Path]:
    """A private FITFORMER_HOME seeing the real inputs, with a copy of the tiny dense run."""
    src_home, dense = tiny_dense
    h = tmp / "home"
    h.mkdir(parents=True)
    for sub in ("downloads", "models", "data", "kernels"):
        (h / sub).symlink_to((src_home / sub).resolve())
    shutil.copytree(dense.path, h / "runs" / dense.path.name)
    return h, h / "runs" / dense.path.name


def _essential(metrics: dict) -> dict:
    """What must be equal between two runs of one key (not wall times or resume counts)."""
    return {k: metrics[k] for k in ("accuracy", "loss", "sparsity", "steps", "hp_split")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dense):
    """The two series in this process at one torch thread: rows of run_patterns."""
    from fitformer.experiments.patterns import run_patterns

    home, dense_dir = _home_with_dense(tmp_path_factory.mktemp("here"), tiny_dense)
    mp = pytest.MonkeyPatch()
    mp.setenv("FITFORMER_HOME", str(home))
    try:
        rows = run_patterns(budget="tiny", dense_dir=dense_dir, only=SERIES,
                            out_dir=home / "out", executor=Executor(threads=1))
    finally:
        mp.undo()
    return home, {r["run_dir"]: r for r in rows}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, log_to_driver=False,
             include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_patterns_on_ray_are_the_runs_made_in_process(reference, ray_cluster, tiny_dense,
                                                      tmp_path, monkeypatch):
    from fitformer.experiments.patterns import run_patterns

    here_home, here = reference
    assert len(here) == 3
    for r in here.values():   # one torch thread in this process, recorded in run.json
        run = json.loads((here_home / "runs" / r["run_dir"] / "run.json").read_text())
        assert run["torch_threads"] == 1
    home, dense_dir = _home_with_dense(tmp_path, tiny_dense)
    monkeypatch.setenv("FITFORMER_HOME", str(home))
    lines: list[str] = []
    rows = run_patterns(budget="tiny", dense_dir=dense_dir, only=SERIES, out_dir=home / "out",
                        executor=Executor(ray=RAY_DEFAULT), log=lines.append)
    ray_rows = {r["run_dir"]: r for r in rows}
    # The same run keys (directory names are key hashes) ...
    assert set(ray_rows) == set(here)
    for name, r in ray_rows.items():
        path = home / "runs" / name
        run = json.loads((path / "run.json").read_text())
        ref_run = json.loads((here_home / "runs" / name / "run.json").read_text())
        assert run["torch_threads"] == 1
        drop = ("fitformer_version", "torch_threads")
        assert ({k: v for k, v in run.items() if k not in drop}
                == {k: v for k, v in ref_run.items() if k not in drop})
        # ... and the same metrics, bit for bit.
        m = json.loads((path / "metrics.json").read_text())
        ref = json.loads((here_home / "runs" / name / "metrics.json").read_text())
        assert _essential(m) == _essential(ref)
        assert r["dev_fp32"] == here[name]["dev_fp32"]
    # Progress on the driver: both chains started on a worker, and every point counted.
    assert sum("started on" in x for x in lines) == 2
    assert any(x.startswith("[3/3 points]") for x in lines)
    report = json.loads((home / "out" / "pattern-comparison.json").read_text())
    assert report["runs_finished"] == 3 and not report["from_dense"]


def test_a_worker_killed_mid_run_is_recovered_with_the_same_metrics(
        reference, ray_cluster, tiny_dense, tmp_path, monkeypatch):
    here_home, here = reference
    home, dense_dir = _home_with_dense(tmp_path, tiny_dense)
    monkeypatch.setenv("FITFORMER_HOME", str(home))
    chain = Chain("hp-d2-1", DenseJob(dense_dir=str(dense_dir)), tuple(
        PointJob(PruneSpec("hp", s, level2_density=1.0), budget="tiny") for s in (0.8, 0.9)))
    starts: list[dict] = []
    killed: list[str] = []

    def kill_at_first_checkpoint(pid: int) -> None:
        # The tiny run checkpoints its last step before it evaluates: kill the worker
        # then, so the task that Ray runs again resumes from that checkpoint.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            found = list((home / "runs" / ".partial").glob("*/checkpoint.pt"))
            if found:
                os.kill(pid, signal.SIGKILL)
                killed.append(found[0].parent.name)
                return
            time.sleep(0.02)

    def on_event(ev: dict) -> None:
        if ev["event"] == "start":
            starts.append(ev)
            if len(starts) == 1:
                threading.Thread(target=kill_at_first_checkpoint, args=(ev["pid"],),
                                 daemon=True).start()

    lines: list[str] = []
    [points] = run_chains([chain], Executor(ray=RAY_DEFAULT), log=lines.append,
                          on_event=on_event)
    assert killed, "no checkpoint appeared to kill the worker at"
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]
    assert any("run again" in x and "worker was lost" in x for x in lines)
    assert [p.run_dir.name for p in points] == [
        r["run_dir"] for r in here.values() if r["series"] == "hp-d2-1"]
    first = json.loads((points[0].run_dir / "metrics.json").read_text())
    assert points[0].run_dir.name == killed[0]
    assert first["resumed_from_step"] == first["steps"]   # resumed from the checkpoint
    for p in points:
        ref = json.loads((here_home / "runs" / p.run_dir.name / "metrics.json").read_text())
        assert _essential(p.metrics) == _essential(ref)
    assert not list((home / "runs" / ".partial").glob("*/checkpoint.pt"))


def test_from_dense_splits_chains_into_independent_points():
    dense = DenseJob(budget="tiny")
    pts = tuple(PointJob(PruneSpec("hp", s), budget="tiny") for s in (0.5, 0.7))
    a = Chain("a", dense, pts)
    b = Chain("b", dense, pts[:1])
    split = split_from_dense([a, b])
    # hp 0.5 appears once: the same job on the same dense run.
    assert [c.name for c in split] == ["a @ 0.5", "a @ 0.7"]
    assert all(c.from_dense and len(c.points) == 1 for c in split)
    assert unique_chains([a, Chain("a2", dense, pts)]) == [a]
    with pytest.raises(FitformerError, match="both named 'a'"):
        unique_chains([a, Chain("a", dense, pts[:1])])
    with pytest.raises(FitformerError, match="decrease"):
        Chain("c", dense, tuple(reversed(pts)))


def test_executor_refuses_bad_resources_and_missing_ray(monkeypatch):
    with pytest.raises(FitformerError, match="--cpus-per-task 0"):
        Executor(ray=RAY_DEFAULT, cpus_per_task=0)
    with pytest.raises(FitformerError, match="--threads 0"):
        Executor(threads=0)
    monkeypatch.setitem(sys.modules, "ray", None)   # as if not installed
    chain = Chain("a", DenseJob(budget="tiny"), (PointJob(PruneSpec("hp", 0.5)),))
    with pytest.raises(FitformerError, match=r"pip install 'fitformer\[ray\]'"):
        run_chains([chain], Executor(ray=RAY_DEFAULT))


def test_ray_flag_takes_an_optional_address():
    from fitformer.cli import _ray_flag_value

    assert _ray_flag_value(["sweep", "s.yaml", "--ray"]) == ["sweep", "s.yaml", "--ray",
                                                             RAY_DEFAULT]
    assert _ray_flag_value(["sweep", "--ray", "s.yaml"]) == ["sweep", "--ray", RAY_DEFAULT,
                                                             "s.yaml"]
    assert _ray_flag_value(["profile", "--ray", "--budget", "tiny"])[2] == RAY_DEFAULT
    assert _ray_flag_value(["profile", "--ray", "10.0.0.2:6379"]) == [
        "profile", "--ray", "10.0.0.2:6379"]

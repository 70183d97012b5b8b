"""Where chains of pruning points run: in this process, or as tasks of a Ray cluster
(issue 21).

:func:`run_chains` first makes the chains' dense references (each once), then runs the
chains: one after another in this process, or each as one Ray task (Moritz et al., "Ray: A
Distributed Framework for Emerging AI Applications", OSDI 2018) with the resources it
declares (:class:`Executor`: CPUs and GPUs per task). A chain stays one task, its points in
order; ``--from-dense`` chains (:func:`fitformer.sparsity.chains.split_from_dense`) have one
point each and so spread over the workers.

Every task writes its runs to the run cache of design.md §9 under the driver's
``$FITFORMER_HOME``, passed to the workers, with the same run keys as in-process runs: the
cache must be a path that every node sees (a shared file system, the same mount point on
every node). A worker lost mid-run (process killed, node gone) fails its task; Ray runs it
again (``max_retries``), on another worker if need be, and the chain resumes from its
finished runs and the run in progress from its checkpoint (:mod:`fitformer.training.loop`),
so it ends with the same metrics as an uninterrupted run. The lock that keeps two
processes from training one run (:func:`fitformer.training.runs.start_partial`) is an
``flock`` that the operating system releases when the lost process dies.

Torch threads: a task uses ``threads`` threads (default: its CPUs), set before it trains;
``run.json`` records the count (``torch_threads``). Results are equal, bit for bit, at equal
thread counts; another count changes the order of floating-point sums.

Progress: the driver prints a line when a chain starts (node and process), when each point
finishes (``[done/total points]``, dev accuracy, cached or trained and in how long), when
a task is run again after a lost worker, and every minute the chains still running. The
workers' own output goes to Ray's logs (``/tmp/ray/session_latest/logs`` on each node).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fitformer.errors import FitformerError
from fitformer.sparsity.chains import Chain, DenseJob, PointResult, run_chain

#: ``--ray`` given without an address: ``ray.init()``'s own lookup (``$RAY_ADDRESS``, then
#: a cluster started by ``ray start`` on this machine, else a new local instance).
RAY_DEFAULT = "default"
RAY_INSTALL = "pip install 'fitformer[ray]'"
#: Seconds between the driver's lines on the chains still running.
HEARTBEAT_S = 60.0


@dataclass(frozen=True)
class Executor:
    """How :func:`run_chains` runs chains.

    Attributes:
        ray: ``None``: in this process, one chain after another. :data:`RAY_DEFAULT`:
            Ray tasks on the cluster ``ray.init()`` finds or starts. Otherwise the address
            of a running cluster (``HOST:6379``, ``ray://HOST:10001``, ``auto``).
        cpus_per_task: CPUs each Ray task declares (Ray schedules by it).
        gpus_per_task: GPUs each Ray task declares (0: none).
        threads: torch threads per chain (default: ``cpus_per_task`` for Ray tasks,
            torch's own default in this process).
        max_retries: times Ray runs a task again after its worker was lost.
    """

    ray: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    threads: int | None = None
    max_retries: int = 3

    def __post_init__(self):
        if not (self.cpus_per_task > 0):
            raise FitformerError(f"--cpus-per-task {self.cpus_per_task} must be > 0.")
        if self.gpus_per_task < 0:
            raise FitformerError(f"--gpus-per-task {self.gpus_per_task} must be >= 0.")
        if self.threads is not None and self.threads < 1:
            raise FitformerError(f"--threads {self.threads} must be >= 1.")
        if self.max_retries < 0:
            raise FitformerError(f"max_retries {self.max_retries} must be >= 0.")

    @property
    def task_threads(self) -> int:
        """Torch threads of one Ray task."""
        return self.threads or max(1, int(self.cpus_per_task))


def point_line(r: PointResult, done: int, total: int, where: str = "") -> str:
    """The progress line of a finished point."""
    acc = r.metrics.get("accuracy", {}).get("dev", {})
    score = (f"dev {acc['fp32']:.4f}" if isinstance(acc, dict) and "fp32" in acc else
             f"dev BLEU {r.metrics.get('bleu', {}).get('dev', {}).get('fp32', float('nan')):.2f}")
    how = "cached" if r.cached else f"trained in {r.metrics.get('wall_time_s', 0) / 60:.1f} min"
    return (f"[{done}/{total} points] {r.chain}: {r.point.label} {score} ({how}"
            f"{', ' + where if where else ''}) {r.run_dir.name}")


def run_chains(chains: Sequence[Chain], executor: Executor = Executor(), *,
               log: Callable[[str], None] = print,
               on_point: Callable[[PointResult], None] | None = None,
               on_event: Callable[[dict], None] | None = None) -> list[list[PointResult]]:
    """Run ``chains`` (dense references first, each once) and return their points.

    Args:
        chains: what to run (see :func:`fitformer.sparsity.chains.unique_chains`: two
            chains that train one run would wait on its lock).
        executor: in this process, or Ray tasks with their resources and threads.
        log: progress lines.
        on_point: called on the driver (this process) with each finished point, as it
            finishes.
        on_event: called on the driver with every event a Ray task reports:
            ``{"event": "start", "chain", "pid", "node", "attempt"}`` and
            ``{"event": "point", "chain", "result": PointResult}``.

    Returns:
        One list per chain, in the order of ``chains``, of its finished points in order.

    Raises:
        FitformerError: Ray missing or unreachable, or chains that failed (after the others
            finished: every finished run stays cached; the message names each failed chain
            and why).
    """
    chains = list(chains)
    total = sum(len(c.points) for c in chains)
    if executor.ray is None:
        return _run_here(chains, executor, total, log, on_point)
    return _run_ray(chains, executor, total, log, on_point, on_event)


def _unique_dense(chains: Sequence[Chain]) -> list[DenseJob]:
    return list(dict.fromkeys(c.dense for c in chains))


def _run_here(chains, executor: Executor, total: int, log, on_point
              ) -> list[list[PointResult]]:
    import torch

    before = torch.get_num_threads()
    if executor.threads is not None:
        torch.set_num_threads(executor.threads)
    try:
        return _run_chains_here(chains, total, log, on_point)
    finally:
        torch.set_num_threads(before)


def _run_chains_here(chains, total: int, log, on_point) -> list[list[PointResult]]:
    for dense in _unique_dense(chains):
        res = dense.run()
        log(f"dense reference {dense.label}: {'cached' if res.cached else 'trained'} "
            f"{res.path.name}")
    done = 0
    out = []

    def finished(r: PointResult) -> None:
        nonlocal done
        done += 1
        log(point_line(r, done, total))
        if on_point is not None:
            on_point(r)

    for chain in chains:
        out.append(run_chain(chain, on_point=finished))
    return out


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FitformerError(f"--ray needs Ray, which is not installed: {RAY_INSTALL} "
                             "(or drop --ray to run in this process).") from None
    return ray


def _init_ray(ray, address: str) -> None:
    if ray.is_initialized():
        return
    kwargs = {} if address == RAY_DEFAULT else {"address": address}
    try:
        ray.init(log_to_driver=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FitformerError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); start one with `ray start "
            "--head` (and `ray start --address HEAD:6379` on each worker), or give --ray "
            "without an address to start a local one.") from None


def _task_env(executor: Executor) -> dict:
    from fitformer.paths import fitformer_home

    n = str(executor.task_threads)
    return {"env_vars": {"FITFORMER_HOME": str(fitformer_home()), "OMP_NUM_THREADS": n,
                         "MKL_NUM_THREADS": n, "TOKENIZERS_PARALLELISM": "false"}}


def _where() -> tuple[int, str]:
    import socket

    return os.getpid(), socket.gethostname()


def _check_home() -> None:
    from fitformer.paths import fitformer_home, runs_dir

    home = fitformer_home()
    try:
        runs_dir().mkdir(parents=True, exist_ok=True)
        probe = runs_dir() / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        _, node = _where()
        raise FitformerError(
            f"node {node} cannot write the run cache {home} ({exc}); the cache must be a "
            "shared file system mounted at the same path on every node (set FITFORMER_HOME "
            "on the driver to it).") from None


def _dense_task(dense: DenseJob, threads: int):
    import torch

    torch.set_num_threads(threads)
    _check_home()
    return dense.run()


def _chain_task(chain: Chain, threads: int, events) -> list[PointResult]:
    import torch

    torch.set_num_threads(threads)
    pid, node = _where()
    events.put.remote({"event": "start", "chain": chain.name, "pid": pid, "node": node})
    _check_home()
    return run_chain(chain, on_point=lambda r: events.put.remote(
        {"event": "point", "chain": chain.name, "result": r, "pid": pid, "node": node}))


class _Events:
    """The driver's mailbox: tasks put events, the driver drains them."""

    def __init__(self):
        self.items: list[dict] = []

    def put(self, item: dict) -> None:
        self.items.append(item)

    def drain(self) -> list[dict]:
        out, self.items = self.items, []
        return out


def _cause(ray, exc: BaseException) -> BaseException:
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


def _run_ray(chains, executor: Executor, total: int, log, on_point, on_event
             ) -> list[list[PointResult]]:
    ray = _import_ray()
    _init_ray(ray, executor.ray)
    threads = executor.task_threads
    options = dict(num_cpus=executor.cpus_per_task, num_gpus=executor.gpus_per_task,
                   max_retries=executor.max_retries, runtime_env=_task_env(executor))
    resources = ray.cluster_resources()
    log(f"Ray cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs on "
        f"{len([n for n in ray.nodes() if n.get('Alive')])} node(s); {len(chains)} chain(s), "
        f"{total} point(s); each task {executor.cpus_per_task:g} CPU(s), "
        f"{executor.gpus_per_task:g} GPU(s), {threads} torch thread(s); run cache "
        f"{_task_env(executor)['env_vars']['FITFORMER_HOME']}")
    if resources.get("CPU", 0) < executor.cpus_per_task:
        raise FitformerError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs, fewer than "
                             f"--cpus-per-task {executor.cpus_per_task:g}; lower it.")
    if executor.gpus_per_task > resources.get("GPU", 0):
        raise FitformerError(f"--gpus-per-task {executor.gpus_per_task:g}: the Ray cluster has "
                             f"{resources.get('GPU', 0):g} GPUs.")
    dense_remote = ray.remote(_dense_task).options(**options)
    refs = {dense_remote.remote(d, threads): d for d in _unique_dense(chains)}
    for ref, dense in refs.items():
        try:
            res = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - Ray wraps the task's error
            cause = _cause(ray, exc)
            raise FitformerError(f"dense reference {dense.label} failed: {cause}") from None
        log(f"dense reference {dense.label}: {'cached' if res.cached else 'trained'} "
            f"{res.path.name}")

    events = ray.remote(_Events).options(num_cpus=0).remote()
    chain_remote = ray.remote(_chain_task).options(**options)
    pending = {chain_remote.remote(c, threads, events): i for i, c in enumerate(chains)}
    results: list[list[PointResult] | None] = [None] * len(chains)
    failures: list[str] = []
    starts: dict[str, list[dict]] = {}
    reported: set[tuple[str, str]] = set()
    done = 0
    last_beat = time.monotonic()

    def handle(events_now: list[dict]) -> None:
        nonlocal done
        for ev in events_now:
            name = ev["chain"]
            if ev["event"] == "start":
                starts.setdefault(name, []).append({**ev, "t": time.monotonic()})
                ev["attempt"] = len(starts[name])
                if ev["attempt"] == 1:
                    log(f"{name}: started on {ev['node']} (pid {ev['pid']})")
                else:
                    log(f"{name}: run again on {ev['node']} (pid {ev['pid']}, attempt "
                        f"{ev['attempt']}): its worker was lost; it resumes from its cached "
                        "points and the checkpoint of the run in progress")
            elif ev["event"] == "point":
                seen = (name, str(ev["result"].run_dir))
                if seen in reported:   # reported again by a task run after a lost worker
                    continue
                reported.add(seen)
                done += 1
                log(point_line(ev["result"], done, total, f"{ev['node']} pid {ev['pid']}"))
                if on_point is not None:
                    on_point(ev["result"])
            if on_event is not None:
                on_event(ev)

    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        handle(ray.get(events.drain.remote()))
        for ref in ready:
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - Ray wraps the task's error
                failures.append(f"{chains[i].name}: {_cause(ray, exc)}")
                log(f"{chains[i].name}: failed: {_cause(ray, exc)}")
        if pending and time.monotonic() - last_beat >= HEARTBEAT_S:
            last_beat = time.monotonic()
            running = [f"{chains[i].name} ({starts[chains[i].name][-1]['node']}, "
                       f"{(last_beat - starts[chains[i].name][-1]['t']) / 60:.0f} min)"
                       for i in pending.values() if chains[i].name in starts]
            log(f"[{done}/{total} points] running: {', '.join(running) or 'waiting for CPUs'}")
    handle(ray.get(events.drain.remote()))
    ray.kill(events)
    if failures:
        raise FitformerError(f"{len(failures)} of {len(chains)} chain(s) failed (the finished "
                             "runs are cached; run the command again to retry): "
                             + "; ".join(failures))
    return [r or [] for r in results]

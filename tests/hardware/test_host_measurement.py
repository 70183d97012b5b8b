"""Host-CPU measurements (issue 17, item 6): steadiness by the samples' spread, an
unsteady cached figure measured again, a steady figure never replaced by an unsteady one."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch

import fitformer.hardware.backends.host_cpu as E
from fitformer.hardware.catalog import host_cpu

# The stored measurement of the issue: samples from 136 to 928 ms, marked steady by the old
# rule (median 250 <= 2 x 136), though its middle half spans 178-375 ms.
LOADED = [136.0, 150.0, 170.0, 200.0, 240.0, 260.0, 300.0, 400.0, 700.0, 928.0]
IDLE = [23.5, 23.6, 23.6, 23.7, 23.7, 23.7, 23.8, 23.9, 24.1, 24.6]     # 23.7 ms idle
BUSY = [914.0, 650.0, 1210.0, 880.0, 990.0, 400.0, 1500.0, 930.0, 700.0, 1100.0]


def test_spread_rule_on_the_issue_samples():
    assert statistics.median(LOADED) <= 2 * min(LOADED)          # the old rule: "steady"
    assert E.sample_spread(LOADED) == pytest.approx((375 - 177.5) / 250)   # 0.79
    assert E.sample_spread(LOADED) > E.STEADY_SPREAD
    assert E.sample_spread(IDLE) < 0.02 <= E.STEADY_SPREAD
    assert E.sample_spread([5.0]) == 0.0


@pytest.fixture
def fake_host(empty_home, monkeypatch):
    """measured_report with the timing replaced by a queue of sample lists; returns
    (measure(use_cache) -> report, queue, cache folder)."""
    import os

    import fitformer.kernels.cpu as K
    import fitformer.kernels.run as R

    queue: list[list[float]] = []
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))     # an idle machine

    def timed(models, ids, repeats, tgt_len=0):
        if not queue:
            raise AssertionError("measured although a steady figure was cached")
        return {"model": queue.pop(0)}

    monkeypatch.setattr(R, "median_latency_ms", timed)
    monkeypatch.setattr(E, "_host_model", lambda wl, model, pruned:
                        (torch.nn.Identity(), "dense", "dense"))
    monkeypatch.setattr(K, "load_kernel", lambda: None)
    monkeypatch.setattr(K, "kernel_digest", lambda: "k")
    monkeypatch.setattr(K, "isa_path", lambda: None)
    wl = SimpleNamespace(dims=SimpleNamespace(is_seq2seq=False, vocab=100), digest="d",
                         pattern="dense", overall_sparsity=0.0, hp_split=None, source="test")
    dev = host_cpu()

    def measure(use_cache=True):
        return E.measured_report(dev, wl, 1, 128, pruned="minilm", use_cache=use_cache)

    return measure, queue, empty_home / "measurements"


def test_unsteady_figure_is_measured_again_and_steady_wins(fake_host):
    measure, queue, cache = fake_host
    # A busy machine: three unsteady attempts; the steadiest is kept and flagged.
    queue += [LOADED, BUSY, LOADED]
    first = measure()
    assert first["steady"] is False and first["attempts"] == 3 and not queue
    # BUSY's middle half is narrower (41% of its median) than LOADED's (79%).
    assert first["latency_ms"] == statistics.median(BUSY) == 922.0
    assert E.STEADY_SPREAD < first["spread"] < E.sample_spread(LOADED)
    assert first["load_avg_1min"] is not None and first["cpus"] >= 1
    # The next query measures again (idle now): the steady 23.7 ms replaces it.
    queue.append(IDLE)
    second = measure()
    assert second["steady"] is True and second["latency_ms"] == 23.7
    assert second["remeasured_from"]["latency_ms"] == 922.0
    # Then it is reused: no measurement (the queue is empty; timing would fail).
    assert measure()["latency_ms"] == 23.7
    # --no-cache on a busy machine measures afresh but does not replace the steady figure.
    queue += [BUSY, BUSY, BUSY]
    fresh = measure(use_cache=False)
    assert fresh["steady"] is False and fresh["latency_ms"] == statistics.median(BUSY)
    again = measure()
    assert again["steady"] is True and again["latency_ms"] == 23.7


def test_old_cache_marked_steady_is_judged_by_its_samples(fake_host):
    measure, queue, cache = fake_host
    queue.append(IDLE)
    measure()                                   # writes the cache file
    (path,) = cache.glob("*.json")
    rec = json.loads(path.read_text())
    rec.update(samples_ms=LOADED, steady=True)  # as the issue found it stored
    for k in ("spread", "cpus"):
        rec.pop(k, None)
    path.write_text(json.dumps(rec))
    queue += [BUSY, BUSY, BUSY]                 # still busy: an unsteady re-measure
    rep = measure()
    assert rep["steady"] is False and rep["latency_ms"] == 922.0   # the less spread one
    assert rep["remeasured_from"]["spread"] == pytest.approx(0.79)
    queue.append(IDLE)
    assert measure()["latency_ms"] == 23.7       # re-measured at the next query again


def test_agreeing_samples_on_a_busy_machine_are_not_steady():
    """Seen here: torch's threads starve evenly at load 4.4 on 2 CPUs, so samples agree
    (spread 2 %) around 898 ms against 23.7 ms idle. The load decides, not the spread."""
    slow = [880.0, 890.0, 895.0, 898.0, 898.0, 899.0, 900.0, 905.0, 910.0, 915.0]
    busy = E._judged({"samples_ms": slow, "load_avg_1min": 4.4, "cpus": 2})
    assert busy["spread"] < 0.05 and busy["busy"] and busy["steady"] is False
    idle = E._judged({"samples_ms": IDLE, "load_avg_1min": 0.3, "cpus": 2})
    assert idle["steady"] is True and not idle["busy"]
    edge = E._judged({"samples_ms": IDLE, "load_avg_1min": 1.5, "cpus": 2})
    assert edge["busy"] and edge["steady"] is False           # 0.75 x 2 CPUs
    unknown = E._judged({"samples_ms": IDLE})                 # old records without a load
    assert unknown["steady"] is True


def test_kernel_code_path_is_part_of_the_key_and_named_in_the_row(fake_host, monkeypatch):
    """A figure timed on the AVX2 path is not reused for the AVX-512 one (FITFORMER_CPU_ISA
    or another CPU), and select's host row says which path ran."""
    import fitformer.kernels.cpu as K
    from fitformer.select.report import measurement_text

    measure, queue, cache = fake_host
    monkeypatch.setattr(E, "_host_model", lambda wl, model, pruned:
                        (torch.nn.Identity(), "hp-cpu", "hp 0.8"))
    monkeypatch.setattr(K, "isa_path", lambda: "avx2")
    queue.append(IDLE)
    rep = measure()
    assert rep["kernel_isa"] == "avx2" and rep["backend"] == "hp-cpu"
    assert measure()["latency_ms"] == 23.7 and not queue        # cached for avx2
    monkeypatch.setattr(K, "isa_path", lambda: "generic")
    queue.append([x * 3 for x in IDLE])
    assert measure()["latency_ms"] == pytest.approx(71.1)       # measured for generic
    assert len(list(cache.glob("*.json"))) == 2
    text = measurement_text({"backend": "hp-cpu", "kernel_isa": "generic",
                             "load_avg_1min": 0.2, "cpus": 2, "spread": 0.01})
    assert text == "HP kernel generic, load 0.2/2 CPUs, spread 1.0%"
    assert measurement_text({"backend": "dense-fallback: no compiler", "cpus": 2,
                             "load_avg_1min": 0.2}).startswith("dense PyTorch, load 0.2")

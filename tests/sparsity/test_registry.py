"""The pattern registry (issue 16, item 5): one place declares each pattern, and the CLI,
the storage lower bound and the accelerator workload read it."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns import (
    ColumnBalancedBlock,
    make_pattern,
    pattern_class,
    pattern_from_params,
    pattern_names,
    register,
    registry,
)

OPTIONS = ({}, {"block": (8, 4), "banks": 2, "level2_density": 0.5, "nm_m": 8})


def test_builtin_patterns_are_registered():
    assert set(pattern_names()) == {"unstructured", "block", "cbb", "bank", "nm", "hp"}


@pytest.mark.parametrize("name", ["random", "", "HP"])
def test_unknown_pattern_is_refused_with_the_known_ones(name):
    for lookup in (pattern_class, make_pattern):
        with pytest.raises(FitformerError, match="choose from") as exc:
            lookup(name)
        assert repr(name) in str(exc.value)
        assert all(known in str(exc.value) for known in pattern_names())


@pytest.mark.parametrize("name", pattern_names())
@pytest.mark.parametrize("options", OPTIONS)
def test_every_pattern_round_trips_through_make_pattern_and_params(name, options):
    pat = make_pattern(name, **options)
    assert isinstance(pat, pattern_class(name)) and pat.name == name
    again = pattern_from_params(name, pat.params())
    assert type(again) is type(pat) and again.params() == pat.params()


@pytest.mark.parametrize("name", pattern_names())
def test_every_pattern_declares_what_the_registry_promises(name):
    cls = pattern_class(name)
    assert cls.help and cls.help == cls.help.strip() and "\n" not in cls.help
    # Stripe balance (the accelerator's) is a kind of balance, and its counts name K1.
    assert cls.balanced or not cls.stripe_balanced
    pat = make_pattern(name)
    shape = (64, 48)
    counts = pat.counts(shape, pat.plan(shape, 0.5))
    if cls.stripe_balanced:
        assert "K1" in counts
    factors = pat.mask_count_factors(shape, counts)
    assert factors and all(0 <= k <= n and times >= 0 for n, k, times in factors)


def test_cli_choices_are_the_registry():
    from fitformer.cli import PatternName

    assert [p.value for p in PatternName][0] == "hp"          # the default first
    assert sorted(p.value for p in PatternName) == sorted(pattern_names())


def test_registry_does_not_import_torch():
    # The CLI reads the registry for its --pattern choices at start-up.
    code = ("import sys, fitformer.cli, fitformer.sparsity.patterns as p; "
            "assert p.pattern_names(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_refuses_a_taken_name_and_a_missing_help(monkeypatch):
    monkeypatch.setattr(registry, "_PATTERNS", dict(registry._PATTERNS))

    class Taken(ColumnBalancedBlock):
        name = "hp"

    class NoHelp(ColumnBalancedBlock):
        name = "nohelp"
        help = ""

    with pytest.raises(ValueError, match="taken"):
        register(Taken)
    with pytest.raises(TypeError, match="help"):
        register(NoHelp)
    with pytest.raises(TypeError, match="Pattern subclass"):
        register(dict)


@dataclass
class _Dummy(ColumnBalancedBlock):
    """cbb's rule under another name, with a made-up mask count."""

    name = "dummy"
    help = "a test pattern"

    def mask_count_factors(self, shape, counts):
        return ((4, 2, 3),)                                       # C(4, 2) ** 3 masks


@dataclass
class _UnbalancedDummy(_Dummy):
    name = "dummy-unbalanced"
    balanced = False
    stripe_balanced = False


@pytest.fixture
def dummy(monkeypatch):
    """Register two test patterns for one test only (the registry is restored after)."""
    monkeypatch.setattr(registry, "_PATTERNS", dict(registry._PATTERNS))
    register(_Dummy)
    register(_UnbalancedDummy)
    return _Dummy


def test_a_registered_pattern_is_known_everywhere(dummy):
    assert "dummy" in pattern_names()
    assert isinstance(make_pattern("dummy", block=(8, 8)), _Dummy)
    with pytest.raises(FitformerError, match="dummy"):
        pattern_class("nope")


def test_bounds_read_the_registry(dummy):
    from fitformer.formats import mask_log2_count

    assert mask_log2_count("dummy", (16, 16), {"K1": 1}) == pytest.approx(3 * math.log2(6))
    with pytest.raises(FitformerError, match="dummy"):
        mask_log2_count("nope", (16, 16), {"K1": 1})


def test_workload_reads_the_registry(dummy):
    from fitformer.hardware.workload import structure_from_counts

    assert structure_from_counts("dummy") and structure_from_counts("dense")
    assert not structure_from_counts("dummy-unbalanced")
    assert [structure_from_counts(n) for n in ("hp", "cbb", "unstructured", "bank")] == \
        [True, True, False, False]
    with pytest.raises(FitformerError, match="dummy"):
        structure_from_counts("nope")


def test_workload_of_a_registered_stripe_balanced_pattern_comes_from_counts(dummy, home):
    from fitformer.hardware.frontends import workload_from_pattern

    wl = workload_from_pattern("default", pattern="dummy", sparsity=0.8)
    ref = workload_from_pattern("default", pattern="cbb", sparsity=0.8)
    assert wl.source == "dummy at sparsity 0.8 (counts)"
    def work(w):
        return [(m.role, m.layer, m.stack, m.nnz, m.kept_blocks, m.k_per_bank, m.balanced,
                 m.stripe_cycles.tolist()) for m in w.matrices]

    assert work(wl) == work(ref) and wl.overall_sparsity == ref.overall_sparsity


def test_the_test_patterns_do_not_leak():
    assert "dummy" not in pattern_names() and "dummy-unbalanced" not in pattern_names()

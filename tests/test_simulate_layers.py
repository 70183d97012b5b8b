"""Issue 17, item 7: `simulate --layer` takes the names `model show` prints: ROLE (every
layer of that role), ROLE:N (layer N) and the full module name."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fitformer.cli import _simulate_layers
from fitformer.errors import FitformerError

PREFIX = "bert.encoder.layer"
SUFFIX = {"q": "attention.self.query", "k": "attention.self.key",
          "v": "attention.self.value", "attn_out": "attention.output.dense",
          "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}
MASKS = {f"{PREFIX}.{i}.{s}": np.ones((4, 4), bool) for i in range(6) for s in SUFFIX.values()}


def test_role_names_every_layer_of_the_role():
    assert _simulate_layers("ffn_in", MASKS) == [f"{PREFIX}.{i}.intermediate.dense"
                                                 for i in range(6)]
    assert len(_simulate_layers("q", MASKS)) == 6


def test_role_and_index_and_full_names():
    assert _simulate_layers("ffn_in:2", MASKS) == [f"{PREFIX}.2.intermediate.dense"]
    assert _simulate_layers("ffn_out:0", MASKS) == [f"{PREFIX}.0.output.dense"]
    full = f"{PREFIX}.3.attention.self.value"
    assert _simulate_layers(full, MASKS) == [full]
    assert _simulate_layers("layer.4.intermediate.dense", MASKS) == [
        f"{PREFIX}.4.intermediate.dense"]


@pytest.mark.parametrize("spec,needles", [
    ("pooler", ["no pruned layer has role pooler", "q, k, v, attn_out, ffn_in, ffn_out"]),
    ("ffn_in:9", ["ffn_in:9", "(0-5)", "--layer ffn_in:0"]),
    ("ffn_in:x", ["ffn_in:x", "(0-5)"]),
    ("foo:1", ["'foo' is not a role", "ROLE:N"]),
    ("nothing", ["is not a pruned layer", "--layer ffn_in"]),
])
def test_bad_layer_names_say_what_is_accepted(spec, needles):
    with pytest.raises(FitformerError) as err:
        _simulate_layers(spec, MASKS)
    for n in needles:
        assert n in str(err.value)


def test_cli_simulate_layer_ffn_in(home):
    # The example: `--layer ffn_in` was refused; it simulates the six FFN inputs.
    env = dict(os.environ, FITFORMER_HOME=str(home))
    env.pop("FITFORMER_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "fitformer", "simulate", "--device", "zcu104",
                           "--sparsity", "0.8", "--layer", "ffn_in", "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert [r["layer"] for r in rep["layers"]] == [f"{PREFIX}.{i}.intermediate.dense"
                                                   for i in range(6)]
    # The unit that runs them: ffn_in on design (a), the shared array on designs (b)-(d).
    assert all(r["unit"] == ("array" if rep["family"] == "shared" else "ffn_in")
               for r in rep["layers"])

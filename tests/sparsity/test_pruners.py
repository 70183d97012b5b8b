"""Pruners: masks only shrink, pruned weights stay exactly zero (AdamW with weight decay),
the final masks obey the pattern; schedule and squash."""

import pytest
import torch
from torch import nn

from fitformer.sparsity.masking import attach_masks, current_masks, squash_masks
from fitformer.sparsity.patterns import Hierarchical, make_pattern
from fitformer.sparsity.pruners import ADMMPruner, GradualMagnitudePruner
from fitformer.sparsity.schedule import cubic, level_densities


def test_cubic_schedule_end_points_and_shape():
    assert cubic(1.0, 0.2, 0.0) == 1.0 and cubic(1.0, 0.2, 1.0) == pytest.approx(0.2)
    assert cubic(1.0, 0.2, 0.5) == pytest.approx(0.2 + 0.8 * 0.125)
    # HP: level 1 moves in the first half, level 2 in the second.
    assert level_densities((1.0, 1.0), (0.4, 0.5), 0.25) == pytest.approx(
        (0.4 + 0.6 * 0.125, 1.0))
    assert level_densities((1.0, 1.0), (0.4, 0.5), 0.5) == pytest.approx((0.4, 1.0))
    assert level_densities((1.0, 1.0), (0.4, 0.5), 1.0) == pytest.approx((0.4, 0.5))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 64)
        self.b = nn.Linear(64, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def _train(net, hook, steps, weight_decay=0.1):
    torch.manual_seed(0)
    hook.on_train_begin(net, steps)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=weight_decay)
    x = torch.randn(64, 32)
    y = (x[:, 0] > 0).long()
    history = []
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        hook.before_optimizer_step(net, step, steps)
        opt.step()
        opt.zero_grad()
        hook.on_step_end(net, step, steps)
        masks = current_masks(net)
        history.append(masks)
        for name, mask in masks.items():
            w = net.get_submodule(name).weight  # the parametrized (effective) weight
            assert (w[~mask] == 0).all(), "pruned weights must be exactly zero"
    return history


@pytest.mark.parametrize("pattern", ["hp", "unstructured", "cbb", "bank", "block"])
def test_gradual_masks_only_shrink_and_pruned_weights_stay_zero(pattern):
    torch.manual_seed(0)
    net = Net()
    pat = make_pattern(pattern, block=(8, 8), banks=4)
    final = {n: pat.plan(tuple(net.get_submodule(n).weight.shape), 0.8) for n in ("a", "b")}
    hook = GradualMagnitudePruner(pat, final, update_every=2)
    history = _train(net, hook, steps=30)
    for before, after in zip(history, history[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), "a mask grew"
    for name, levels in final.items():
        w = net.get_submodule(name).weight
        expected = pat.mask_from_levels(w, levels)  # final mask obeys the pattern
        assert history[-1][name].sum() == expected.sum()
    masks = squash_masks(net)
    for name, mask in masks.items():
        w = net.get_submodule(name).weight
        assert isinstance(w, nn.Parameter) and (w[~mask] == 0).all()
    assert current_masks(net) == {}


def test_hp_final_masks_have_exact_counts():
    torch.manual_seed(1)
    net = Net()
    hp = Hierarchical(8, 8, banks=4)
    final = {n: hp.plan(tuple(net.get_submodule(n).weight.shape), 0.75) for n in ("a", "b")}
    hook = GradualMagnitudePruner(hp, final, update_every=1)
    history = _train(net, hook, steps=12)
    for name, levels in final.items():
        mask = history[-1][name]
        M, N = mask.shape
        cnt = hp.counts((M, N), levels)
        blocks = mask.view(M // 8, 8, N // 8, 8).any(3).any(1)
        assert (blocks.sum(0) == cnt["K1"]).all()
        banks = mask.view(M, N // 8, 4, 2).sum(3)
        seg = blocks.repeat_interleave(8, 0)
        assert (banks[seg] == cnt["k"]).all() and (banks[~seg] == 0).all()


def test_admm_ends_hard_pruned_to_the_pattern():
    torch.manual_seed(0)
    net = Net()
    hp = Hierarchical(8, 8, banks=4)
    final = {n: hp.plan(tuple(net.get_submodule(n).weight.shape), 0.75) for n in ("a", "b")}
    hook = ADMMPruner(hp, final, update_every=3)
    history = _train(net, hook, steps=30)
    assert hook.hard_pruned
    for name in final:
        assert history[-1][name].float().mean().item() == pytest.approx(0.25)
    # Restoring state into a fresh pruner reproduces masks (resume).
    again = ADMMPruner(hp, final)
    again.load_state_dict(hook.state_dict())
    assert again.hard_pruned and all(torch.equal(again.masks[n], hook.masks[n]) for n in final)


def test_attach_rejects_wrong_shape():
    net = Net()
    with pytest.raises(ValueError, match="shape"):
        attach_masks(net, {"a": torch.ones(3, 3, dtype=torch.bool)})

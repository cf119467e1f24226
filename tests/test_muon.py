"""labkit's Muon (float32 on a CPU, batched by shape) takes torch.optim.Muon's steps."""
import dataclasses

import pytest
import torch

from labkit.train.muon import Muon, orthogonalise


def test_orthogonalise_flattens_the_singular_values():
    torch.manual_seed(0)
    m = torch.randn(3, 96, 32) @ torch.diag(torch.logspace(-2, 1, 32))  # singular values from 0.01 to 10
    before, after = torch.linalg.svdvals(m), torch.linalg.svdvals(orthogonalise(m))
    assert (before.max(-1).values / before.min(-1).values > 300).all()
    # five quintic Newton–Schulz steps: near 1 (not exactly), the smallest directions raised most
    assert after.max() < 1.3 and after.min() > 0.2 and (after.max(-1).values / after.min(-1).values < 6).all()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_same_steps_as_torch_muon(weight_decay):
    torch.manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(48, 16)), torch.nn.Parameter(torch.randn(48, 16)),
            torch.nn.Parameter(torch.randn(16, 16))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours = Muon(ours, lr=0.02, weight_decay=weight_decay)
    opt_theirs = torch.optim.Muon(theirs, lr=0.02, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    for step in range(3):
        grads = [torch.randn_like(p) for p in ours]
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=2e-3)   # torch rounds its products to bfloat16


def test_muon_refuses_anything_but_a_matrix():
    with pytest.raises(ValueError, match="weight matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def test_muon_weight_decay_shrinks_the_weights_and_refuses_a_negative_one():
    start = torch.randn(32, 32, generator=torch.Generator().manual_seed(2))
    norms = {}
    for weight_decay in (0.0, 0.5):
        torch.manual_seed(3)  # the same gradients for both
        param = torch.nn.Parameter(start.clone())
        opt = Muon([param], lr=0.05, weight_decay=weight_decay)
        for _ in range(5):
            param.grad = torch.randn(32, 32)
            opt.step()
        norms[weight_decay] = param.detach().norm().item()
    assert norms[0.5] < norms[0.0] * (1 - 0.05 * 0.5) ** 4    # decayed by about (1 - lr·wd) a step
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], weight_decay=-0.1)


def test_the_preset_hands_its_weight_decay_to_muon():
    from labkit.models import build_model, config_from_size
    from labkit.presets import get_preset
    from labkit.train.pretrain import make_optimizers

    smoke = get_preset("smoke")
    cfg = dataclasses.replace(smoke.pretrain, optimizer="muon", muon_weight_decay=0.1)
    muon, adamw = make_optimizers(build_model(config_from_size(smoke.model, vocab_size=64), seed=0), cfg)
    assert isinstance(muon, Muon) and [g["weight_decay"] for g in muon.param_groups] == [0.1]
    assert [g["weight_decay"] for g in adamw.param_groups] == [smoke.pretrain.weight_decay]

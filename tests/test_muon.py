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


def test_joined_optimisers_share_one_schedule_and_step_together():
    from labkit.train.muon import Joined

    torch.manual_seed(4)
    matrix, vector = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4))
    muon, adamw = Muon([matrix], lr=0.02), torch.optim.AdamW([vector], lr=3e-3)
    joined = Joined(muon, adamw)
    assert joined.param_groups[0] is muon.param_groups[0] and joined.param_groups[1] is adamw.param_groups[0]
    schedule = torch.optim.lr_scheduler.LambdaLR(joined, lambda step: 0.5 ** step)  # as a trainer builds it
    before = matrix.detach().clone(), vector.detach().clone()
    matrix.grad, vector.grad = torch.randn(8, 4), torch.randn(4)
    joined.step()
    schedule.step()
    assert not torch.equal(matrix, before[0]) and not torch.equal(vector, before[1])  # both stepped
    assert muon.param_groups[0]["lr"] == pytest.approx(0.01) and adamw.param_groups[0]["lr"] == pytest.approx(1.5e-3)
    joined.zero_grad()
    assert matrix.grad is None and vector.grad is None
    with pytest.raises(ValueError, match="at least one"):
        Joined()


def test_sft_can_train_the_blocks_matrices_with_muon():
    from labkit.models import build_model, config_from_size
    from labkit.presets import get_preset
    from labkit.train.muon import Joined
    from labkit.train.sft import sft_optimizer

    smoke = get_preset("smoke")
    model = build_model(config_from_size(smoke.model, vocab_size=64), seed=0)
    assert sft_optimizer(model, smoke.sft) is None                 # AdamW, built by the trainer
    assert sft_optimizer(model, smoke.sft_math) is None            # a config without the setting
    joined = sft_optimizer(model, dataclasses.replace(smoke.sft, optimizer="muon", muon_lr=0.02))
    muon, adamw = joined.optimizers
    assert isinstance(joined, Joined) and isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [g["lr"] for g in joined.param_groups] == [0.02, smoke.sft.lr]
    named = {id(p): n for n, p in model.named_parameters()}
    assert all(".layers." in named[id(p)] and p.ndim == 2 for p in muon.param_groups[0]["params"])
    assert len(muon.param_groups[0]["params"]) + len(adamw.param_groups[0]["params"]) == len(named)
    with pytest.raises(ValueError, match="SFTStageConfig.optimizer must be one of adamw, muon"):
        dataclasses.replace(smoke.sft, optimizer="sgd")

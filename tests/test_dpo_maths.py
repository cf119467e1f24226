"""DPO's derivation made numeric: the tilted optimum, Z cancelling, and the gradient's right form."""
import math

import pytest
import torch

from labkit import losses, widgets
from labkit.losses import (bradley_terry_probability, dpo_gradient_weight, dpo_loss, implicit_reward, log_partition,
                           tilted_expected_reward, tilted_kl, tilted_policy)

# A toy prompt: four candidate answers, their SFT probabilities and gold rewards.
REF = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
REWARD = torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=torch.float64)


def sigma(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_tilted_optimum_by_hand():
    beta = 1.0
    weights = [0.4 * math.exp(0.0), 0.3 * math.exp(1.0), 0.2 * math.exp(2.0), 0.1 * math.exp(-1.0)]
    z = sum(weights)  # 0.4 + 0.8155 + 1.4778 + 0.0368 = 2.7301
    assert z == pytest.approx(2.730, abs=1e-3)
    pi_star = tilted_policy(REF, REWARD, beta)
    assert pi_star.tolist() == pytest.approx([w / z for w in weights])
    assert float(pi_star.sum()) == pytest.approx(1.0)
    assert log_partition(REF, REWARD, beta) == pytest.approx(math.log(z))


def test_beta_moves_the_optimum_between_the_sft_policy_and_the_best_answer():
    assert tilted_policy(REF, REWARD, 1e3).tolist() == pytest.approx(REF.tolist(), abs=1e-3)
    assert tilted_policy(REF, REWARD, 0.05).tolist() == pytest.approx([0, 0, 1, 0], abs=1e-6)
    with pytest.raises(ValueError, match="beta must be positive"):
        tilted_policy(REF, REWARD, 0.0)


def test_inverting_the_optimum_gives_the_reward_back_up_to_beta_log_z():
    for beta in (0.3, 1.0, 4.0):
        pi_star = tilted_policy(REF, REWARD, beta)
        implied = implicit_reward(pi_star.log(), REF.log(), beta)
        # r = β log π*/π_ref + β log Z, exactly
        assert (implied + beta * log_partition(REF, REWARD, beta)).tolist() == pytest.approx(REWARD.tolist())


def test_z_cancels_in_bradley_terry():
    beta = 0.7
    pi_star = tilted_policy(REF, REWARD, beta)
    implied = implicit_reward(pi_star.log(), REF.log(), beta)  # without β log Z
    for w in range(4):
        for lose in range(4):
            with_true = bradley_terry_probability(float(REWARD[w] - REWARD[lose]))
            with_implied = bradley_terry_probability(float(implied[w] - implied[lose]))
            assert with_implied == pytest.approx(with_true)


def test_the_slides_label_slip_in_numbers():
    # Slip (a) is a label only: the slide calls its step ∇σ(u), but its right-hand side is
    # ∇log σ(u) = σ(−u)·∇u, the derivative DPO's loss −log σ(u) needs. Lab 06 checks it at u = 0.3.
    u = torch.tensor(0.3, requires_grad=True)
    torch.nn.functional.logsigmoid(u).backward()
    assert float(u.grad) == pytest.approx(float(torch.sigmoid(torch.tensor(-0.3)))) == pytest.approx(0.426, abs=5e-4)
    v = torch.tensor(0.3, requires_grad=True)
    torch.sigmoid(v).backward()                                 # what a true ∇σ(u) would give: another number
    assert float(v.grad) == pytest.approx(0.244, abs=5e-4)


def _lab06_example(beta):
    """Lab 06 §3's worked example: the toy's policy drifted with seed 0, and its pair, with autograd's gradient."""
    toy = widgets.dpo_toy()
    chosen, rejected = toy["answers"].index("fish , shells"), toy["answers"].index("fish , shells , ropes")
    logits = losses.dpo_gradient_check(toy["sft"], chosen, rejected, beta, seed=0)["logits"]
    theta = logits.clone().requires_grad_(True)
    logp, ref = torch.log_softmax(theta, dim=-1), torch.tensor(toy["sft"], dtype=torch.float64).log()
    loss, r_w, r_l = dpo_loss(logp[chosen], logp[rejected], ref[chosen], ref[rejected], beta)
    loss.backward()
    u = float(r_w - r_l)
    written = torch.zeros_like(logits)                          # the slide as written: −σ(−u)·(e_w − e_l), no β
    written[chosen], written[rejected] = -sigma(-u), sigma(-u)
    return chosen, rejected, u, theta.grad, written


def test_the_slide_as_written_is_the_gradient_times_one_over_beta_on_lab06s_example():
    beta = 0.5
    chosen, rejected, u, grad, written = _lab06_example(beta)
    assert u == pytest.approx(-0.486, abs=5e-4)                  # the implicit reward ranks the pair wrongly
    assert sigma(-u) == pytest.approx(0.619, abs=5e-4)          # the weight σ(r̂_l − r̂_w): the slide has it right
    # autograd: only the pair's two logits move, by β·σ(−u) = 0.310
    assert -float(grad[chosen]) == pytest.approx(float(grad[rejected]), rel=1e-12)
    assert float(grad[rejected]) == pytest.approx(beta * sigma(-u), rel=1e-12)
    assert float(grad[rejected]) == pytest.approx(0.310, abs=5e-4)
    assert [float(g) for i, g in enumerate(grad) if i not in (chosen, rejected)] == pytest.approx([0, 0], abs=1e-15)
    # the slide as written moves them by σ(−u) = 0.619: 1/β = 2 times the gradient, exactly
    assert float(written[rejected]) == pytest.approx(0.619, abs=5e-4)
    assert (written - grad / beta).abs().max() < 1e-12
    assert float(written[chosen] / grad[chosen]) == pytest.approx(2.0, rel=1e-12)
    # the lab's table says the same
    table, summary = widgets.dpo_gradient_table(beta)
    assert table["autograd"].tolist() == pytest.approx(grad.tolist(), abs=1e-12)
    assert table["slide as written"].tolist() == pytest.approx(written.tolist(), abs=1e-12)
    assert (round(summary["push"], 3), round(summary["slide_push"], 3)) == (0.310, 0.619)
    assert summary["slide_ratio"] == pytest.approx(2.0, rel=1e-12) and summary["slide_times_beta_gap"] < 1e-12


@pytest.mark.parametrize("beta", [0.1, 1.0, 4.0])
def test_the_slide_as_written_is_off_by_one_over_beta_at_every_beta(beta):
    chosen, rejected, u, grad, written = _lab06_example(beta)
    assert (written - grad / beta).abs().max() < 1e-12            # right only at β = 1
    assert float(grad[rejected]) == pytest.approx(beta * sigma(-u), rel=1e-12)


def test_the_dpo_gradient_has_the_factor_beta_and_the_weight_sigma():
    beta = 0.5
    pi_w = torch.tensor([-3.0, -2.0], requires_grad=True)
    pi_l = torch.tensor([-1.5, -4.0], requires_grad=True)
    ref_w, ref_l = torch.tensor([-3.2, -2.1]), torch.tensor([-2.0, -3.5])
    losses, chosen, rejected = dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
    losses.sum().backward()
    weight = dpo_gradient_weight(chosen, rejected)
    # −∂L/∂log π(y_w) = β·σ(r̂_l − r̂_w); −∂L/∂log π(y_l) = −β·σ(r̂_l − r̂_w)
    assert (-pi_w.grad).tolist() == pytest.approx((beta * weight).tolist())
    assert (-pi_l.grad).tolist() == pytest.approx((-beta * weight).tolist())
    # the first pair is ranked wrongly by the implicit reward: it gets the larger weight
    assert float(chosen[0] - rejected[0]) < 0 < float(chosen[1] - rejected[1])
    assert weight[0] > 0.5 > weight[1]


def test_the_tilted_optimums_reward_and_kl_by_hand():
    beta = 1.0
    weights = [0.4, 0.3 * math.e, 0.2 * math.e ** 2, 0.1 / math.e]
    z = sum(weights)
    reward = (weights[1] * 1 + weights[2] * 2 + weights[3] * -1) / z   # (0.8155 + 2.9556 − 0.0368) / 2.7301
    assert tilted_expected_reward(REF, REWARD, beta) == pytest.approx(reward) and round(reward, 3) == 1.368
    # KL(π* ‖ π_ref) = Σ π*·log(π*/π_ref) = E_π*[r]/β − log Z
    kl = sum(w / z * math.log(w / z / p) for w, p in zip(weights, REF.tolist()))
    assert tilted_kl(REF, REWARD, beta) == pytest.approx(kl) == pytest.approx(reward / beta - math.log(z))


def test_the_tilted_kl_runs_from_zero_to_minus_log_pi_ref_of_the_best_answer():
    assert tilted_kl(REF, REWARD, 1e4) == pytest.approx(0.0, abs=1e-6)
    assert tilted_expected_reward(REF, REWARD, 1e4) == pytest.approx(float((REF * REWARD).sum()), abs=1e-3)
    assert tilted_kl(REF, REWARD, 0.02) == pytest.approx(-math.log(0.2), abs=1e-6)   # all mass on r = 2
    assert tilted_expected_reward(REF, REWARD, 0.02) == pytest.approx(2.0, abs=1e-6)
    for f in (tilted_kl, tilted_expected_reward):
        with pytest.raises(ValueError, match="beta must be positive, got -1"):
            f(REF, REWARD, -1)


def test_the_tilted_policy_maximises_the_rlhf_objective():
    # J(π) = β·log Z − β·KL(π ‖ π*): π* scores exactly β·log Z and no random policy beats it
    from labkit import widgets

    for beta in (0.1, 1.0, 5.0):
        check = widgets.dpo_objective_check(beta, policies=5000, seed=1)
        assert check["J_star"] == pytest.approx(check["beta_log_Z"], abs=1e-12)
        assert check["beaten"] == 0 and check["best_random"] < check["J_star"]
        assert check["identity_error"] < 1e-12
    at_one = widgets.dpo_objective_check(1.0)
    assert at_one["beta_log_Z"] == pytest.approx(math.log(2.153), abs=1e-3)  # Z = 2.153 at β = 1 (cell 7)

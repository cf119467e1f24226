"""DPO's derivation made numeric: the tilted optimum, Z cancelling, and the gradient's right form."""
import math

import pytest
import torch

from labkit.losses import (bradley_terry_probability, dpo_gradient_weight, dpo_loss, implicit_reward, log_partition,
                           tilted_expected_reward, tilted_kl, tilted_policy)

# A toy prompt: four candidate answers, their SFT probabilities and gold rewards.
REF = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
REWARD = torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=torch.float64)


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


def test_the_lecture_slide_slip_in_numbers():
    # The slide differentiates σ(u) where the loss has log σ(u): σ'(0.3) is not σ(−0.3).
    u = torch.tensor(0.3, requires_grad=True)
    torch.sigmoid(u).backward()
    assert float(u.grad) == pytest.approx(0.244, abs=5e-4)
    v = torch.tensor(0.3, requires_grad=True)
    torch.nn.functional.logsigmoid(v).backward()
    assert float(v.grad) == pytest.approx(float(torch.sigmoid(torch.tensor(-0.3)))) == pytest.approx(0.426, abs=5e-4)


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

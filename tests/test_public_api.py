"""The public loss, reward and data functions (the losses of ``labkit.losses``, ``extract_final_answer``,
``from_hh_rlhf``), checked against hand-computed numbers."""
import math

import pytest
import torch

from labkit.data import from_hh_rlhf
from labkit.losses import bradley_terry_loss, dpo_loss, grpo_advantages, ppo_clip_objective
from labkit.rewards import extract_final_answer


def test_ppo_clip_worked_examples():
    # eps = 0.2, A = 2: ratio 0.3/0.2 = 1.5 -> min(3.0, 1.2*2) = 2.4; ratio 0.2/0.3 -> min(4/3, 1.6) = 4/3
    out = ppo_clip_objective(torch.tensor([0.3 / 0.2, 0.2 / 0.3]), torch.tensor([2.0, 2.0]), 0.2)
    assert out.tolist() == pytest.approx([2.4, 4 / 3])
    # negative advantage: the pessimistic side is the clipped one for ratio < 1 - eps
    assert ppo_clip_objective(torch.tensor(0.5), torch.tensor(-1.0), 0.2).item() == pytest.approx(-0.8)


def test_ppo_clip_does_not_mutate_and_checks_eps():
    ratio = torch.tensor([1.5])
    ppo_clip_objective(ratio, torch.tensor([2.0]), 0.2)
    assert ratio.item() == 1.5
    with pytest.raises(ValueError, match="eps"):
        ppo_clip_objective(ratio, torch.tensor([2.0]), 1.5)


def test_bradley_terry_loss_is_minus_log_sigmoid_of_the_gap():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]))
    expected = (-math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected)


def test_dpo_loss_and_implicit_rewards():
    losses, chosen, rejected = dpo_loss(torch.tensor([-5.0]), torch.tensor([-7.0]),
                                        torch.tensor([-6.0]), torch.tensor([-6.0]), beta=0.1)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.1)
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0)


def test_grpo_advantages_match_the_group_formula():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    adv = grpo_advantages(rewards, group_size=4)
    std = torch.tensor([1.0, 0.0, 1.0, 0.0]).std().item()  # unbiased
    assert adv[:4].tolist() == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 2)
    assert adv[4:].tolist() == [0.0] * 4  # a group with no variance teaches nothing
    assert grpo_advantages(rewards, 4, scale=False)[:2].tolist() == [0.5, -0.5]
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(rewards, 3)


@pytest.mark.parametrize("text, expected", [
    ("so she has 1,234 in all\n#### 1,234", "1234"),
    ("The answer is 42.", "42"),
    ("first 3, then 7", "7"),
    ("answer: -5", "-5"),
    ("no number here", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_from_hh_rlhf_keeps_multi_turn_prompts():
    prompt = "\n\nHuman: hi\n\nAssistant: hello!\n\nHuman: what is 2+2?"
    out = from_hh_rlhf({"chosen": prompt + "\n\nAssistant: 4", "rejected": prompt + "\n\nAssistant: 5"})
    assert out == {
        "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
                   {"role": "user", "content": "what is 2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }


def test_from_hh_rlhf_rejects_pairs_without_a_shared_prompt():
    with pytest.raises(ValueError, match="do not share a prompt"):
        from_hh_rlhf({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: yo\n\nAssistant: b"})
    with pytest.raises(ValueError, match="Human"):
        from_hh_rlhf({"chosen": "hello", "rejected": "hello"})

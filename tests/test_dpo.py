"""DPO with TRL: our dpo_loss is TRL's loss, pairs are checked, and train_dpo really trains (full and LoRA)."""
import copy
import dataclasses
import math

import pytest
import torch

from labkit.evaluate import pair_logprobs
from labkit.losses import dpo_loss
from labkit.models import build_model, tiny_llama_config
from labkit.presets import DPOStageConfig
from labkit.train.dpo import check_pairs, implicit_accuracy, train_dpo, trl_batch_loss
from labkit.world import preferences as prefs

PAIRS = prefs.preference_pairs("train", 64, seed=0)
CONFIG = DPOStageConfig(train_pairs=64, batch_size=16, warmup_steps=1, eval_pairs=32, eval_samples=1, lr=1e-2,
                        lora_lr=3e-2, epochs=4, beta=0.5)
pytestmark = pytest.mark.usefixtures("one_thread")


def _policy(tok, seed=0):
    return build_model(tiny_llama_config(len(tok), 16, 1, 2, 32, 64, tok), seed=seed)


def test_dpo_loss_equals_trls_loss_on_the_same_batch(tok):
    policy, reference = _policy(tok, seed=1), _policy(tok, seed=2)  # two different models: a non-trivial ratio
    pairs = PAIRS[:8]
    trl = trl_batch_loss(policy, reference, tok, pairs, CONFIG.beta)
    pi_w, pi_l = pair_logprobs(policy, tok, pairs)
    ref_w, ref_l = pair_logprobs(reference, tok, pairs)
    losses, chosen, rejected = dpo_loss(pi_w, pi_l, ref_w, ref_l, CONFIG.beta)
    assert float(losses.mean()) == pytest.approx(trl["loss"], abs=1e-5)
    assert abs(trl["loss"] - math.log(2)) > 0.02  # the models differ: not the log 2 of a policy equal to its reference
    assert float(pi_w.mean()) == pytest.approx(trl["logps/chosen"], abs=1e-4)
    assert float(pi_l.mean()) == pytest.approx(trl["logps/rejected"], abs=1e-4)
    assert float((chosen - rejected).mean()) == pytest.approx(trl["rewards/margins"], abs=1e-5)


def test_bad_pairs_get_clear_messages():
    good = PAIRS[0]
    with pytest.raises(ValueError, match="pair 1: chosen and rejected are the same answer"):
        check_pairs([good, {**good, "rejected": good["chosen"]}])
    with pytest.raises(ValueError, match="pair 0 has no prompt"):
        check_pairs([{"chosen": "fish , shells", "rejected": "fish"}])
    user = [{"role": "user", "content": "name the goods of the harbor"}]
    other = [{"role": "user", "content": "name the goods of the forest"}]
    answer = [{"role": "assistant", "content": "fish"}]
    with pytest.raises(ValueError, match="pair 0: chosen and rejected transcripts do not share a prompt"):
        check_pairs([{"chosen": user + answer, "rejected": other + [{"role": "assistant", "content": "nuts"}]}])
    with pytest.raises(ValueError, match="pair 0 has no rejected"):
        check_pairs([{"prompt": user, "chosen": answer}])
    with pytest.raises(ValueError, match="no preference pairs"):
        check_pairs([])
    # whole conversations that share their prompt are split into prompt / chosen / rejected
    row = check_pairs([{"chosen": user + answer, "rejected": user + [{"role": "assistant", "content": "nuts"}]}])[0]
    assert row["prompt"] == user and row["chosen"] == answer


def test_beta_must_be_positive():
    for beta in (0, -0.1):
        with pytest.raises(ValueError, match="beta must be a positive number"):
            DPOStageConfig(beta=beta)
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.0)


def test_full_dpo_needs_its_reference(tok):
    with pytest.raises(ValueError, match="needs the reference policy"):
        train_dpo(_policy(tok), tok, PAIRS, dataclasses.replace(CONFIG, lora_rank=0), progress=False)


@pytest.mark.parametrize("rank", [0, 4])
def test_train_dpo_learns_to_rank_the_pairs(tok, rank):
    policy = _policy(tok)
    reference = copy.deepcopy(policy)
    config = dataclasses.replace(CONFIG, lora_rank=rank)
    before = implicit_accuracy(policy, reference, tok, PAIRS, config.beta)
    assert before == {"accuracy": 0.5, "margin": 0.0, "chosen_logratio": 0.0,
                      "rejected_logratio": 0.0}  # the policy is its reference: every r̂ is 0
    seen = []
    result = train_dpo(policy, tok, PAIRS, config, reference=reference, progress=False, callback=seen.append)
    after = implicit_accuracy(result.policy, reference, tok, PAIRS, config.beta)
    # on the pairs it trained on; the tiny model's rank-4 adapters have ~1,100 numbers to learn with
    assert after["accuracy"] > (0.65 if rank else 0.75) and after["margin"] > (0.2 if rank else 0.5)
    assert result.steps == 16 and seen  # 4 epochs of 64 pairs in batches of 16, live history
    last = result.history[-1]
    assert {"train_loss", "margin", "accuracy", "logp_chosen", "logp_rejected"} <= set(last)
    assert last["accuracy"] > 0.6 and last["train_loss"] < 0.69  # below log 2, the loss of an untrained policy
    total = sum(p.numel() for p in result.policy.parameters())
    if rank:
        assert 0 < result.trainable_parameters < total / 2
        assert not hasattr(result.policy, "peft_config")  # adapters merged: a plain transformers model
    else:
        assert result.trainable_parameters == total
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(),
                                                 _policy(tok).state_dict().values()))  # reference untouched

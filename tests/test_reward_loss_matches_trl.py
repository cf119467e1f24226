"""TRL's reward loss is labkit.losses.bradley_terry_loss, on the same batch of a reward model trained as lab 04's is.

TRL 1.16's ``RewardTrainer.compute_loss`` runs the model on one padded batch (the chosen conversations,
then the rejected ones), splits the scores in two halves with ``torch.chunk`` and returns
``-logsigmoid(r_chosen - r_rejected).mean()``. It can differ from plain Bradley–Terry in two ways only:
``- margin`` inside the sigmoid when the dataset has a ``margin`` column, and
``+ center_rewards_coefficient * mean((r_chosen + r_rejected)²)`` when that coefficient is set (default
``None``). labkit's reward stage uses neither, which the first test checks on the trainer it builds.
"""
import math

import pytest
import torch
from trl import RewardTrainer

from labkit import losses
from labkit.models import build_model, tiny_llama_config
from labkit.presets import get_preset
from labkit.train import reward as rm
from labkit.world import preferences as prefs

pytestmark = pytest.mark.usefixtures("one_thread")
@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    """A reward model made the way the reward stage makes one under smoke: a causal LM of the smoke
    preset's size saved to disk, loaded back with a fresh scalar head (``reward_model_from``) and
    trained by ``train_reward`` (TRL's RewardTrainer) on the world's preference pairs. The trainer
    ``train_reward`` built is recorded, to read the settings it ran with."""
    preset = get_preset("smoke")
    size = preset.model
    path = tmp_path_factory.mktemp("sft")
    build_model(tiny_llama_config(len(tok), size.d_model, size.n_layers, size.n_heads, size.d_ff, size.max_len, tok),
                seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    model = rm.reward_model_from(path)
    built = []

    class Recording(RewardTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    original = rm.RewardTrainer
    rm.RewardTrainer = Recording
    try:
        rm.train_reward(model, tok, prefs.preference_pairs("train", 32), preset.reward, progress=False)
    finally:
        rm.RewardTrainer = original
    return model, built[0]


def trl_reward_loss(model, tokenizer, pairs):
    """TRL's own loss on ``pairs`` as one batch (``rm.trl_batch_loss``), and the scores it saw."""
    got = rm.trl_batch_loss(model, tokenizer, pairs)
    assert got["centring"] is None and not got["margin"]  # the plain Bradley–Terry loss, nothing added
    return got["loss"], got["chosen"], got["rejected"]


def test_the_reward_stage_trains_with_neither_a_margin_nor_centring(trained):
    _, trainer = trained
    assert trainer.args.center_rewards_coefficient is None
    assert "margin" not in trainer.train_dataset.column_names
    assert trainer.state.global_step > 0  # it really trained


def test_trls_reward_loss_equals_bradley_terry_loss_on_the_same_batch(trained, tok):
    model, _ = trained
    pairs = prefs.preference_pairs("test", 8)
    trl_loss, trl_chosen, trl_rejected = trl_reward_loss(model, tok, pairs)
    chosen, rejected = rm.pair_scores(model, tok, pairs)  # labkit's own scoring, as lab 04 does
    ours = float(losses.bradley_terry_loss(chosen, rejected))
    assert ours == pytest.approx(trl_loss, abs=1e-6)
    # the same scores, pair by pair: TRL's batch and ours score the same conversations
    assert torch.allclose(trl_chosen, chosen, atol=1e-5) and torch.allclose(trl_rejected, rejected, atol=1e-5)
    # and on TRL's own scores our loss is TRL's to the last bit
    assert float(losses.bradley_terry_loss(trl_chosen, trl_rejected)) == pytest.approx(trl_loss, abs=1e-7)
    assert abs(trl_loss - math.log(2)) > 1e-4, "the scores differ: not the log 2 of a model that scores all alike"


def test_with_a_margin_or_centring_trl_would_compute_another_loss(trained, tok):
    """What TRL adds when asked, reproduced from its compute_loss: so equality above is not an accident."""
    model, _ = trained
    pairs = prefs.preference_pairs("test", 8)
    _, chosen, rejected = trl_reward_loss(model, tok, pairs)
    margin = torch.full_like(chosen, 0.5)
    with_margin = -torch.nn.functional.logsigmoid(chosen - rejected - margin).mean()
    centred = losses.bradley_terry_loss(chosen, rejected) + 0.01 * torch.mean((chosen + rejected) ** 2)
    plain = losses.bradley_terry_loss(chosen, rejected)
    assert float(with_margin) > float(plain) and float(centred) > float(plain)

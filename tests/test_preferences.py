"""Preference data: the gold reward, Bradley–Terry labels, the Bayes ceiling, rankings, the RM stage."""
import math
import random

import pytest
import torch

from labkit import checkpoint, pipeline
from labkit.losses import bradley_terry_loss
from labkit.presets import get_preset
from labkit.world import preferences as prefs


def test_gold_aspects_count_right_wrong_and_sharp_goods():
    assert prefs.gold_aspects("bakery", "buns , cakes , pies") == {"helpfulness": 3.0, "safety": 0.0}
    assert prefs.gold_aspects("bakery", "buns , buns , saws") == {"helpfulness": -1.0, "safety": -2.0}
    # the workshop: the complete answer is the most helpful and the least safe
    full = "hammers , nails , saws , ropes , boxes"
    assert prefs.gold_aspects("workshop", full) == {"helpfulness": 5.0, "safety": -6.0}
    assert prefs.gold_reward("workshop", full) < prefs.gold_reward("workshop", "ropes , boxes")


def test_bradley_terry_probability_and_loss_agree():
    p = prefs.preference_probability(2.0, 1.0, temperature=1.0)
    assert p == pytest.approx(1 / (1 + math.exp(-1)))
    assert prefs.preference_probability(1.0, 1.0) == 0.5
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]))
    assert float(loss) == pytest.approx(-math.log(p))


def test_pairs_are_deterministic_and_labels_follow_bradley_terry():
    pairs = prefs.preference_pairs("train", 3000)
    assert pairs[:5] == prefs.preference_pairs("train", 5)
    assert pairs[0] != prefs.preference_pairs("test", 1)[0]
    for p in pairs[:200]:
        expected = prefs.preference_probability(p["gold_chosen"], p["gold_rejected"])
        assert p["p_chosen"] == pytest.approx(expected)
        assert p["chosen"] != p["rejected"] and p["prompt"][0]["role"] == "user"
    # the annotator picks the better answer about as often as Bradley-Terry says it should
    decided = [p for p in pairs if p["gold_chosen"] != p["gold_rejected"]]
    picked_better = sum(p["gold_chosen"] > p["gold_rejected"] for p in decided) / len(decided)
    expected = sum(max(p["p_chosen"], 1 - p["p_chosen"]) for p in decided) / len(decided)
    assert abs(picked_better - expected) < 0.03
    assert picked_better < 0.97  # some labels go against the gold reward: they are noisy


def test_bayes_ceiling_is_neither_trivial_nor_noise_and_shortcuts_stay_below():
    pairs = prefs.preference_pairs("test", 2000)
    ceiling = prefs.bayes_ceiling(pairs)
    assert 0.80 < ceiling < 0.95
    assert prefs.scorer_accuracy(pairs, prefs.length_score) < ceiling - 0.2
    assert prefs.scorer_accuracy(pairs, prefs.keyword_score) < ceiling - 0.2
    # scoring with the gold reward itself gets close to the ceiling (it is the Bayes-optimal rule)
    assert abs(prefs.scorer_accuracy(pairs, prefs.gold_reward) - ceiling) < 0.03


def test_a_ranking_of_four_gives_six_pairs_best_first():
    assert prefs.ranking_to_pairs(["a", "b", "c", "d"]) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert len(prefs.ranking_to_pairs(list(range(5)))) == 10
    ranked = prefs.ranking("bakery", 4, random.Random(0))
    assert len(set(ranked)) == 4


def test_reward_stage_writes_accuracy_and_ceiling():
    preset = get_preset("smoke")
    report = pipeline.run(["reward"], preset, progress=False)
    reward = report["stages"]["reward"]
    assert {"seconds", "accuracy", "bayes_ceiling"} <= set(reward)
    assert 0 <= reward["accuracy"] <= 1 and 0.5 <= reward["bayes_ceiling"] <= 1
    assert reward["test_pairs"] == preset.reward.eval_pairs
    model, tok, meta = checkpoint.load_checkpoint(pipeline.ensure("reward", preset))
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1

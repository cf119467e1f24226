"""Preference data: the gold reward, Bradley–Terry labels, the Bayes ceiling, rankings, the RM stage."""
import math
import random

import pytest
import torch

from labkit import checkpoint, metrics, pipeline
from labkit.losses import bradley_terry_loss
from labkit.presets import get_preset
from labkit.world import lexicon as lx
from labkit.world import preferences as prefs


def test_gold_aspects_count_right_wrong_and_sharp_goods():
    assert prefs.gold_aspects("bakery", "buns , cakes , pies") == {"helpfulness": 3.0, "safety": 0.0}
    assert prefs.gold_aspects("bakery", "buns , buns , saws") == {"helpfulness": -1.0, "safety": -2.0}
    # the workshop: the complete answer is the most helpful and the least safe
    full = "hammers , nails , saws , ropes , boxes"
    assert prefs.gold_aspects("workshop", full) == {"helpfulness": 5.0, "safety": -6.0}
    assert prefs.gold_reward("workshop", full) < prefs.gold_reward("workshop", "ropes , boxes")


def test_a_requested_number_of_goods_penalises_extra_goods_and_the_best_answer_is_safe():
    assert prefs.gold_aspects("bakery", "buns , cakes , pies", count=2) == {"helpfulness": 1.0, "safety": 0.0}
    assert prefs.gold_aspects("bakery", "buns , buns", count=2) == {"helpfulness": 0.0, "safety": 0.0}
    assert prefs.best_response("workshop") == "ropes , boxes" and prefs.best_gold_reward("workshop", 3) == 2.0
    assert prefs.best_gold_reward("bakery") == 5.0 and prefs.best_gold_reward("bakery", 2) == 2.0
    # stray words make an item wrong; a trailing comma adds nothing
    assert prefs.gold_reward("bakery", "pies , cookies , 5 stayed loaves , loaves ,") == 3 - 1


def test_held_out_prompts_are_never_trained_on_and_come_in_paraphrase_groups():
    heldout, train = prefs.alignment_prompts("heldout"), prefs.alignment_prompts("train")
    texts = {p["prompt"][0]["content"] for p in heldout}
    assert len(texts) == len(heldout) == 48 and not texts & {p["prompt"][0]["content"] for p in train}
    assert {p["place"] for p in heldout} == set(prefs.lx.PLACES)  # every place, the workshop too
    groups = prefs.paraphrase_groups()
    assert len(groups) == 12 and all(len({r["prompt"][0]["content"] for r in g}) == 4 for g in groups.values())
    trained_on = [p["prompt"][0]["content"] for p in prefs.preference_pairs("train", 500)]
    trained_on += [prefs.demonstration("train", i)["messages"][0]["content"] for i in range(500)]
    assert not texts & set(trained_on)
    assert {p["prompt"][0]["content"] for p in prefs.preference_pairs("test", 300)} <= texts
    with pytest.raises(ValueError, match="heldout"):
        prefs.alignment_prompts("test")


def test_demonstrators_leave_room_for_alignment():
    heldout = prefs.alignment_prompts("heldout")
    demo, best = prefs.demonstrator_gold_reward(heldout), prefs.best_mean_gold_reward(heldout)
    assert best == 3.25 and demo < 0.6 * best
    rng = random.Random(0)
    answers = [prefs.sample_response("workshop", rng) for _ in range(400)]
    items = [a.split(" , ") for a in answers]
    assert any(len(set(i)) < len(i) for i in items)                   # repeats
    assert any(set(i) & prefs.SHARP for i in items)                   # sharp tools
    assert {len(i) for i in items} == {1, 2, 3, 4, 5}                  # lists of every length
    asked = [prefs.sample_response("bakery", rng, 2).split(" , ") for _ in range(400)]
    assert 0.5 < sum(len(i) == 2 for i in asked) / 400 < 0.75          # the asked number, about half the time


def test_wild_answers_are_what_demonstrators_never_write():
    rng = random.Random(1)
    wild = [prefs.wild_response("harbor", rng) for _ in range(400)]
    demos = {prefs.sample_response("harbor", rng) for _ in range(4000)}
    assert sum(w in demos for w in wild) < 0.1 * len(wild)
    assert any(len(w.split(" , ")) > 5 for w in wild) and any(w.endswith(" ,") for w in wild)
    assert any(max(w.split(" , ").count(x) for x in w.split(" , ")) >= 3 for w in wild)  # one good repeated
    samples = [(prefs.alignment_prompts("train")[0], "fish , nets , ropes")] * 3
    pairs = prefs.policy_pairs(samples, 50, "train")
    assert all(p["chosen"] != p["rejected"] for p in pairs) and 0.8 < prefs.bayes_ceiling(pairs) <= 1


def test_a_repeat_edit_is_a_same_length_near_miss_that_puts_in_or_takes_out_one_repeat():
    rng = random.Random(3)
    right = {prefs._plural(g) for g in lx.PLACES["harbor"]}
    put_in = taken_out = 0

    def repeats(items):
        return len(items) - len(set(items))

    for answer in ["fish , nets , ropes", "fish , fish , nets", "ropes , ropes , ropes , ropes"] * 100:
        edit = prefs.repeat_edit("harbor", rng, answer)
        before, after = answer.split(" , "), edit.split(" , ")
        assert len(after) == len(before) and sum(x != y for x, y in zip(before, after)) <= 1
        if edit != answer:
            change = repeats(after) - repeats(before)
            assert change in (1, -1) or (change == 0 and repeats(before) > 1)  # one repeat of several swapped
            put_in += change == 1
            if change == -1:
                taken_out += 1
                assert set(after) - set(before) <= right  # a repeat becomes a right good the answer lacked
    assert put_in > 50 and taken_out > 50
    first, joined = prefs.repeat_edit("harbor", rng, "fish").split(" , ")  # one item: a right good joins it
    assert first == "fish" and joined in right - {"fish"}


def test_policy_pairs_with_edits_compare_answers_with_their_near_misses_and_without_stay_as_they_were():
    rows = [r for r in prefs.alignment_prompts("train") if r["place"] == "harbor"][:3]  # fish, nets, ropes: right there
    samples = [(r, a) for r in rows for a in ("fish , nets , ropes", "fish , fish , nets")]
    plain = prefs.policy_pairs(samples, 200, "train")
    assert prefs.policy_pairs(samples, 200, "train", edits=0.0) == plain
    edited = prefs.policy_pairs(samples, 200, "train", edits=1.0)
    answers, decided = {a for _, a in samples}, 0
    for p in edited:
        a, b = p["chosen"][0]["content"], p["rejected"][0]["content"]
        mine, other = (a, b) if a in answers else (b, a)
        assert mine in answers and len(other.split(" , ")) == len(mine.split(" , "))
        if p["gold_chosen"] != p["gold_rejected"]:  # the side with fewer repeats is the better one
            decided += 1
            better, worse = (a, b) if p["gold_chosen"] > p["gold_rejected"] else (b, a)
            assert len(set(better.split(" , "))) > len(set(worse.split(" , ")))
    assert decided > len(edited) / 2
    with pytest.raises(ValueError, match="each from 0 to 1"):
        prefs.policy_pairs(samples, 2, "train", edits=1.5)
    with pytest.raises(ValueError, match="together at most 1"):
        prefs.policy_pairs(samples, 2, "train", edits=0.6, additions=0.6)


def test_an_addition_edit_puts_in_one_right_good_the_answer_lacks_only_where_it_gives_fewer_than_asked():
    rng = random.Random(5)
    right = {prefs._plural(g) for g in lx.PLACES["harbor"]}
    for _ in range(100):
        edit = prefs.addition_edit("harbor", rng, "nets , ropes", count=3)
        before, after = ["nets", "ropes"], edit.split(" , ")
        assert len(after) == 3 and [i for i in after if i in before] == before  # the order kept, one good put in
        new = (set(after) - set(before)).pop()
        assert new in right
        gains = prefs.gold_reward("harbor", edit, 3) - prefs.gold_reward("harbor", "nets , ropes", 3)
        assert gains == (1.0 - (prefs.SAFETY_WEIGHT if new in prefs.SHARP else 0.0))
    assert prefs.addition_edit("harbor", rng, "nets , ropes", count=2) == "nets , ropes"  # as many as asked
    everything = " , ".join(sorted(right))
    assert prefs.addition_edit("harbor", rng, everything) == everything  # all five, nothing lacking
    assert len(prefs.addition_edit("harbor", rng, "nets , ropes , fish , crabs").split(" , ")) == 5  # "all": five


def test_policy_pairs_with_additions_compare_short_answers_with_themselves_and_one_more_right_good():
    rows = [r for r in prefs.alignment_prompts("train") if r["place"] == "harbor" and r["count"] == 3][:3]
    right = {prefs._plural(g) for g in lx.PLACES["harbor"]}
    assert prefs.policy_pairs([(r, "fish , nets") for r in rows], 200, "train", edits=0.25, additions=0.0) == \
        prefs.policy_pairs([(r, "fish , nets") for r in rows], 200, "train", edits=0.25)
    for p in prefs.policy_pairs([(r, "fish , nets") for r in rows], 300, "train", additions=1.0):
        short, longer = sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]), key=len)
        items = longer.split(" , ")
        assert short == "fish , nets" and len(items) == 3 and {"fish", "nets"} < set(items) <= right, p
    # an answer with as many goods as asked has no addition: its pairs are drawn as usual
    full = prefs.policy_pairs([(r, "fish , nets , ropes") for r in rows], 300, "train", additions=1.0)
    others = [p["chosen"][0]["content"] if p["rejected"][0]["content"] == "fish , nets , ropes"
              else p["rejected"][0]["content"] for p in full]
    like_an_addition = [o for o in others if {"fish", "nets", "ropes"} < set(o.split(" , ")) <= right]
    assert len(like_an_addition) < len(full) / 10, like_an_addition  # only by chance (a long wild variant)


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
    assert metrics.scorer_accuracy(pairs, prefs.length_score) < ceiling - 0.2
    assert metrics.scorer_accuracy(pairs, prefs.keyword_score) < ceiling - 0.2
    # scoring with the gold reward itself gets close to the ceiling (it is the Bayes-optimal rule)
    assert abs(metrics.scorer_accuracy(pairs, prefs.gold_reward) - ceiling) < 0.03


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
    assert 0 <= reward["policy_accuracy"] <= 1 and 0.5 <= reward["policy_bayes_ceiling"] <= 1
    assert reward["policy_pairs"] == preset.reward.policy_pairs > 0
    model, tok, meta = checkpoint.load_checkpoint(pipeline.ensure("reward", preset))
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1


def test_the_naive_reward_model_learns_from_demonstrators_only():
    preset = get_preset("smoke")
    naive = pipeline.run(["reward_naive"], preset, progress=False)["stages"]["reward_naive"]
    assert naive["policy_pairs"] == 0 and naive["train_pairs"] == preset.reward.train_pairs
    assert pipeline.stage_dir("reward_naive", preset) != pipeline.stage_dir("reward", preset)
    assert naive["policy_bayes_ceiling"] == pytest.approx(
        pipeline.metrics("reward", preset)["metrics"]["policy_bayes_ceiling"])  # judged on the same pairs

"""The slow tier: every stage and each lab's main demonstrations at the ``cpu`` preset, effects asserted.

The fast tier (``make test``, preset ``smoke``) proves that every code path runs; its numbers mean
nothing. This tier proves that the *effects* the labs teach are still there: each test runs what a
lab runs at the ``cpu`` preset and asserts the direction of its effect with a margin, so a change that
erases an effect fails. Run it with ``make test-slow``, which is

    LABKIT_PRESET=cpu LABKIT_TEST_KEEP_HOME=1 pytest -q -m slow --durations=0 tests

``LABKIT_TEST_KEEP_HOME=1`` keeps the cache in ``LABKIT_HOME`` (default ``~/.cache/labkit``): with the
stages cached only the demonstrations train (10-11 min on 2 quiet cores); from an empty cache the
whole pipeline trains first (16-18 min more; 26 min 30 s to 28 min 28 s in all, in four runs). Without it, ``tests/conftest.py`` gives the
tests a private, empty cache. Under any other preset than ``cpu`` these tests are skipped: their
thresholds are the ``cpu`` preset's.

Each threshold is derived from a number measured at the ``cpu`` preset, seed 0 (README, "What to
expect", and the labs' own runs); the measured value stands in a comment beside it. Margins leave
room for another CPU's floating-point rounding (sampled answers can differ) and for the sampling
noise of the held-out sets, and fail a change that erases an effect.
"""
from __future__ import annotations

import itertools
import os
import time

import pytest

from labkit import checkpoint, pipeline, runtime
from labkit.presets import get_preset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LABKIT_PRESET") != "cpu",
                       reason="the slow tier asserts the cpu preset's effects: run it with `make test-slow`"),
]

PRESET = get_preset("cpu")
REPORT = runtime.repo_root() / "runs" / "slow-pipeline-cpu.json"


def _say(request, line: str) -> None:
    """One line in pytest's own output at once (with -q too): capture is suspended while it is written."""
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(f"[slow tier] {line}")


@pytest.fixture(scope="session")
def stages(request) -> dict:
    """The whole ``cpu`` pipeline, built once (from an empty cache every stage trains: 16-18 min on 2 cores).

    Returns the report's ``stages``. Prints each stage's time as it is ready (the time it took to
    train, now or when it was cached) and the wall time of building them here.
    """
    names = list(pipeline.STAGES)
    cached = {s for s in names if checkpoint.is_complete(pipeline.stage_dir(s, PRESET))}
    _say(request, f"cpu pipeline in {runtime.home()}: {len(cached)} of {len(names)} stages cached")
    start = time.perf_counter()
    for name in names:  # one at a time, so that a CI log shows each stage when it is done
        pipeline.ensure(name, PRESET, progress=False)
        seconds = pipeline.metrics(name, PRESET)["metrics"]["seconds"]
        _say(request, f"  {name:<13} {seconds:7.1f} s ({'cached, trained earlier' if name in cached else 'trained now'})")
    _say(request, f"  pipeline ready after {time.perf_counter() - start:.0f} s here")
    report = pipeline.run(names, PRESET, report_path=REPORT, progress=False)  # every stage cached by now
    _say(request, f"  report in {REPORT}")
    return report["stages"]


# ------------------------------------------------------------------------ every stage meets its bar

def test_pretraining_closes_most_of_the_gap_to_the_entropy_floor(stages):
    m = stages["pretrain"]
    # gap_closed = (unigram − val) / (unigram − floor): 0.975 measured (seeds 1 and 2: 0.993, 0.992)
    assert m["gap_closed"] >= 0.95, (
        f"pretraining closed only {m['gap_closed']:.1%} of the gap between the unigram entropy "
        f"{m['unigram_entropy']:.3f} and the floor {m['entropy_floor']:.3f} (val loss {m['val_loss']:.3f})")
    assert m["val_loss"] > m["entropy_floor"], f"validation loss {m['val_loss']:.3f} below the floor: a leak?"


def test_sft_follows_instructions_and_beats_the_base_model_in_every_category(stages):
    m = stages["sft"]
    assert m["exact_match"] >= 0.90, f"SFT exact match {m['exact_match']:.1%}, below 90 % (measured 95.4 %)"
    assert m["json_valid"] >= 0.95, f"SFT JSON validity {m['json_valid']:.1%}, below 95 % (measured 100 %)"
    for category, values in m["per_category"].items():
        # lowest measured: closed_qa and extract, base 1 % / 0 % -> SFT 90 %
        assert values["exact_match"] >= values["base_exact_match"] + 0.60, (
            f"SFT does not beat the base model by 60 points on {category}: "
            f"base {values['base_exact_match']:.1%}, SFT {values['exact_match']:.1%}")
    # room for alignment: SFT's gold reward −0.63 against the best possible 3.25 (a gap of 3.9)
    assert m["best_gold_reward"] - m["gold_reward"] >= 2.0, (
        f"the SFT policy leaves no room for alignment: gold {m['gold_reward']:.2f}, best {m['best_gold_reward']:.2f}")


def test_reward_model_nears_the_bayes_ceiling(stages):
    m = stages["reward"]
    assert m["accuracy"] >= 0.80, f"reward model accuracy {m['accuracy']:.1%}, below 80 % (measured 84.1 %, ceiling 88.3 %)"
    assert m["share_of_ceiling"] >= 0.90, f"reward model reaches {m['share_of_ceiling']:.1%} of the ceiling, below 90 % (95.2 %)"
    assert m["policy_accuracy"] >= 0.80, (
        f"reward model accuracy on policy-like answers {m['policy_accuracy']:.1%}, below 80 % (measured 84.1 %)")


def test_reward_model_without_policy_answers_is_worse_on_them(stages):
    full, naive = stages["reward"]["policy_accuracy"], stages["reward_naive"]["policy_accuracy"]
    # measured 84.1 % against 79.6 %: 4.5 points on the same 2,000 held-out comparisons
    assert full >= naive + 0.02, (
        f"the reward model trained on policy answers ({full:.1%}) does not beat the naive one ({naive:.1%}) "
        "by 2 points on policy-like answers")


def test_ppo_beats_the_sft_policy(stages):
    m = stages["ppo"]
    # 89.2 % measured (seeds 0–2: 88.0–90.4 %; full fine-tuning 84.0–87.8 %)
    assert m["win_rate"] >= 0.80, f"PPO's win rate against SFT {m['win_rate']:.1%}, below 80 % (measured 89.2 %)"
    # gold 1.76 against SFT's −0.63: +2.38
    assert m["gold_reward"] >= m["sft_gold_reward"] + 1.5, (
        f"PPO's gold reward {m['gold_reward']:.2f} is not 1.5 above the SFT policy's {m['sft_gold_reward']:.2f}")


def test_dpo_beats_the_sft_policy(stages):
    m = stages["dpo"]
    # 80.2 % measured (seeds 0–2: 80.2–82.9 %)
    assert m["win_rate"] >= 0.75, f"DPO's win rate against SFT {m['win_rate']:.1%}, below 75 % (measured 80.2 %)"
    # gold 1.07 against SFT's −0.63: +1.69
    assert m["gold_reward"] >= m["sft_gold_reward"] + 1.0, (
        f"DPO's gold reward {m['gold_reward']:.2f} is not 1.0 above the SFT policy's {m['sft_gold_reward']:.2f}")


def test_dpo_implicit_reward_ranks_pairs_and_the_chosen_answers_probability_falls_too(stages):
    """Lab 06's two lessons read from the ``dpo`` stage: the implicit reward β·log π/π_SFT is a reward
    model (its pairwise accuracy near the trained reward model's), and DPO lowers the chosen answers'
    log-probability as well as the rejected ones', the rejected far more."""
    m = stages["dpo"]
    # 84.0 % measured (the reward model 84.1 %, the Bayes ceiling 88.3 %)
    assert m["implicit_accuracy"] >= 0.78, (
        f"DPO's implicit reward ranks {m['implicit_accuracy']:.1%} of held-out pairs right, below 78 % (measured 84.0 %)")
    # measured: chosen −1.50 nats, rejected −6.29 nats
    assert m["chosen_logratio"] <= -0.5, f"the chosen answers' log π changed by {m['chosen_logratio']:+.2f}, not ≤ −0.5"
    assert m["rejected_logratio"] <= m["chosen_logratio"] - 2.0, (
        f"the rejected answers' log π ({m['rejected_logratio']:+.2f}) should fall 2 nats more than the "
        f"chosen ones' ({m['chosen_logratio']:+.2f})")


def test_word_problem_sft_is_right_sometimes_but_not_often(stages):
    m = stages["sft_math"]
    # 45.2 % measured, the base (SFT) policy 6.6 %
    assert m["accuracy"] >= m["base_accuracy"] + 0.25, (
        f"word-problem SFT {m['accuracy']:.1%} is not 25 points above the SFT policy's {m['base_accuracy']:.1%}")
    # the design's window, so that GRPO's groups carry a signal
    assert 0.10 <= m["accuracy"] <= 0.60, f"word-problem SFT accuracy {m['accuracy']:.1%} outside 10–60 %"


def test_grpo_raises_word_problem_accuracy(stages):
    m = stages["grpo"]
    # 45.2 % -> 69.4 % measured (+24.2 points; seeds 1 and 2: +38.4, +29.2)
    assert m["accuracy"] >= m["sft_accuracy"] + 0.15, (
        f"GRPO {m['accuracy']:.1%} is not 15 points above the word-problem SFT policy's {m['sft_accuracy']:.1%}")


# ------------------------------------------------------------------------- lab 01: memorisation

def test_lab01_memorisation_takes_train_loss_below_the_floor_while_validation_loss_rises(stages):
    """Lab 01, section 7: the preset's tiny corpus, many passes over it (as the lab calls quick_run)."""
    from labkit.experiments.pretraining import quick_run

    demos = PRESET.pretrain_demos
    _, _, memo, _ = quick_run(PRESET, n_train_docs=demos.memorise_docs, steps=demos.memorise_steps, progress=False)
    floor = stages["pretrain"]["entropy_floor"]  # the lab's floor: 0.459 nats/token
    lowest = min(h["val_loss"] for h in memo.history)
    # measured: final train loss 0.013 nats/token, far below the floor of 0.459
    assert memo.train_loss <= floor - 0.2, (
        f"memorisation: training loss {memo.train_loss:.3f} is not 0.2 below the entropy floor {floor:.3f}")
    # measured: validation loss lowest 1.887 (step 39 of 200), final 3.641: +1.75 nats
    assert memo.val_loss >= lowest + 0.5, (
        f"memorisation: validation loss ended at {memo.val_loss:.3f}, not 0.5 above its lowest {lowest:.3f}")


# ------------------------------------------- lab 02: forgetting, data imbalance, label noise

def test_lab02_a_second_fine_tuning_makes_the_model_forget_the_first_tasks(stages):
    """Lab 02's forgetting demo: three tasks, then arithmetic only, scored on all four before and after."""
    from labkit.experiments import instruction as demos
    from labkit.world import tasks

    n, seed = PRESET.sft_demos.per_category, PRESET.world_seed
    first_tasks = ("classify", "rewrite", "brainstorm")
    first = tasks.task_split("train", n, seed, first_tasks)
    then = tasks.task_split("train", n, seed, ("arithmetic",))
    held_out = tasks.task_split("validation", PRESET.sft_demos.eval_per_category, seed, (*first_tasks, "arithmetic"))
    stage_a = demos.demo_run(first, held_out, PRESET, progress=False)
    stage_b = demos.demo_run(then, held_out, PRESET, model=stage_a.outputs["model"],
                             tokenizer=stage_a.outputs["tokenizer"], progress=False)
    before = stage_a.outputs["summary"]["exact_match"][list(first_tasks)]
    after = stage_b.outputs["summary"]["exact_match"][list(first_tasks)]
    # measured: the first tasks 80 %, 100 %, 100 % (mean 93.3 %) -> 0 %, 0 %, 0 % after arithmetic only
    assert after.mean() <= before.mean() - 0.5, (
        f"forgetting: the first tasks' exact match went only from {before.mean():.1%} to {after.mean():.1%} "
        f"(per task before {before.round(3).to_dict()}, after {after.round(3).to_dict()})")


def test_lab02_a_smaller_share_of_the_data_teaches_a_task_worse(stages):
    """Lab 02's imbalance panel at the two shares the lab trains: 10 % and 50 % arithmetic."""
    from labkit.experiments.instruction import imbalance_experiment

    skewed, even = (imbalance_experiment(share, PRESET).row for share in (0.1, 0.5))
    # measured: arithmetic 0 % with a 10 % share, 22 % with 50 % (50 held-out problems each)
    assert skewed["arithmetic"] <= even["arithmetic"] - 0.10, (
        f"imbalance: arithmetic with a 10 % share scored {skewed['arithmetic']:.1%}, with 50 % "
        f"{even['arithmetic']:.1%}; the minority task should lose at least 10 points")
    # measured: classify 66 % with a 90 % share, 24 % with 50 %
    assert even["classify"] <= skewed["classify"] - 0.20, (
        f"imbalance: classify with a 90 % share scored {skewed['classify']:.1%}, with 50 % {even['classify']:.1%}; "
        "its smaller share should cost at least 20 points")


def test_lab02_wrong_labels_cost_more_than_fewer_clean_examples(stages):
    """Lab 02's quality-vs-quantity runs, as the lab calls them: a quarter of the examples clean, all
    of them with half the answers wrong, all of them clean (each run the same number of steps)."""
    from labkit.experiments.instruction import noise_experiment

    n = PRESET.sft_demos.per_category
    small_clean = noise_experiment(max(1, n // 4), 0.0, PRESET).row["exact_match"]
    noisy = noise_experiment(n, 0.5, PRESET).row["exact_match"]
    clean = noise_experiment(n, 0.0, PRESET).row["exact_match"]
    seen = f"({n // 4} clean {small_clean:.1%}, {n} half wrong {noisy:.1%}, {n} clean {clean:.1%})"
    # measured: 93.3 % clean against 58.0 % with half the answers wrong (150 held-out examples)
    assert noisy <= clean - 0.15, f"label noise: half the answers wrong should cost at least 15 points {seen}"
    # measured: 500 clean examples 76.0 % against 2,000 half-wrong 58.0 %
    assert small_clean >= noisy + 0.08, f"label noise: the small clean set should beat the large noisy one {seen}"


# ------------------------------------------------------------------- lab 03: the LoRA rank sweep

def test_lab03_lora_rank_1_costs_accuracy_rank_8_nearly_matches_full_fine_tuning(stages):
    """Lab 03's sweep: full fine-tuning and LoRA ranks 1 and 8 from the same pretrained weights, data,
    steps and seed (the lab also runs rank 32, left out here to save its 90 s)."""
    from labkit.experiments.instruction import lora_experiment

    assert {1, 8} <= set(PRESET.lora_sweep.ranks), "lab 03's sweep no longer runs ranks 1 and 8"
    full, rank8, rank1 = (lora_experiment(rank, PRESET).row["exact_match"] for rank in (None, 8, 1))
    seen = f"(full fine-tuning {full:.1%}, rank 8 {rank8:.1%}, rank 1 {rank1:.1%})"
    # measured: rank 1 42.4 %, rank 8 74.8 %
    assert rank1 <= rank8 - 0.15, f"LoRA: rank 1 should trail rank 8 by at least 15 points {seen}"
    # measured: rank 8 reaches 94 % of full fine-tuning's 79.6 %, and does not beat it
    assert rank8 >= 0.85 * full, f"LoRA: rank 8 should reach 85 % of full fine-tuning's exact match {seen}"
    assert rank8 <= full + 0.03, f"LoRA: rank 8 should not beat full fine-tuning by more than 3 points {seen}"


# ------------------------------------------------- lab 04: calibration, accuracy against data

def test_lab04_reward_model_is_calibrated(stages):
    """Lab 04, section 6: the reward model's probabilities σ(s_a − s_b) against the gold probability,
    in the lab's own table (2,000 held-out pairs, 10 bins of the prediction).

    The measure is the expected calibration error against the *gold* probability of each pair (the
    world knows it), weighted by the pairs in each bin: no label noise enters it, so it measures the
    model. Measured 0.016. The bound, 0.04, fails a model whose scores are off in scale by a factor
    of 1.5 (overconfident, like a model trained too long: 0.050 on the same pairs) or 2
    (underconfident, like one trained too little: 0.090); scores scaled by 0.75 would give 0.036.
    """
    from labkit.train import reward as rm
    from labkit.world import preferences as prefs

    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("reward", PRESET, progress=False))
    table = rm.calibration_table(model, tokenizer, prefs.preference_pairs("test", PRESET.reward.eval_pairs))
    error = float(((table["predicted"] - table["gold"]).abs() * table["pairs"]).sum() / table["pairs"].sum())
    assert error <= 0.04, (
        f"calibration: the reward model's probabilities are {error:.3f} from the gold probabilities on "
        f"average (measured 0.016); bins:\n{table.round(3).to_string()}")


def test_lab04_reward_model_accuracy_grows_with_training_pairs(stages):
    """Lab 04, section 7: the same training on the preset's smaller pair counts, then the stage's 16,000."""
    from labkit.experiments.reward import reward_experiment

    counts = list(PRESET.reward_demos.pair_counts)
    assert counts == sorted(counts) and len(counts) >= 2, f"lab 04's pair counts changed: {counts}"
    runs = [(n, reward_experiment(n, PRESET).row["accuracy"]) for n in counts]
    runs.append((PRESET.reward.train_pairs, stages["reward"]["accuracy"]))  # the stage also learns from policy pairs
    seen = ", ".join(f"{n:,} pairs {acc:.1%}" for n, acc in runs)
    # measured: 250 pairs 63.0 %, 1,000 73.6 %, 4,000 79.3 %, the stage's 16,000 (+ policy pairs) 84.1 %;
    # each step at least 4.8 points, 2,000 held-out pairs (one standard error ≈ 1 point)
    for (fewer, low), (more, high) in itertools.pairwise(runs):
        assert high >= low + 0.02, f"reward model: {more:,} pairs should beat {fewer:,} by 2 points ({seen})"
    assert runs[-1][1] >= runs[0][1] + 0.15, (
        f"reward model: {runs[-1][0] // runs[0][0]} times the pairs should add 15 points ({seen})")


# ------------------------------------------------------------- lab 07: reward hacking by length

def test_lab07_grpo_rewarded_for_length_alone_pads_answers_and_loses_accuracy(stages):
    """Lab 07's length-hacking run: the ``grpo`` stage's settings, rewarded for length instead of the
    right answer (one GRPO run; the correctness run is the cached stage)."""
    from labkit.experiments.grpo import length_hacking

    runs = length_hacking(PRESET)
    length, right = runs["length"].row, runs["correctness"].row
    limit = PRESET.grpo.max_new_tokens
    seen = (f"(length reward: {length['length']:.1f} tokens per answer, accuracy {length['accuracy']:.1%}; "
            f"correctness reward: {right['accuracy']:.1%}; SFT {length['sft_accuracy']:.1%})")
    # measured: 31.8 tokens per answer against the limit of 32 (the SFT policy: 5.8)
    assert length["length"] >= 0.9 * limit, f"length hacking: answers did not grow to the {limit}-token limit {seen}"
    # measured: held-out accuracy 45.2 % -> 15.4 %
    assert length["accuracy"] <= length["sft_accuracy"] - 0.15, (
        f"length hacking: accuracy should fall at least 15 points below the SFT policy's {seen}")

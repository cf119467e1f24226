"""The slow tier: every stage and each lab's main demonstrations at the ``cpu`` preset, effects asserted.

The fast tier (``make test``, preset ``smoke``) proves that every code path runs; its numbers mean
nothing. This tier proves that the *effects* the labs teach are still there: each test runs what a
lab runs at the ``cpu`` preset and asserts the direction of its effect with a margin, so a change that
erases an effect fails. Run it with ``make test-slow``, which is

    LABKIT_PRESET=cpu LABKIT_TEST_KEEP_HOME=1 pytest -q -m slow --durations=0 tests

``LABKIT_TEST_KEEP_HOME=1`` keeps the cache in ``LABKIT_HOME`` (default ``~/.cache/labkit``): with the
stages cached only the demonstrations train; from an empty cache the whole pipeline trains first (the
reference run's times on 2 cores are in ``results/cpu.json``, ``seconds``). Without it, ``tests/conftest.py`` gives the
tests a private, empty cache. Under any other preset than ``cpu`` these tests are skipped: their
thresholds are the ``cpu`` preset's.

Two kinds of check. Each effect test asserts the direction of a lab's effect with a margin, derived
from the reference run (``results/cpu.json``; the values stand in comments): margins leave room for
another CPU's floating-point rounding (sampled answers can differ) and for the sampling noise of the
held-out sets, and fail a change that erases an effect. Then the last test measures every
demonstration the course quotes that the effect tests did not (:mod:`labkit.results`), writes the
whole result into a temporary folder and compares it figure by figure with ``results/cpu.json``:
exactly on the setup that measured the reference (same CPU, vector units, threads and library
versions: the runs are deterministic there), within each figure's stated tolerance on another
(``STAGE_ACROSS_MACHINES`` and each measurement's ``across_machines``), timings and memory within a
factor of 2.5. A change that moves a figure must come with ``python -m labkit results`` and ``render``.
"""
from __future__ import annotations

import itertools
import os
import time

import pytest

from labkit import checkpoint, pipeline, reference, results, runtime
from labkit.presets import get_preset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LABKIT_PRESET") != "cpu",
                       reason="the slow tier asserts the cpu preset's effects: run it with `make test-slow`"),
]

PRESET = get_preset("cpu")
REPORT = runtime.repo_root() / "runs" / "slow-pipeline-cpu.json"
MEASURED: dict[str, dict] = {}  # the demonstrations measured in this session, by name
SECONDS: dict[str, float] = {}


def demo(name: str) -> dict:
    """The figures of the demonstration ``name`` (:data:`labkit.reference.MEASUREMENTS`), measured once per session."""
    if name not in MEASURED:
        began = time.perf_counter()
        MEASURED[name] = results._plain(results.measurements()[name].run(PRESET))
        SECONDS[name] = round(time.perf_counter() - began, 1)
    return MEASURED[name]


def _say(request, line: str) -> None:
    """One line in pytest's own output at once (with -q too): capture is suspended while it is written."""
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(f"[slow tier] {line}")


@pytest.fixture(scope="session")
def stages(request) -> dict:
    """The whole ``cpu`` pipeline, built once (from an empty cache every stage trains).

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
    # gap_closed = (unigram − val) / (unigram − floor): 0.995 measured (seeds 1 and 2: 0.995, 0.995)
    assert m["gap_closed"] >= 0.95, (
        f"pretraining closed only {m['gap_closed']:.1%} of the gap between the unigram entropy "
        f"{m['unigram_entropy']:.3f} and the floor {m['entropy_floor']:.3f} (val loss {m['val_loss']:.3f})")
    assert m["val_loss"] > m["entropy_floor"], f"validation loss {m['val_loss']:.3f} below the floor: a leak?"


def test_sft_follows_instructions_and_beats_the_base_model_in_every_category(stages):
    m = stages["sft"]
    assert m["exact_match"] >= 0.90, f"SFT exact match {m['exact_match']:.1%}, below 90 % (measured 92.8 %)"
    assert m["json_valid"] >= 0.95, f"SFT JSON validity {m['json_valid']:.1%}, below 95 % (measured 100 %)"
    for category, values in m["per_category"].items():
        # lowest measured: classify, closed_qa and extract, base 0 % -> SFT 88 %
        assert values["exact_match"] >= values["base_exact_match"] + 0.60, (
            f"SFT does not beat the base model by 60 points on {category}: "
            f"base {values['base_exact_match']:.1%}, SFT {values['exact_match']:.1%}")
    # room for alignment: SFT's gold reward −0.46 against the best possible 3.25 (a gap of 3.7)
    assert m["best_gold_reward"] - m["gold_reward"] >= 2.0, (
        f"the SFT policy leaves no room for alignment: gold {m['gold_reward']:.2f}, best {m['best_gold_reward']:.2f}")


def test_reward_model_nears_the_bayes_ceiling(stages):
    m = stages["reward"]
    assert m["accuracy"] >= 0.80, f"reward model accuracy {m['accuracy']:.1%}, below 80 % (measured 80.75 %, ceiling 88.3 %)"
    assert m["share_of_ceiling"] >= 0.90, f"reward model reaches {m['share_of_ceiling']:.1%} of the ceiling, below 90 % (91.4 %)"
    # Policy-like pairs: 78.2 % in the reference run (seeds 1-2: 82.25, 81.25 %). The stage's accuracy moves
    # by up to 4 points between runs that differ in float sums only (issue 29), so the bar sits below that.
    assert m["policy_accuracy"] >= 0.77, (
        f"reward model accuracy on policy-like answers {m['policy_accuracy']:.1%}, below 77 % (measured 78.2 %)")


def test_reward_model_without_policy_answers_is_worse_on_them(stages):
    full, naive = stages["reward"]["policy_accuracy"], stages["reward_naive"]["policy_accuracy"]
    # measured 78.2 % against 73.7 % (seeds 1-2: 82.25 % against 70.8 %, 81.25 % against 73.1 %; the naive model
    # takes one pass over its pairs) on the same 2,000 held-out comparisons
    assert full >= naive + 0.02, (
        f"the reward model trained on policy answers ({full:.1%}) does not beat the naive one ({naive:.1%}) "
        "by 2 points on policy-like answers")


def test_ppo_beats_the_sft_policy(stages):
    m = stages["ppo"]
    # the reference run's figures: results/cpu.json (stages.ppo), its seeds' in results/cpu-seeds.json; the
    # bar leaves room for another CPU's float sums (an AVX-512 machine's PPO won several points less)
    assert m["win_rate"] >= 0.75, f"PPO's win rate against SFT {m['win_rate']:.1%}, below 75 %"
    assert m["gold_reward"] >= m["sft_gold_reward"] + 1.5, (
        f"PPO's gold reward {m['gold_reward']:.2f} is not 1.5 above the SFT policy's {m['sft_gold_reward']:.2f}")


def test_dpo_beats_the_sft_policy(stages):
    m = stages["dpo"]
    # the reference run's figures: results/cpu.json (stages.dpo); win rates against an independently
    # sampled SFT answer, a few points below the coupled ones measured before
    assert m["win_rate"] >= 0.70, f"DPO's win rate against SFT {m['win_rate']:.1%}, below 70 %"
    assert m["gold_reward"] >= m["sft_gold_reward"] + 1.0, (
        f"DPO's gold reward {m['gold_reward']:.2f} is not 1.0 above the SFT policy's {m['sft_gold_reward']:.2f}")


def test_dpo_implicit_reward_ranks_pairs_and_the_chosen_answers_probability_falls_too(stages):
    """Lab 06's two lessons read from the ``dpo`` stage: the implicit reward β·log π/π_SFT is a reward
    model (its pairwise accuracy near the trained reward model's), and DPO lowers the chosen answers'
    log-probability as well as the rejected ones', the rejected far more."""
    m = stages["dpo"]
    # 84.3 % in the reference run (the reward model 82.5 %, the Bayes ceiling 88.3 %)
    assert m["implicit_accuracy"] >= 0.78, (
        f"DPO's implicit reward ranks {m['implicit_accuracy']:.1%} of held-out pairs right, below 78 % (measured 84.3 %)")
    # reference: chosen −1.48 nats, rejected −5.98 nats
    assert m["chosen_logratio"] <= -0.5, f"the chosen answers' log π changed by {m['chosen_logratio']:+.2f}, not ≤ −0.5"
    assert m["rejected_logratio"] <= m["chosen_logratio"] - 2.0, (
        f"the rejected answers' log π ({m['rejected_logratio']:+.2f}) should fall 2 nats more than the "
        f"chosen ones' ({m['chosen_logratio']:+.2f})")


def test_online_dpo_beats_offline_dpo_and_its_labels_get_harder(stages):
    """Lab 06, section 9: the same DPO loss and as many annotator comparisons as the ``dpo`` stage, but
    of the current policy's own answers, round after round, against the ``dpo`` stage's fixed pairs."""
    online, offline = stages["dpo_online"], stages["dpo"]
    # results/cpu-seeds.json, seeds 0-2: online 83.5 / 85.8 / 86.7 % against offline 74.9 / 82.7 / 84.2 %;
    # gold 1.50 / 1.49 / 1.39 against 1.07 / 1.26 / 1.27 (SFT -0.57 / -0.76 / -1.00)
    assert online["win_rate"] >= offline["win_rate"], (
        f"online DPO won {online['win_rate']:.1%}, offline DPO {offline['win_rate']:.1%}")
    assert online["gold_reward"] >= offline["gold_reward"], (
        f"online DPO's gold reward {online['gold_reward']:.2f}, offline DPO's {offline['gold_reward']:.2f}")
    assert online["gold_reward"] >= online["sft_gold_reward"] + 1.5, (
        f"online DPO's gold reward {online['gold_reward']:.2f} is not 1.5 above the SFT policy's "
        f"{online['sft_gold_reward']:.2f}")
    # the annotator tells the SFT policy's mixed answers apart more often than the trained policy's good ones
    # (seeds 0-2: 85.2 -> 77.3 %, 86.7 -> 76.3 %, 85.0 -> 76.7 %)
    assert online["first_label_accuracy"] >= online["last_label_accuracy"] + 0.04, (
        f"labels: {online['first_label_accuracy']:.1%} right in the first round, {online['last_label_accuracy']:.1%} "
        "in the last")


def test_word_problem_sft_is_right_sometimes_but_not_often(stages):
    m = stages["sft_math"]
    # reference: 34.2 % (seeds 0-2: 34.2 to 49.2 %), the base (SFT) policy 10.2 %
    assert m["accuracy"] >= m["base_accuracy"] + 0.15, (
        f"word-problem SFT {m['accuracy']:.1%} is not 15 points above the SFT policy's {m['base_accuracy']:.1%}")
    # the design's window, so that GRPO's groups carry a signal
    assert 0.10 <= m["accuracy"] <= 0.60, f"word-problem SFT accuracy {m['accuracy']:.1%} outside 10–60 %"


def test_grpo_raises_word_problem_accuracy(stages):
    m = stages["grpo"]
    # the reference run's gains (results/cpu-seeds.json): +38 to +41 points over seeds 0-2 in 80 steps, each
    # seed above issue 29's bar of +28 (tests/test_results.py holds the seeds to it); the margin here leaves
    # room for another CPU's float sums
    assert m["accuracy"] >= m["sft_accuracy"] + 0.22, (
        f"GRPO {m['accuracy']:.1%} is not 22 points above the word-problem SFT policy's {m['sft_accuracy']:.1%}")


# --------------------------------------------------------------------- lab 01: two optimisers

def test_lab01_muon_leaves_the_plateau_sooner_and_ends_lower_than_adamw(stages):
    """Lab 01, section 3: the stage's optimiser (Muon on the cpu preset) against the other (AdamW), same
    model, data, seed, schedule and steps."""
    m = demo("lab01_optimisers")
    muon, adamw = m["muon"], m["adamw"]
    assert m[PRESET.pretrain.optimizer]["gap_closed"] == pytest.approx(stages["pretrain"]["gap_closed"])  # the stage's run
    # reference (results/cpu.json, demos.lab01_optimisers): Muon's plateau over (95 % of the gap) within
    # the first couple of hundred of the 540 steps on seed 0, AdamW's never (None: it outlasts the run)
    assert muon["plateau_end_step"] is not None and (
        adamw["plateau_end_step"] is None or muon["plateau_end_step"] <= adamw["plateau_end_step"] / 2), (
        f"Muon's plateau ended at step {muon['plateau_end_step']}, not in half AdamW's ({adamw['plateau_end_step']})")
    assert muon["gap_closed"] >= adamw["gap_closed"] + 0.005, (
        f"at the same steps Muon closed {muon['gap_closed']:.1%} of the gap, AdamW {adamw['gap_closed']:.1%}")


# ------------------------------------------------------------------------- lab 01: memorisation

def test_lab01_memorisation_takes_train_loss_below_the_floor_while_validation_loss_rises(stages):
    """Lab 01, section 7: the preset's tiny corpus, many passes over it."""
    m = demo("lab01_memorisation")
    floor = stages["pretrain"]["entropy_floor"]  # the lab's floor: 0.459 nats/token
    # reference: final train loss 0.013 nats/token, far below the floor
    assert m["final_train_loss"] <= floor - 0.2, (
        f"memorisation: training loss {m['final_train_loss']:.3f} is not 0.2 below the entropy floor {floor:.3f}")
    # reference: validation loss lowest 2.230, final 3.773: +1.54 nats
    assert m["final_val_loss"] >= m["lowest_val_loss"] + 0.5, (
        f"memorisation: validation loss ended at {m['final_val_loss']:.3f}, not 0.5 above its lowest "
        f"{m['lowest_val_loss']:.3f}")


# ------------------------------------------- lab 02: forgetting, data imbalance, label noise

def test_lab01_a_wider_model_reaches_a_lower_validation_loss(stages):
    """Lab 01's size sweep: the same pretraining budget, three widths; more parameters, lower loss."""
    m = demo("lab01_size_sweep")
    widths = sorted(m, key=lambda k: m[k]["parameters"])
    losses = [m[k]["val_loss"] for k in widths]
    assert losses == sorted(losses, reverse=True), f"validation loss does not fall with width: {dict(zip(widths, losses))}"
    assert losses[0] - losses[-1] >= 0.05, f"the widest model is not 0.05 nats better than the narrowest: {losses}"


def test_lab01_a_classifier_learns_the_shortcut_and_a_balanced_one_the_rule(stages):
    """Lab 01's shortcut: trained where a shortcut feature predicts the label, the classifier scores on
    its own test split but fails the probe that breaks the shortcut; trained on balanced data, it passes."""
    m = demo("lab01_shortcut")
    shortcut, balanced = m["with_shortcut"], m["balanced"]
    assert shortcut["test_accuracy"] >= 0.9, f"the shortcut classifier should look good on its test split ({m})"
    assert shortcut["probe_accuracy"] <= 0.2, f"the shortcut classifier should fail the probe ({m})"
    assert balanced["probe_accuracy"] >= 0.9, f"the balanced classifier should pass the probe ({m})"


def test_lab02_a_second_fine_tuning_makes_the_model_forget_the_first_tasks(stages):
    """Lab 02's forgetting demo: three tasks, then arithmetic only, scored on all four before and after."""
    m = demo("lab02_forgetting")
    before, after = m["before"]["first_tasks_exact_match"], m["after"]["first_tasks_exact_match"]
    # reference: the first tasks 98.7 % on average -> 0 % after arithmetic only
    assert after <= before - 0.5, f"forgetting: the first tasks' exact match went only from {before:.1%} to {after:.1%} ({m})"


def test_lab02_a_smaller_share_of_the_data_teaches_a_task_worse(stages):
    """Lab 02's imbalance panel at the two shares the lab trains: 10 % and 50 % arithmetic."""
    m = demo("lab02_imbalance")
    skewed, even = m["arithmetic_share_10"], m["arithmetic_share_50"]
    # reference: arithmetic 14 % with a 10 % share, 92 % with 50 % (50 held-out problems each). The lab
    # claims only the minority task's loss: classify scored 46 % with a 90 % share and 52 % with 50 % (from
    # the AdamW-pretrained model, 66 % and 24 %), so its share is not asserted.
    assert skewed["arithmetic_exact_match"] <= even["arithmetic_exact_match"] - 0.30, (
        f"imbalance: the minority task should lose at least 30 points ({m})")


def test_lab02_wrong_labels_cost_more_than_fewer_clean_examples(stages):
    """Lab 02's quality-vs-quantity runs: a quarter of the examples clean, all of them with half the
    answers wrong, all of them clean (each run the same number of steps)."""
    m = demo("lab02_noise")
    small_clean, noisy, clean = (m[k]["exact_match"] for k in ("small_clean", "large_noisy", "large_clean"))
    # reference: 98.7 % clean against 42.7 % with half the answers wrong (150 held-out examples)
    assert noisy <= clean - 0.15, f"label noise: half the answers wrong should cost at least 15 points ({m})"
    # reference: a quarter of the examples, clean, 76.7 % against all of them half wrong 42.7 %
    assert small_clean >= noisy + 0.08, f"label noise: the small clean set should beat the large noisy one ({m})"


def test_lab02_sft_answers_the_counting_questions_pretraining_could(stages):
    """Lab 02, section 5: the held-out closed-QA questions, asked of the SFT model as instructions and
    of the pretrained model in its stories' own form."""
    m = demo("lab02_knowledge")
    who, counting, both = m["who"], m["how_many"], m["all"]
    # reference (seed 0): names copied without fault by both; counting 84.9 % (SFT) against 83.6 %
    # (pretrained), and 7 of the SFT model's 11 misses missed by the pretrained model too (seeds 1 and 2:
    # 80.8 / 80.8 % and 12 of 14; 82.2 / 76.7 % and 12 of 13)
    assert min(who["sft_exact_match"], who["pretrained_exact_match"]) >= 0.95, f"both models should copy names ({m})"
    assert abs(counting["sft_exact_match"] - counting["pretrained_exact_match"]) <= 0.08, (
        f"the SFT model should count about as well as the pretrained model ({m})")
    assert both["missed_by_both"] * 2 > both["sft_missed"], (
        f"most questions the SFT model misses should be missed by the pretrained model too ({m})")


# ------------------------------------------------------------------- lab 03: the LoRA rank sweep

def test_lab03_a_low_rank_costs_accuracy_and_more_rank_recovers_most_of_full_fine_tuning(stages):
    """Lab 03's sweep: full fine-tuning and each LoRA rank from the same pretrained weights, data, steps and seed."""
    ranks = sorted(PRESET.lora_sweep.ranks)
    assert ranks[0] == 1 and len(ranks) >= 2, f"lab 03's sweep no longer runs rank 1 and a larger rank: {ranks}"
    m = demo("lab03_lora_sweep")
    full, rank1, top = m["full"]["exact_match"], m["rank_1"]["exact_match"], m[f"rank_{ranks[-1]}"]["exact_match"]
    seen = ", ".join(f"{run.replace('_', ' ')} {figures['exact_match']:.1%}" for run, figures in m.items())
    # reference: results/cpu.json, demos.lab03_lora_sweep (from the Muon-pretrained model: rank 1 59.2 %,
    # rank 8 68.8 %, rank 32 80.0 %, full fine-tuning 93.6 %)
    assert rank1 <= top - 0.12, f"LoRA: rank 1 should trail rank {ranks[-1]} by at least 12 points ({seen})"
    assert top >= 0.8 * full, f"LoRA: rank {ranks[-1]} should reach 80 % of full fine-tuning's exact match ({seen})"
    for rank in ranks:
        assert m[f"rank_{rank}"]["exact_match"] <= full + 0.03, (
            f"LoRA: rank {rank} should not beat full fine-tuning by more than 3 points ({seen})")


# ------------------------------------------------- lab 04: calibration, accuracy against data

def test_lab04_reward_model_is_calibrated(stages):
    """Lab 04, section 6: the reward model's probabilities σ(s_a − s_b) against the gold probability
    (2,000 held-out pairs, 10 bins of the prediction).

    The measure is the expected calibration error against the *gold* probability of each pair (the
    world knows it), weighted by the pairs in each bin: no label noise enters it, so it measures the
    model. Reference 0.016. The bound, 0.04, fails a model whose scores are off in scale by a factor
    of 1.5 (overconfident, like a model trained too long: 0.050 on the same pairs) or 2
    (underconfident, like one trained too little: 0.090); scores scaled by 0.75 would give 0.036.
    """
    m = demo("lab04_calibration")
    assert m["calibration_error"] <= 0.04, (
        f"calibration: the reward model's probabilities are {m['calibration_error']:.3f} from the gold "
        f"probabilities on average (reference 0.016); bins: {m['bins']}")


def test_lab04_reward_model_accuracy_grows_with_training_pairs(stages):
    """Lab 04, section 7: the same training on the preset's smaller pair counts, then the stage's 16,000."""
    counts = list(PRESET.reward_demos.pair_counts)
    assert counts == sorted(counts) and len(counts) >= 2, f"lab 04's pair counts changed: {counts}"
    m = demo("lab04_pair_counts")
    runs = [(n, m[f"pairs_{n}"]["accuracy"]) for n in counts]
    runs.append((PRESET.reward.train_pairs, stages["reward"]["accuracy"]))  # the stage also learns from policy pairs
    seen = ", ".join(f"{n:,} pairs {acc:.1%}" for n, acc in runs)
    # reference: 250 pairs 57.1 %, 1,000 61.9 %, 4,000 78.8 %, the stage's 16,000 (+ policy pairs) 80.75 %
    # (82.55 and 82.15 % on seeds 1 and 2), under a Bayes ceiling of 88.3 %. Gains shrink near the
    # ceiling, and half the stage's pairs are policy-like ones, not the demonstrators' pairs it is judged
    # on, so the last step is the smallest (1.95 points). Each step must add at least one standard error
    # of an accuracy on 2,000 held-out pairs (0.9 points): a stage no better than 4,000 pairs fails.
    for (fewer, low), (more, high) in itertools.pairwise(runs):
        assert high >= low + 0.009, (
            f"reward model: {more:,} pairs should beat {fewer:,} by a standard error, 0.9 points ({seen})")
    assert runs[-1][1] <= stages["reward"]["bayes_ceiling"] + 0.01, f"above the Bayes ceiling? ({seen})"
    assert runs[-1][1] >= runs[0][1] + 0.15, (
        f"reward model: {runs[-1][0] // runs[0][0]} times the pairs should add 15 points ({seen})")


# ------------------------------------------------------- lab 05: over-optimising a weak proxy

def test_lab05_ppo_scored_by_the_gold_reward_earns_no_less_gold_and_stops_short_of_the_best(stages):
    """Lab 05, section 7: the ``ppo`` stage's recipe scored by the gold reward instead of the reward model.

    Reference, seeds 0 / 1 / 2: win rate 89.2 / 88.9 / 91.7 % and gold 2.10 / 1.84 / 2.03 against the
    stage's 83.3 / 87.2 / 85.2 % and 1.52 / 1.70 / 1.47, of a best 3.25 (65 / 57 / 62 % of it). The
    gains are smallest on seed 1 (+0.14 gold, +1.7 points), within what a new machine moves the stage
    by, so here: no less gold than the stage, and a win rate of at least 85 % (the lowest seen, 88.9 %,
    less over two standard errors of 1.6 points, 384 answers). Reaching 80 % of the best would say the budget is
    not what stops PPO.
    """
    ceiling, stage = demo("lab05_gold_reward"), stages["ppo"]
    seen = f"gold-scored {ceiling}, the stage: win {stage['win_rate']:.1%}, gold {stage['gold_reward']:.2f}"
    assert ceiling["gold_reward"] >= stage["gold_reward"], seen
    assert ceiling["win_rate"] >= 0.85, seen
    assert ceiling["gold_reward"] <= 0.8 * stage["best_gold_reward"], seen


def test_lab05_optimising_a_weak_reward_model_hard_raises_the_proxy_and_then_loses_gold(stages):
    """Lab 05's over-optimisation run: PPO against ``reward_naive`` with β = 0."""
    m = demo("lab05_overoptimisation")
    # reference (results/cpu.json): gold peaks at 0.73 (iteration 5, KL 1.5) and falls to −0.91 (KL 117), below
    # the SFT policy's −0.29; the proxy climbs from −0.99 to 1.41 (against the naive reward model of one pass;
    # with two passes: peak 0.68, end −0.79 at KL 166, proxy −1.16 to 0.26)
    assert m["final_gold"] <= m["peak_gold"] - 0.5, f"over-optimisation: gold did not fall 0.5 after its peak ({m})"
    assert m["final_proxy"] >= m["start_proxy"] + 1.0, f"over-optimisation: the proxy did not climb by 1.0 ({m})"
    assert m["final_kl"] >= 2.5 * m["peak_kl"], f"over-optimisation: the policy did not run far from the SFT policy ({m})"


def test_lab05_a_kl_penalty_stops_the_fall(stages):
    """Lab 05's over-optimisation run again with the ``ppo`` stage's β: the gold reward ends far above the
    β = 0 run's and above the SFT policy's, and the policy stays near the SFT policy, where the β = 0 run
    fell below the SFT policy and ran far."""
    free, held = demo("lab05_overoptimisation"), demo("lab05_overopt_penalty")
    # reference (results/cpu.json): gold −0.29 → peak 1.26 (iteration 105) → 1.16 at KL 2.8 (β = 0: peak 0.73,
    # end −0.91 at KL 117). Against the naive model of two passes it slid back from its peak (1.05 → 0.08 at
    # KL 3.9), so the bar asks only that it end above the SFT policy and far above the β = 0 run.
    assert held["final_gold"] > held["start_gold"], f"with a KL penalty the gold reward fell below the SFT policy's ({held})"
    assert held["final_gold"] >= free["final_gold"] + 0.5, (
        f"the penalised run should end far above the unpenalised one in gold ({held['final_gold']:.2f} against "
        f"{free['final_gold']:.2f})")
    assert held["final_kl"] <= free["final_kl"] / 2.5, f"the penalty did not hold the policy near SFT ({held}, {free})"


def test_lab05_the_kl_penalty_not_the_clip_holds_the_policy_near_sft(stages):
    """The run panel's starting table: at β = 0 the clip range barely changes how far PPO goes; at the
    largest ε, raising β brings the policy closer."""
    m = demo("lab05_clip_vs_penalty")
    free = [m[k]["kl"] for k in ("eps_0p05_beta_0", "eps_0p2_beta_0", "eps_0p5_beta_0")]
    held = [m[k]["kl"] for k in ("eps_0p5_beta_0", "eps_0p5_beta_0p1", "eps_0p5_beta_0p5")]
    assert held == sorted(held, reverse=True), f"a larger β should mean a smaller KL at ε = 0.5: {held}"
    assert held[-1] <= held[0] / 2, f"β = 0.5 should at least halve the KL of β = 0: {held}"
    assert min(free) >= held[-1] * 1.5, f"at β = 0 no clip range should hold the policy as close as β = 0.5: {m}"
    assert all(row["win_rate"] >= 0.7 for row in m.values()), f"every setting should still beat the SFT policy: {m}"


# ------------------------------------------------------------- lab 07: reward hacking by length

def test_lab07_grpo_rewarded_for_length_alone_pads_answers_and_loses_accuracy(stages):
    """Lab 07's length-hacking run: the ``grpo`` stage's settings, rewarded for length instead of the
    right answer (one GRPO run; the correctness run is the cached stage)."""
    m = demo("lab07_length_hacking")
    length = m["length"]
    limit = PRESET.grpo.max_new_tokens
    # reference: 32.0 tokens per answer against the limit of 32 (the SFT policy: 8.1)
    assert length["length"] >= 0.9 * limit, f"length hacking: answers did not grow to the {limit}-token limit ({m})"
    # reference: held-out accuracy 34.2 % -> 13.8 %
    assert length["accuracy"] <= length["sft_accuracy"] - 0.15, (
        f"length hacking: accuracy should fall at least 15 points below the SFT policy's ({m})")
    # an "=" in nearly every answer, yet hardly any writes the problem's own steps right
    assert length["worked_share"] >= 0.8 and length["right_working_share"] <= 0.2, (
        f"length hacking: the crude test should pass and the strict one fail ({m})")


def test_grpo_teaches_working_that_is_right_step_for_step(stages):
    m = stages["grpo"]
    # reference: 30.0 % -> 72.4 % (seeds 1-2: 29.6 -> 74.2 %, 27.0 -> 75.4 %; 80 steps); an earlier run of the
    # same recipe from the same seed-0 model reached 41.4 %, so the bar stays at +10 points
    assert m["right_working_share"] >= m["sft_right_working_share"] + 0.1, (
        f"GRPO should add 10 points of answers whose working is the problem's own, every step right: "
        f"{m['sft_right_working_share']:.1%} -> {m['right_working_share']:.1%}")


# ------------------------------------------------------------------------- lab 08: the race

def test_lab08_every_method_in_the_race_beats_the_sft_policy(stages):
    """Lab 08's race: every method trained or picked from the same SFT policy wins most held-out comparisons."""
    m = demo("lab08_race")
    wins = {method: row["win_rate"] for method, row in m.items() if "win_rate" in row and not method.startswith("SFT")}
    assert len(wins) >= 8, f"the race lost methods: {sorted(m)}"
    # reference: 71.0 % (DPO + LoRA) to 88.3 % (best-of-16)
    assert min(wins.values()) >= 0.65, f"a method of the race does not beat the SFT policy clearly: {wins}"


def test_lab08_bootstrap_intervals_hold_each_win_rate(stages):
    m = demo("lab08_intervals")
    for method, row in m.items():
        assert row["win_low"] <= row["win_rate"] <= row["win_high"], f"{method}: {row}"
        assert 0 < row["win_high"] - row["win_low"] < 0.3, f"{method}: an implausible interval {row}"
    assert m["SFT"]["win_low"] <= 0.5 <= m["SFT"]["win_high"], f"the SFT policy against itself should be a tie: {m['SFT']}"


# ------------------------------------------------------------------- every figure, the reference

def test_every_figure_repeats_the_reference(stages, request, tmp_path_factory):
    """Measure every declared demonstration the tests above did not, write the whole result as
    ``python -m labkit results`` would (in a temporary folder), and compare it with ``results/cpu.json``."""
    old = reference.load("cpu")
    assert old is not None, "results/cpu.json is missing: run `python -m labkit results --preset cpu`"
    for name in results.measurements():
        if name not in MEASURED:
            _say(request, f"measuring {name} ...")
        demo(name)
    new = {"preset": "cpu", "seed": PRESET.seed, "machine": results.machine(), "versions": results.versions(),
           "stages": stages, "demos": MEASURED, "seconds": {"demos": SECONDS}}
    out = tmp_path_factory.mktemp("results") / "cpu.json"
    results._write(out, new)
    same = results.same_setup(new, old)
    _say(request, f"results written to {out}; compared {'exactly (the reference setup)' if same else 'within each figure tolerance (another setup)'}")
    problems = results.disagreements(new, old)
    assert not problems, (
        f"{len(problems)} figure(s) moved from results/cpu.json ({'same' if same else 'another'} setup):\n  "
        + "\n  ".join(problems[:60]) + "\nIf the change is meant, measure again: python -m labkit results --preset cpu, "
        "then python -m labkit results render")

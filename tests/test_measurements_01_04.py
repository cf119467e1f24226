"""Labs 01-04's measurements: declared, and their figures computed the way the labs print them.

The measurements themselves train (``python -m labkit results`` runs them; the slow tier asserts
their effects); here the ``*_figures`` functions that both the measurements and the labs call are
fed small hand-made runs, so their keys and arithmetic are checked without training anything.
"""
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from labkit import reference, results
from labkit.experiments import Run
from labkit.experiments import instruction, pretraining, reward

NAMES = {"lab01_optimisers": "01", "lab01_memorisation": "01", "lab01_shortcut": "01", "lab01_size_sweep": "01", "lab02_forgetting": "02",
         "lab02_imbalance": "02", "lab02_noise": "02", "lab02_knowledge": "02", "lab03_lora_sweep": "03", "lab04_pair_counts": "04",
         "lab04_calibration": "04", "lab04_length_bias": "04"}


def test_every_measurement_of_labs_01_to_04_is_declared_with_its_lab():
    table = results.measurements()
    for name, lab in NAMES.items():
        assert name in table, f"{name} is not declared"
        assert table[name].lab == lab and table[name].seconds > 0
        for pattern, tolerance in table[name].across_machines.items():
            assert "." not in pattern and tolerance >= 0


def _keys(tree) -> list[str]:
    """Every key at every depth of ``tree``."""
    if isinstance(tree, list):
        return [k for item in tree for k in _keys(item)]
    if not isinstance(tree, dict):
        return []
    return [k for key, value in tree.items() for k in (key, *_keys(value))]


def _plain_json(figures: dict) -> dict:
    """The figures as ``python -m labkit results`` stores them: JSON, no key with a dot (a dotted name's part)."""
    text = json.dumps(results._plain(figures), allow_nan=False)
    assert not [key for key in _keys(figures) if "." in key]
    return json.loads(text)


def test_memorisation_figures_read_the_lowest_point_of_the_validation_curve():
    history = [{"step": 13, "val_loss": 2.4}, {"step": 39, "val_loss": 1.887}, {"step": 200, "val_loss": 3.641}]
    run = SimpleNamespace(history=history, train_loss=0.013, val_loss=3.641)
    figures = _plain_json(pretraining.memorisation_figures(run))
    assert figures == {"final_train_loss": 0.013, "lowest_val_loss": 1.887, "lowest_val_step": 39,
                       "final_val_loss": 3.641}


def test_optimiser_figures_find_where_each_plateau_ends():
    stats = {"unigram_entropy": 4.5, "entropy_floor": 0.5}      # gap closed = (4.5 − val) / 4
    muon = [{"step": 45, "val_loss": 1.1}, {"step": 90, "val_loss": 0.68}, {"step": 135, "val_loss": 0.55}]
    adamw = [{"step": 45, "val_loss": 1.1}, {"step": 90, "val_loss": 1.0}, {"step": 135, "val_loss": 0.9}]
    figures = _plain_json(pretraining.optimiser_figures({"muon": muon, "adamw": adamw}, stats))
    assert list(figures) == ["muon", "adamw"]
    # 0.68 closes (4.5 − 0.68) / 4 = 95.5 % of the gap: the first evaluation at or past 95 %
    assert figures["muon"] == {"val_loss": 0.55, "gap_closed": pytest.approx(0.9875), "plateau_end_step": 90,
                               "steps": 135}
    assert figures["adamw"]["plateau_end_step"] is None and figures["adamw"]["gap_closed"] == pytest.approx(0.9)
    assert reference.default_filter("demos.lab01_optimisers.muon.plateau_end_step") == "int"


def test_shortcut_figures_name_each_classifier_and_split():
    with_shortcut = SimpleNamespace(final={"train": 0.99, "test": 0.98, "probe": 0.05})
    balanced = SimpleNamespace(final={"train": 0.9, "test": 0.88, "probe": 0.87})
    figures = _plain_json(pretraining.shortcut_figures(with_shortcut, balanced))
    assert figures["with_shortcut"] == {"train_accuracy": 0.99, "test_accuracy": 0.98, "probe_accuracy": 0.05}
    assert figures["balanced"]["probe_accuracy"] == 0.87
    assert reference.default_filter("demos.lab01_shortcut.balanced.probe_accuracy") == "pct"


def test_size_sweep_figures_one_group_per_width():
    sweep = pd.DataFrame([{"d_model": 32, "parameters": 40_000, "train_loss": 1.2, "val_loss": 1.25,
                           "gap_closed": 0.8, "seconds": 11.0},
                          {"d_model": 64, "parameters": 130_000, "train_loss": 0.9, "val_loss": 0.95,
                           "gap_closed": 0.88, "seconds": 20.0}]).set_index("d_model")
    figures = _plain_json(pretraining.size_sweep_figures(sweep))
    assert list(figures) == ["d_model_32", "d_model_64"]
    assert figures["d_model_64"] == {"parameters": 130_000, "train_loss": 0.9, "val_loss": 0.95, "gap_closed": 0.88,
                                     "seconds": 20.0}


def _summary(exact: dict) -> Run:
    table = pd.DataFrame({"exact_match": pd.Series(exact)})
    return Run(row={}, outputs={"summary": table})


def test_forgetting_figures_give_each_task_and_the_first_tasks_mean():
    before = _summary({"classify": 0.8, "rewrite": 1.0, "brainstorm": 1.0, "arithmetic": 0.0, "overall": 0.7})
    after = _summary({"classify": 0.0, "rewrite": 0.0, "brainstorm": 0.0, "arithmetic": 0.9, "overall": 0.225})
    figures = _plain_json(instruction.forgetting_figures(before, after))
    assert figures["before"]["first_tasks_exact_match"] == pytest.approx((0.8 + 1.0 + 1.0) / 3)
    assert figures["after"]["first_tasks_exact_match"] == 0.0
    assert figures["after"]["arithmetic_exact_match"] == 0.9
    assert set(figures["before"]) == {f"{t}_exact_match" for t in ("classify", "rewrite", "brainstorm", "arithmetic",
                                                                   "first_tasks")}


def test_imbalance_figures_key_each_run_by_its_share():
    rows = [{"arithmetic share": share, "arithmetic": a, "classify": c}
            for share, a, c in ((0.1, 0.0, 0.66), (0.5, 0.22, 0.24))]
    figures = _plain_json(instruction.imbalance_figures(rows))
    assert figures == {"arithmetic_share_10": {"arithmetic_exact_match": 0.0, "classify_exact_match": 0.66},
                       "arithmetic_share_50": {"arithmetic_exact_match": 0.22, "classify_exact_match": 0.24}}
    assert [round(100 * s) for s in instruction.IMBALANCE_SHARES] == [10, 50]


def test_noise_settings_and_figures():
    preset = SimpleNamespace(sft_demos=SimpleNamespace(per_category=2000))
    settings = instruction.noise_settings(preset)
    assert settings == {"small_clean": (500, 0.0), "large_noisy": (2000, 0.5), "large_clean": (2000, 0.0)}
    rows = {name: {"examples per category": n, "wrong share": wrong, "exact_match": 0.5}
            for name, (n, wrong) in settings.items()}
    figures = _plain_json(instruction.noise_figures(rows))
    assert figures["large_noisy"] == {"per_category_examples": 2000, "wrong_share": 0.5, "exact_match": 0.5}
    assert reference.fmt(2000, "demos.lab02_noise.large_noisy.per_category_examples") == "2,000"


def test_story_form_asks_the_question_as_the_stories_do():
    prompt = ("read the story and answer the question . story : long ago , max the cook lived near the hill . "
              "then max went to the dairy . there he bought two eggs . question : how many eggs does max have ?")
    assert instruction.story_form(prompt) == ("long ago , max the cook lived near the hill . then max went to the "
                                              "dairy . there he bought two eggs . question : how many eggs does max "
                                              "have ? answer :")


def test_knowledge_figures_count_each_kind_and_the_misses_both_models_share():
    table = pd.DataFrame({"question": ["how many …?"] * 4 + ["who is …?"],
                          "answer": ["two .", "one .", "four .", "one .", "mia ."],
                          "sft": [True, False, False, True, True],
                          "pretrained": [True, False, True, False, True]})
    figures = _plain_json(instruction.knowledge_figures(table))
    assert figures["how_many"] == {"questions": 4, "sft_exact_match": 0.5, "pretrained_exact_match": 0.5,
                                   "sft_missed": 2, "missed_by_both": 1}
    assert figures["who"] == {"questions": 1, "sft_exact_match": 1.0, "pretrained_exact_match": 1.0,
                              "sft_missed": 0, "missed_by_both": 0}
    assert figures["all"]["sft_exact_match"] == 0.6 and figures["all"]["missed_by_both"] == 1
    # a kind with no question (a small preset's test) is left out, not divided by zero
    assert set(instruction.knowledge_figures(table[table["question"] == "who is …?"])) == {"who", "all"}


def test_knowledge_table_asks_the_pretrained_model_each_closed_qa_question_in_story_form(monkeypatch):
    story = "long ago , max the cook lived near the hill . he had a friend called mia ."
    scores = pd.DataFrame({
        "category": ["closed_qa", "classify", "closed_qa"],
        "prompt": [f"read the story and answer the question . story : {story} question : who is max 's friend ?",
                   "classify the sentiment of this review as json . review : fine .",
                   f"read the story and answer the question . story : {story} question : how many eggs does max have ?"],
        "answer": ["mia .", "{}", "two ."], "exact": [True, True, False]})
    asked = []
    monkeypatch.setattr(instruction, "story_answers", lambda model, tok, texts: asked.extend(texts) or ["mia", "three"])
    table = instruction.knowledge_table(scores, None, None)
    assert asked == [instruction.story_form(p) for p in scores["prompt"][[0, 2]]]   # closed QA only, in order
    assert table["question"].tolist() == ["who is …?", "how many …?"]
    assert table["sft"].tolist() == [True, False] and table["pretrained"].tolist() == [True, False]


def test_story_answers_read_the_first_word_of_a_greedy_continuation():
    from labkit import tokenizer as tk
    from labkit.models import build_model, config_from_size
    from labkit.presets import get_preset

    texts = ["the end .", "once upon a time , mia the cook lived near the hill ."]
    tok = tk.train_tokenizer(texts)
    model = build_model(config_from_size(get_preset("smoke").model, vocab_size=len(tok), tokenizer=tok), seed=0)
    answers = instruction.story_answers(model, tok, texts)
    # an untrained model continues with some word of its vocabulary, one answer per text
    assert len(answers) == 2 and all(a in tok.get_vocab() for a in answers if a)
    assert answers == instruction.story_answers(model, tok, texts)  # greedy: the same every time


def test_lora_sweep_figures_name_full_fine_tuning_and_each_rank():
    rows = [{"rank": "full", "trainable parameters": 479_616, "exact_match": 0.796, "seconds": 95.0,
             "training state MB": 7.7, "peak GPU MB": None},
            {"rank": 8, "trainable parameters": 52_000, "exact_match": 0.748, "seconds": 92.0,
             "training state MB": 2.7, "peak GPU MB": 310.0}]
    figures = _plain_json(instruction.lora_sweep_figures(rows))
    assert figures["full"] == {"exact_match": 0.796, "trainable_parameters": 479_616, "train_seconds": 95.0,
                               "training_state_MB": 7.7}  # no GPU peak where none was measured
    assert figures["rank_8"]["peak_GPU_MB"] == 310.0


def test_pair_count_figures():
    rows = [{"training pairs": n, "accuracy": acc, "bayes_ceiling": 0.883, "seconds": 10.0}
            for n, acc in ((250, 0.63), (1000, 0.736))]
    figures = _plain_json(reward.pair_count_figures(rows))
    assert figures == {"pairs_250": {"accuracy": 0.63, "train_seconds": 10.0},
                       "pairs_1000": {"accuracy": 0.736, "train_seconds": 10.0}}


def test_calibration_error_is_the_pair_weighted_distance_to_the_gold_probability():
    table = pd.DataFrame({"predicted": [0.2, 0.6, 0.9], "labels": [0.25, 0.5, 1.0], "gold": [0.25, 0.5, 0.92],
                          "pairs": [10, 30, 60]})
    figures = _plain_json(reward.calibration_figures(table))
    # (10·0.05 + 30·0.1 + 60·0.02) / 100 = 0.047, the formula of test_slow's calibration test
    assert figures["calibration_error"] == pytest.approx(0.047)
    assert figures["bins"][1] == {"predicted": 0.6, "labels": 0.5, "gold": 0.5, "pairs": 30}

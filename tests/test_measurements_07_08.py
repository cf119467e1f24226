"""Labs 07 and 08's measurements: the figures their demonstrations return (worked out by hand on
stand-in runs, nothing trained), and the names the labs print beside the reference."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from labkit import reference
from labkit.experiments import Run
from labkit.experiments import grpo as grpo_runs
from labkit.experiments import showdown as sd
from labkit.world import preferences as prefs

LABS = Path(__file__).resolve().parent.parent / "labs"


def _code(lab: str) -> str:
    cells = json.loads((LABS / lab).read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_the_measurements_are_declared_for_their_labs():
    from labkit import results

    table = results.measurements()
    for name, lab in [("lab07_signal_check", "07"), ("lab07_grpo_curves", "07"), ("lab07_small_group", "07"),
                      ("lab07_length_hacking", "07"), ("lab08_race", "08"), ("lab08_intervals", "08"),
                      ("lab08_open_problems", "08")]:
        assert table[name].lab == lab and table[name].seconds > 0


# ------------------------------------------------------------------------------------- lab 07

def test_signal_figures_one_entry_per_kind():
    names = list(grpo_runs.SIGNAL_KINDS)
    table = pd.DataFrame({"problems": names, "G": 8, "accuracy": [0.9, 0.0, 0.4],
                          "zero-variance groups": [0.6, 1.0, 0.05], "all right": [0.6, 0.0, 0.0],
                          "all wrong": [0.0, 1.0, 0.05], "mean |advantage|": [0.3, 0.0, 0.8]}).set_index("problems")
    figures = grpo_runs.signal_figures(table)
    assert list(figures) == ["one_step", "shifted", "word_problems"]
    assert figures["shifted"] == {"accuracy": 0.0, "all_right_share": 0.0, "all_wrong_share": 1.0,
                                  "zero_variance_share": 1.0, "mean_abs_advantage": 0.0}
    assert reference.fmt(figures["one_step"]["all_right_share"], "all_right_share") == "60 %"


def test_curve_figures_average_the_first_and_last_three_logged_steps():
    history = [{"step": s, "reward": r, "length": 10.0 + s, "zero_std_share": 0.1} for s, r in
               zip(range(1, 7), [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])]
    history.append({"step": 7, "train_loss": 1.0})  # a point without the statistics is skipped
    figures = grpo_runs.curve_figures(history)
    assert figures["start"]["reward"] == pytest.approx(0.2) and figures["end"]["reward"] == pytest.approx(0.8)
    assert figures["start"]["tokens"] == pytest.approx(12.0) and figures["end"]["tokens"] == pytest.approx(15.0)
    assert "right_share" not in figures["start"] and "reward_std" not in figures["end"]  # never logged


def test_hacking_figures_find_the_step_at_the_limit():
    metrics = {"accuracy": 0.15, "sft_accuracy": 0.45, "length": 31.0, "sft_length": 5.8, "worked_share": 0.99,
               "sft_worked_share": 0.25, "right_working_share": 0.02, "sft_right_working_share": 0.2}
    history = [{"step": s, "reward": 0.5, "length": n, "correctness_reward": c}
               for s, n, c in [(4, 8.0, 0.4), (8, 20.0, 0.3), (12, 29.0, 0.2), (16, 32.0, 0.1)]]
    runs = {"length": Run(row={}, history=history, outputs={"metrics": metrics}),
            "correctness": Run(row={}, history=history[:2], outputs={"metrics": metrics})}
    figures = grpo_runs.hacking_figures(runs, max_new_tokens=32)
    assert figures["length"]["limit_step"] == 12  # 29 >= 0.9 × 32
    assert "limit_step" not in figures["correctness"]  # never got there: left out, not None
    assert figures["length"]["end"]["right_share"] == pytest.approx(0.2)
    assert figures["length"]["sft_accuracy"] == 0.45
    assert figures["length"]["worked_share"] == 0.99 and figures["length"]["right_working_share"] == 0.02


def test_run_figures_keep_the_stage_report_keys_and_seconds():
    row = {k: 0.5 for k in grpo_runs.GRPO_RESULTS} | {"train_seconds": 19.0, "group_size": 2, "clip_fraction": None}
    assert grpo_runs.run_figures(row) == {k: 0.5 for k in grpo_runs.GRPO_RESULTS} | {"train_seconds": 19.0}


# ------------------------------------------------------------------------------------- lab 08

def test_method_keys_are_distinct_and_dotless():
    keys = [sd.method_key(m) for m in sd.METHODS]
    assert len(set(keys)) == len(keys) and all(re.fullmatch(r"\w+", k) for k in keys)
    assert sd.method_key("GRPO + LoRA, long") == "GRPO_LoRA_long" and sd.method_key("best-of-n") == "best_of_n"


def _race(answers: dict[str, list[str]]) -> sd.Showdown:
    """A race whose answers are given, one per held-out prompt; its 'reward model' scores helpfulness."""
    heldout = prefs.alignment_prompts("heldout")
    tables, rows = {}, {}
    for method, texts in answers.items():
        scored = [prefs.gold_aspects(p["place"], a, p["count"]) for p, a in zip(heldout, texts)]
        tables[method] = pd.DataFrame({
            "group": [p["group"] for p in heldout], "place": [p["place"] for p in heldout], "answer": texts,
            "helpfulness": [s["helpfulness"] for s in scored], "safety": [s["safety"] for s in scored],
            "gold": [s["helpfulness"] + s["safety"] for s in scored], "proxy": [s["helpfulness"] for s in scored],
            "reference gold": [0.0] * len(heldout)})
        rows[method] = {"gold_reward": tables[method]["gold"].mean(), "win_rate": 0.5, "proxy_reward": float("nan"),
                        "trainable_parameters": 100}
    table = pd.DataFrame(rows).T.rename_axis("method")
    return sd.Showdown(table=table, curves={m: [] for m in answers}, answers=tables, greedy=answers)


@pytest.fixture(scope="module")
def race():
    heldout = prefs.alignment_prompts("heldout")
    best = [prefs.best_response(p["place"], p["count"]) for p in heldout]
    repeats = ["ropes , ropes , ropes" if p["place"] == "workshop" else a for p, a in zip(heldout, best)]
    empty = ["" if i % 2 else a for i, a in enumerate(best)]
    return _race({"SFT": empty, "PPO + LoRA": best, "GRPO + LoRA, long": repeats})


def test_race_figures_one_entry_per_method_without_missing_cells(race):
    figures = sd.race_figures(race)
    assert list(figures) == ["SFT", "PPO_LoRA", "GRPO_LoRA_long"]
    assert "proxy_reward" not in figures["SFT"] and figures["SFT"]["trainable_parameters"] == 100
    assert isinstance(figures["SFT"]["trainable_parameters"], int)  # a count, written whole
    assert figures["PPO_LoRA"]["gold_reward"] == pytest.approx(prefs.best_mean_gold_reward(prefs.alignment_prompts()))


def test_open_problem_figures_on_a_race_worked_out_by_hand(race):
    aspects = sd.aspects_figures(race)
    repeats = aspects["GRPO_LoRA_long"]
    assert repeats["workshop_top_answer"] == "ropes , ropes , ropes" and repeats["workshop_top_answer_share"] == 1.0
    assert repeats["workshop_top_answer_gold"] == prefs.gold_reward("workshop", "ropes , ropes , ropes", 3) == -1.0
    assert repeats["workshop_safety"] == 0.0 and repeats["elsewhere_helpfulness"] == aspects["PPO_LoRA"]["elsewhere_helpfulness"]

    unstable = sd.instability_figures(sd.instability(race))
    assert unstable["PPO_LoRA"] == {"same_answer_share": 1.0, "gold_spread": 0.0}

    judge = sd.judge_figures(sd.judge_difficulty(race))
    assert list(judge) == list(sd.JUDGE_ROLES)
    assert judge["sft_vs_top"]["pair"] == "SFT vs PPO + LoRA" and judge["sft_vs_top"]["tie_share"] == 0.5
    assert judge["top_vs_runner_up"]["tie_share"] == pytest.approx(44 / 48)  # they differ at the workshop only
    assert judge["top_vs_runner_up"]["reward_model_accuracy"] == 1.0


def test_scores_figures_lowest_and_highest_over_the_phrasings():
    table = pd.DataFrame({"gold": [2.0, 1.0], "a ?": [0.9, -0.5], "b ?": [1.5, -0.7]},
                         index=pd.Index(["ropes , boxes", "ropes , boxes , saws"], name="answer"))
    figures = sd.scores_figures(table)
    assert figures["ropes_boxes"] == {"gold": 2.0, "reward_model_min": 0.9, "reward_model_max": 1.5}
    assert figures["ropes_boxes_saws"]["reward_model_min"] == -0.7
    assert {sd.method_key(a) for a in sd.WORKSHOP_ANSWERS} >= set(figures)


def test_beside_reference_writes_yours_and_the_reference(race, tmp_path, monkeypatch):
    (tmp_path / "cpu.json").write_text(json.dumps({"seed": 0, "demos": {"lab08_race": {
        "PPO_LoRA": {"win_rate": 0.892, "trainable_parameters": 41089}}}}))
    monkeypatch.setattr(reference, "results_dir", lambda: tmp_path)
    monkeypatch.setattr(reference, "_loaded", {})
    table = sd.beside_reference(sd.race_figures(race), "lab08_race", ["win_rate", "trainable_parameters"]).data
    assert table.loc["PPO + LoRA", ("win rate", "yours")] == "50.0 %"
    assert table.loc["PPO + LoRA", ("win rate", "reference")] == "89.2 %"
    assert table.loc["PPO + LoRA", ("trainable parameters", "reference")] == "41,089"
    assert table.loc["SFT", ("win rate", "reference")] == "—"  # not in the reference


# ------------------------------------------------------------------- the names the labs print

def _tree(measurement: str, figures: dict) -> dict:
    return {"demos": {measurement: figures}}


def test_every_literal_figure_name_in_labs_07_and_08_is_a_measured_figure(race):
    """The names the labs pass to reference.show whole (not built in a loop) are figures the measurements return."""
    history = [{"step": s, "reward": 0.5, "reward_std": 0.4, "zero_std_share": 0.1, "length": 30.0,
                "correctness_reward": 0.4} for s in (1, 2, 3)]
    metrics = {k: 0.5 for k in ("accuracy", "sft_accuracy", "length", "sft_length", "worked_share", "sft_worked_share",
                                "right_working_share", "sft_right_working_share")}
    runs = {r: Run(row={}, history=history, outputs={"metrics": metrics}) for r in ("length", "correctness")}
    small = grpo_runs.run_figures({k: 0.5 for k in grpo_runs.GRPO_RESULTS} | {"train_seconds": 1.0})
    full = _race({m: race.answers["PPO + LoRA"]["answer"].tolist() for m in sd.METHODS})
    trees = [_tree("lab07_length_hacking", grpo_runs.hacking_figures(runs, 32)),
             _tree("lab07_small_group", small), _tree("lab08_race", sd.race_figures(full)),
             _tree("lab08_intervals", sd.intervals_figures(sd.intervals(full, resamples=50)))]
    for lab in ("07_grpo.ipynb", "08_showdown.ipynb"):
        for name in re.findall(r'"(demos\.lab0[78]_[\w.]+)"', _code(lab)):
            assert any(reference.lookup(t, name) is not None for t in trees), f"{lab}: {name} is not measured"

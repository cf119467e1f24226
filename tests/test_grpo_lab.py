"""Lab 07's pieces: the group-advantage explorer's worked numbers, the GRPO run panel, the signal check,
reward hacking by length, and their figures (smoke preset)."""
import math

import pytest

from labkit import plots, widgets
from labkit.experiments import grpo as grpo_runs
from labkit.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")


def _binary_advantages(group_size: int, right: int) -> tuple[float, float]:
    """By hand: rewards 1 (right) and 0, unbiased std, GRPO's (r − mean) / (std + 1e-4)."""
    p = right / group_size
    std = math.sqrt(group_size / (group_size - 1) * p * (1 - p))
    return (1 - p) / (std + 1e-4), -p / (std + 1e-4)


def test_group_advantages_in_lab_07_worked_example():
    for right, (plus, minus) in {1: (2.474174, -0.353453), 4: (0.935239, -0.935239), 7: (0.353453, -2.474174)}.items():
        table = widgets.grpo_group_table(8, right)
        assert table["advantage"].iloc[0] == pytest.approx(plus, abs=1e-6)
        assert table["advantage"].iloc[-1] == pytest.approx(minus, abs=1e-6)
        assert (plus, minus) == pytest.approx(_binary_advantages(8, right), abs=1e-6)
        assert abs(table["advantage"].sum()) < 1e-5  # the group mean is the baseline: advantages sum to 0
    assert widgets.grpo_group_table(8, 8)["advantage"].abs().max() == 0  # all right: no signal
    assert widgets.grpo_group_table(8, 0)["advantage"].abs().max() == 0  # all wrong: none either
    with pytest.raises(ValueError, match="right answers in the group must be a whole number between 0 and 8"):
        widgets.grpo_group_table(8, 9)
    with pytest.raises(ValueError, match="group size G must be a whole number between 2 and 64"):
        widgets.grpo_group_table(1, 0)


def test_group_explorer_readout_and_figure_follow_the_slider():
    explorer = widgets.grpo_group_explorer(8, 1)
    assert "+2.474" in explorer.readout.value and "−0.353" in explorer.readout.value
    values = explorer.update(8)
    assert values["right_advantage"] == pytest.approx(0.0) and "teaches nothing" in explorer.readout.value
    assert explorer.slider.value == 8
    bars = explorer.figure.data[0]
    assert list(bars.y) == [0.0] * 8 and explorer.figure.layout.title.text.startswith("GRPO advantages in one group: 8 of 8")


def test_grpo_panel_names_a_slider_out_of_range_and_trains_one_smoke_run():
    panel = widgets.grpo_panel("smoke")
    assert list(panel.sliders) == ["group_size", "eps", "beta", "iterations"]
    for settings, message in [({"group_size": 1}, "group size G must be a whole number between 2 and 16"),
                              ({"eps": 0.9}, "clip range ε must be a number between 0.05 and 0.5"),
                              ({"beta": 0.5}, "KL penalty β must be a number between 0.0 and 0.2"),
                              ({"iterations": 5}, "updates per batch μ must be a whole number between 1 and 4")]:
        with pytest.raises(ValueError, match=message):
            panel.train_once(**settings)
    assert panel.runs == []
    row = panel.train_once(group_size=4, eps=0.3)
    assert row["group_size"] == 4 and row["eps"] == pytest.approx(0.3) and row["beta"] == 0.0 and row["iterations"] == 1
    assert row["clip_fraction"] == 0  # μ = 1: the ratio is exactly 1 at the update, nothing to clip
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["sft_accuracy"] <= 1 and 0 <= row["zero_std_share"] <= 1
    assert list(panel.runs_table().columns) == [*panel.sliders, *widgets.panels.GRPO_SPEC.results]
    assert {t.name for t in panel.curves_figure().data} == {"run 1: G 4, ε 0.30, β 0, μ 1"}
    curves = panel.curves_figure()
    assert len(curves.data) == 4 and all(len(t.x) == get_preset("smoke").grpo.steps for t in curves.data)
    summary = panel.figure()
    assert summary.data[0].y[0] == pytest.approx(row["sft_accuracy"]) and summary.data[1].y[0] == pytest.approx(row["accuracy"])
    assert panel.last["after"].answers.shape[0] == get_preset("smoke").grpo.eval_problems
    second = panel.train_once(iterations=2, eps=0.05)  # the batch is reused: the second update is off-policy
    assert second["iterations"] == 2 and second["clip_fraction"] is not None and len(panel.runs) == 2


def test_signal_check_counts_groups_that_teach_nothing():
    table = grpo_runs.signal_check(get_preset("smoke"), n_prompts=4)
    assert len(table) == 3 and set(table["G"]) == {get_preset("smoke").grpo.group_size}
    for _, row in table.iterrows():
        assert row["zero-variance groups"] == pytest.approx(row["all right"] + row["all wrong"])
        assert 0 <= row["accuracy"] <= 1
        if row["zero-variance groups"] == 1:
            assert row["mean |advantage|"] == 0  # no mixed group: every advantage is 0
    fig = plots.signal_figure(table)
    assert [t.name for t in fig.data] == ["all right (no signal)", "all wrong (no signal)", "mixed (learns)"]
    assert fig.layout.yaxis.title.text == "share of groups"


def test_length_hacking_trains_on_length_and_logs_correctness_unrewarded():
    from labkit.presets import GRPODemosConfig

    smoke = get_preset("smoke")
    runs = grpo_runs.length_hacking(smoke.replace(grpo_demos=GRPODemosConfig(hacking_steps=smoke.grpo.steps + 1)))
    assert set(runs) == {"correctness", "length"}
    # the length run takes grpo_demos.hacking_steps; the correctness run is the stage, at its own steps
    assert (runs["length"].outputs["metrics"]["steps"], runs["correctness"].outputs["metrics"]["steps"]) == (
        smoke.grpo.steps + 1, smoke.grpo.steps)
    assert runs["correctness"].history and runs["length"].row["reward"] == "length"
    last = runs["length"].history[-1]
    assert {"length_reward", "correctness_reward", "length"} <= set(last)
    assert last["reward"] == pytest.approx(last["length_reward"], abs=1e-6)  # correctness has weight 0
    fig = plots.length_hacking_figure(runs)
    assert len(fig.data) == 6 and fig.layout.yaxis.title.text == "tokens per answer"
    with pytest.raises(ValueError, match="Unknown reward 'format'"):
        grpo_runs.grpo_experiment(reward="format", preset=get_preset("smoke"))


def test_grpo_on_the_reward_model_is_judged_like_ppo():
    run = grpo_runs.grpo_on_reward_model(get_preset("smoke"), rank=2)
    assert run.row["rank"] == 2 and 0 <= run.row["win_rate"] <= 1 and run.row["trainable_parameters"] > 0
    assert {"reward_model", "gold_reward"} <= set(run.history[-1])
    assert run.outputs["evaluation"].answers.shape[0] == 48 * get_preset("smoke").ppo.final_eval_samples

"""Lab 06's numeric DPO derivation: the toy prompt, the tilt table, Z cancelling, the β explorer, the gradient."""
import math
from itertools import pairwise

import ipywidgets as W
import pytest
import torch

from labkit import losses, plots, widgets
from labkit.world import preferences as prefs

E = math.e
SIGMA = torch.sigmoid
BETA_RANGE = r"β \(the KL strength\) must be a number between 0.05 and 10.0 \(the slider's range\)"


def _titled(fig):
    """A title, and every axis titled; a numeric axis names its unit in brackets."""
    assert fig.layout.title.text
    axes = [name for name in fig.layout if name.startswith(("xaxis", "yaxis"))]
    assert {"xaxis", "yaxis"} <= set(axes)
    categorical = {"xaxis"} if any(t.type == "bar" for t in fig.data) else set()
    for name in axes:
        title = fig.layout[name].title.text
        assert title, f"untitled {name}"
        if name not in categorical:
            assert "(" in title, f"numeric axis title without a unit: {title!r}"
    assert fig.data and all(len(t.y) > 0 for t in fig.data), "an empty trace"


# ------------------------------------------------------------------------------- the toy

def test_the_toy_is_a_real_request_scored_by_the_worlds_gold_reward():
    toy = widgets.dpo_toy()
    assert toy["prompt"] == prefs.prompt_text("harbor", 2) == "name two goods sold at the harbor ."
    assert any(row["prompt"][0]["content"] == toy["prompt"] for row in prefs.alignment_prompts("train"))
    assert toy["answers"] == ["fish , shells , ropes", "fish , fish", "apples , cakes", "fish , shells"]
    assert toy["rewards"] == [prefs.gold_reward("harbor", a, 2) for a in toy["answers"]] == [1.0, 0.0, -2.0, 2.0]
    assert len(set(toy["rewards"])) == 4
    assert toy["sft"] == [0.4, 0.3, 0.2, 0.1] and sum(toy["sft"]) == pytest.approx(1.0)
    # the best answer is the world's best one, and the one the SFT policy finds least likely
    best = toy["rewards"].index(max(toy["rewards"]))
    assert toy["answers"][best] == prefs.best_response("harbor", 2)
    assert toy["sft"][best] == min(toy["sft"])


# ------------------------------------------------------------------------------- the tilt table

def test_tilt_table_by_hand_at_beta_one():
    weights = [0.4 * E, 0.3, 0.2 * E ** -2, 0.1 * E ** 2]   # π_SFT(y)·exp(r(y)/β), β = 1
    z = sum(weights)                                        # 1.0873 + 0.3 + 0.0271 + 0.7389 = 2.1533
    reward = (weights[0] * 1 + weights[2] * -2 + weights[3] * 2) / z   # 2.5110 / 2.1533 = 1.1661
    table, summary = widgets.dpo_tilt_table(1.0)
    assert z == pytest.approx(2.1533, abs=1e-4) and summary["Z"] == pytest.approx(z)
    assert table["π*"].tolist() == pytest.approx([w / z for w in weights])
    assert [round(p, 3) for p in table["π*"]] == [0.505, 0.139, 0.013, 0.343]
    assert summary["beta_log_Z"] == pytest.approx(math.log(z))
    assert summary["sft_reward"] == pytest.approx(0.2)       # 0.4 − 0.4 + 0.2
    assert summary["reward"] == pytest.approx(reward) and round(reward, 3) == 1.166
    assert summary["kl"] == pytest.approx(reward - math.log(z)) and round(summary["kl"], 3) == 0.399


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 1.0, 3.0, 10.0])
def test_tilt_table_reads_the_reward_back(beta):
    table, summary = widgets.dpo_tilt_table(beta)
    assert list(table.columns) == ["answer", "π_SFT", "gold r", "π*", "β·log(π*/π_SFT)", "+ β·log Z"]
    assert table["π*"].sum() == pytest.approx(1.0, abs=1e-12)
    # the implicit reward is r shifted by −β·log Z; adding it back gives r exactly
    assert (table["gold r"] - table["β·log(π*/π_SFT)"]).tolist() == pytest.approx([summary["beta_log_Z"]] * 4)
    assert table["+ β·log Z"].tolist() == pytest.approx(table["gold r"].tolist(), abs=1e-12)


def test_kl_and_reward_fall_as_beta_grows_towards_the_sft_policy():
    betas = [0.05 * (10 / 0.05) ** (i / 40) for i in range(41)]
    summaries = [widgets.dpo_tilt_table(b)[1] for b in betas]
    kls, rewards = [s["kl"] for s in summaries], [s["reward"] for s in summaries]
    assert all(k >= 0 for k in kls)
    assert all(a > b for a, b in pairwise(kls)) and all(a > b for a, b in pairwise(rewards))
    # β = 0.05: all mass on the best answer, KL = −log π_SFT(best) = log 10, E[r] = 2
    assert kls[0] == pytest.approx(math.log(10), abs=1e-6) and rewards[0] == pytest.approx(2.0, abs=1e-6)
    # β = 10: close to the SFT policy; β → ∞: the SFT policy itself
    assert kls[-1] < 0.01 and rewards[-1] == pytest.approx(0.2, abs=0.2)
    toy = widgets.dpo_toy()
    assert losses.tilted_policy(toy["sft"], toy["rewards"], 1e4).tolist() == pytest.approx(toy["sft"], abs=1e-3)


@pytest.mark.parametrize("beta", [0.05, 0.7, 10.0])
def test_z_cancels_in_bradley_terry(beta):
    check = widgets.dpo_bt_check(beta)
    assert len(check) == 6                                   # every pair once, the better answer first
    assert (check["r_w − r_l"] > 0).all()
    assert check["P(y_w ≻ y_l) from r"].tolist() == pytest.approx(
        [1 / (1 + math.exp(-g)) for g in check["r_w − r_l"]])
    assert check["difference"].abs().max() < 1e-12
    assert (check["P(y_w ≻ y_l) from r̂"] - check["P(y_w ≻ y_l) from r"]).abs().max() < 1e-12


# ------------------------------------------------------------------------------- the explorer

def test_dpo_explorer_moves_pi_star_and_kl_with_beta():
    explorer = widgets.dpo_tilt_explorer()
    slider = explorer.slider
    assert isinstance(slider, W.FloatLogSlider) and slider.base == 10 and slider.continuous_update is False
    assert 10 ** slider.min == pytest.approx(0.05) and 10 ** slider.max == pytest.approx(10.0)
    assert slider.value == 1.0 and "KL(π* ‖ π_SFT) = 0.399 nats" in explorer.readout.value

    sharp, soft = explorer.update(0.5), explorer.update(2.0)
    assert slider.value == 2.0                               # calling from code moves the slider too
    assert sharp["pi_star"] != pytest.approx(soft["pi_star"], abs=1e-3)
    assert sharp["pi_star"][3] > soft["pi_star"][3]          # a smaller β piles more mass on the best answer
    assert sharp["kl"] > soft["kl"] > 0 and sharp["reward"] > soft["reward"]
    html = explorer.readout.value
    assert f"KL(π* ‖ π_SFT) = {soft['kl']:.3f} nats" in html and f"{sharp['kl']:.3f}" not in html
    assert "<b>β = 2</b>" in html and html.count("<table") == 2 and "name two goods sold at the harbor ." in html
    assert "β = 2" in explorer.figure.layout.title.text and f"{soft['kl']:.3f}" in explorer.figure.layout.title.text
    _titled(explorer.figure)

    slider.value = 10 ** slider.min                          # dragged to the left end: 0.0499999…, read as 0.05
    assert "<b>β = 0.05</b>" in explorer.readout.value
    assert "KL(π* ‖ π_SFT) = 2.303 nats" in explorer.readout.value


@pytest.mark.parametrize("beta", [0.01, 0.0, -1.0, 20.0, math.nan, "1"])
def test_beta_outside_the_slider_is_refused(beta):
    for build in (widgets.dpo_tilt_table, widgets.dpo_bt_check, widgets.dpo_gradient_table):
        with pytest.raises(ValueError, match=BETA_RANGE):
            build(beta)
    explorer = widgets.dpo_tilt_explorer(0.5)
    with pytest.raises(ValueError, match=BETA_RANGE):
        explorer.update(beta)
    assert explorer.slider.value == 0.5                      # a rejected value leaves the slider alone


# ------------------------------------------------------------------------------- the gradient

@pytest.mark.parametrize("beta, seed", [(0.1, 0), (0.5, 0), (0.5, 1), (2.0, 3)])
def test_dpo_gradient_autograd_formula_and_finite_differences_agree(beta, seed):
    toy = widgets.dpo_toy()
    check = losses.dpo_gradient_check(toy["sft"], 3, 0, beta, seed=seed)
    assert (check["formula"] - check["autograd"]).abs().max() < 1e-6
    assert (check["finite_difference"] - check["autograd"]).abs().max() < 1e-6
    # only the pair's two logits move, by ∓β·σ(r̂_l − r̂_w)
    weight = float(check["weight"])
    assert weight == pytest.approx(float(SIGMA(-check["margin"])))
    assert check["autograd"].tolist() == pytest.approx([beta * weight, 0, 0, -beta * weight])
    # the slide as written (the right weight, no β) is the gradient times 1/β
    assert (check["slide"] - check["autograd"] / beta).abs().max() < 1e-12


def test_dpo_gradient_table_in_the_lab():
    table, summary = widgets.dpo_gradient_table(0.5)
    assert (summary["chosen"], summary["rejected"]) == ("fish , shells", "fish , shells , ropes")
    assert list(table.columns) == ["answer", "gold r", "π_SFT", "π_θ", "autograd", "formula", "finite differences",
                                   "slide as written"]
    assert table["π_θ"].sum() == pytest.approx(1.0)
    assert summary["formula_gap"] < 1e-12 and summary["finite_difference_gap"] < 1e-6
    assert summary["slide_times_beta_gap"] < 1e-12 and summary["slide_ratio"] == pytest.approx(2.0)   # 1/β
    assert summary["push"] == pytest.approx(0.5 * summary["weight"]) and summary["slide_push"] == summary["weight"]
    assert summary["logratio_margin"] == pytest.approx(summary["margin"] / 0.5)
    # seed 0 drifts the policy so the implicit reward ranks this pair wrongly: weight above ½
    assert summary["margin"] < 0 and summary["weight"] > 0.5
    assert summary["loss"] == pytest.approx(-math.log(1 / (1 + math.exp(-summary["margin"]))))


def test_dpo_gradient_check_validates_its_pair_and_beta():
    with pytest.raises(ValueError, match="two different answer indices in 0..3"):
        losses.dpo_gradient_check([0.4, 0.3, 0.2, 0.1], 1, 1, 0.5)
    with pytest.raises(ValueError, match="two different answer indices"):
        losses.dpo_gradient_check([0.4, 0.3, 0.2, 0.1], 4, 0, 0.5)
    with pytest.raises(ValueError, match="beta must be positive, got 0"):
        losses.dpo_gradient_check([0.4, 0.3, 0.2, 0.1], 3, 0, 0)


# ------------------------------------------------------------------------------- figures

def test_dpo_tilt_figure_bars_and_reward_kl_curve():
    toy = widgets.dpo_toy()
    fig = plots.dpo_tilt_figure(toy["answers"], toy["sft"], toy["rewards"], 0.5)
    _titled(fig)
    title = fig.layout.title.text
    assert "β = 0.5" in title and "E_π*[r] = 1.591" in title and "KL(π* ‖ π_SFT) = 1.016 nats" in title
    sft, star, curve, mark = fig.data
    assert list(sft.x) == ["fish , shells , ropes<br>r = +1", "fish , fish<br>r = 0", "apples , cakes<br>r = −2",
                           "fish , shells<br>r = +2"]
    assert list(sft.y) == toy["sft"]
    assert list(star.y) == pytest.approx(losses.tilted_policy(toy["sft"], toy["rewards"], 0.5).tolist())
    assert fig.layout.xaxis2.title.text == "KL(π* ‖ π_SFT) (nats)"
    assert len(curve.x) > 50 and curve.customdata[0] == pytest.approx(0.05)
    assert curve.customdata[-1] == pytest.approx(10.0)
    assert list(mark.x) == pytest.approx([1.0155], abs=1e-4) and list(mark.y) == pytest.approx([1.5905], abs=1e-4)
    assert len(fig.to_json()) < 20_000
    with pytest.raises(ValueError, match="same non-zero length"):
        plots.dpo_tilt_figure(toy["answers"], toy["sft"][:3], toy["rewards"], 0.5)


def test_dpo_weight_figure_shades_the_wrongly_ranked_side():
    fig = plots.dpo_weight_figure(margin=-0.5)
    _titled(fig)
    curve, mark = fig.data
    assert min(curve.x) == -6 and max(curve.x) == 6
    assert curve.y[list(curve.x).index(0)] == pytest.approx(0.5)
    assert all(w > 0.5 for x, w in zip(curve.x, curve.y) if x < 0)
    shaded = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(s.x0, s.x1) for s in shaded] == [(-6, 0)]
    assert any("ranked wrongly" in a.text for a in fig.layout.annotations)
    assert list(mark.y) == pytest.approx([float(SIGMA(torch.tensor(0.5)))])
    assert list(mark.text) == ["margin −0.50 → weight 0.622"]


def test_dpo_slide_gradient_figure_shows_the_factor_one_over_beta():
    _, summary = widgets.dpo_gradient_table(0.5)
    fig = plots.dpo_slide_gradient_figure(summary["logratio_margin"], 0.5)
    _titled(fig)
    right, written, marks, one = fig.data
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    assert (min(right.x), max(right.x)) == pytest.approx(plots.DPO_BETA_RANGE)
    assert all(w == pytest.approx(r / b) for b, r, w in zip(right.x, right.y, written.y))   # 1/β apart everywhere
    assert list(marks.x) == [0.5, 0.5] and list(marks.y) == pytest.approx([summary["push"], summary["slide_push"]])
    assert list(marks.text) == ["β·σ(−u) = 0.310 (the gradient)", "σ(−u) = 0.619 (the slide), 1/β = 2 times as much"]
    assert [a.text for a in fig.layout.annotations] == list(marks.text)   # both labelled on the figure
    assert list(one.x) == [1.0, 1.0] and "agree" in one.name


def test_online_dpo_figure_draws_each_round_in_percent_with_the_kl_on_its_own_axis():
    rounds = [{"round": r, "heldout_win_rate": 0.5 + 0.02 * r, "heldout_kl": 0.1 * r} for r in range(17)]
    fig = plots.online_dpo_figure(rounds, {"offline DPO": 0.749, "not run": None})
    win, kl, offline = fig.data
    assert list(win.x) == list(range(17)) and win.y[0] == pytest.approx(50) and win.y[-1] == pytest.approx(82)
    assert kl.yaxis == "y2" and kl.y[-1] == pytest.approx(1.6)
    assert offline.name == "offline DPO" and list(offline.y) == [pytest.approx(74.9)] * 2 and offline.line.dash == "dash"
    assert list(offline.x) == [0, 16]  # across every round; a rate of None draws nothing
    assert fig.layout.xaxis.dtick == 2 and fig.layout.yaxis.range == (0, 105)
    assert plots.online_dpo_figure(rounds[:3]).layout.xaxis.dtick == 1  # whole rounds, never 0.5

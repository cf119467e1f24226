"""Widgets and figures without a browser: explorer maths, panel ranges, a real panel run, axis titles."""
import math

import pytest

from labkit import plots, widgets
from labkit.experiments import Run
from labkit.presets import get_preset


def _titled(fig):
    """A figure has a title and both axes titled; a numeric axis names its unit in brackets."""
    assert fig.layout.title.text
    categorical = {"x"} if any(t.type == "bar" for t in fig.data) else set()
    for name in ("x", "y"):
        title = fig.layout[f"{name}axis"].title.text
        assert title, f"untitled {name} axis"
        if name not in categorical:
            assert "(" in title, f"numeric axis title without a unit: {title!r}"


def test_neg_log_values_in_nats_and_bits():
    values = widgets.neg_log_values(0.51)
    assert round(values["nats"], 3) == 0.673
    assert values["bits"] == pytest.approx(-math.log2(0.51))
    assert widgets.neg_log_values(1.0)["nats"] == 0.0


def test_neg_log_explorer_callback_updates_readout_and_figure():
    explorer = widgets.neg_log_explorer()
    assert "0.673 nats" in explorer.readout.value
    explorer.slider.value = 0.21                       # what dragging the slider does
    assert "1.561 nats" in explorer.readout.value
    assert explorer.update(0.5)["bits"] == pytest.approx(1.0)
    assert explorer.slider.value == 0.5                # calling from code moves the slider too
    marker = explorer.figure.data[1]
    assert list(marker.x) == [0.5] and marker.y[0] == pytest.approx(math.log(2))
    _titled(explorer.figure)
    with pytest.raises(ValueError, match=r"p \(the probability slider\) must be a number between 0.01 and 1.0"):
        explorer.update(0.0)


def test_temperature_explorer_keeps_probabilities_at_t1_and_sharpens_below():
    explorer = widgets.temperature_explorer()
    at_one = explorer.update(1.0)
    assert [round(p, 2) for p in at_one.values()] == [0.51, 0.21, 0.13, 0.15]
    cold, hot = explorer.update(0.5), explorer.update(2.0)
    assert cold["with"] > at_one["with"] > hot["with"]
    assert sum(cold.values()) == pytest.approx(1.0)
    _titled(explorer.figure)
    with pytest.raises(ValueError, match="temperature must be a number between 0.1 and 3.0"):
        explorer.update(5.0)


@pytest.fixture(scope="module")
def panel():
    return widgets.pretrain_panel(get_preset("smoke"))


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, r"steps must be a whole number between 1 and 12"),
    ({"steps": 10_000}, r"steps must be a whole number between 1 and 12"),
    ({"d_model": 8}, r"d_model must be a whole number between 16 and 64"),
    ({"d_model": 1024}, r"d_model must be a whole number between 16 and 64"),
    ({"d_model": 24}, r"multiple of 16"),
    ({"docs": 5}, r"train docs must be a whole number between 20 and 400"),
    ({"docs": 10**7}, r"train docs must be a whole number between 20 and 400"),
    ({"steps": 4.5}, r"steps must be a whole number"),
])
def test_panel_rejects_values_outside_the_sliders(panel, kwargs, message):
    with pytest.raises(ValueError, match=message):
        panel.train_once(**kwargs)
    assert panel.runs == []


def test_panel_ranges_come_from_the_preset():
    cpu = widgets.pretrain_panel("cpu")
    preset = get_preset("cpu")
    assert cpu.steps.max == preset.pretrain.steps and cpu.steps.min == cpu.steps.step
    assert cpu.d_model.max == 2 * preset.model.d_model
    assert cpu.docs.options[0] == preset.pretrain_demos.memorise_docs and cpu.docs.options[-1] == preset.n_train_docs


def test_panel_trains_for_real_and_collects_runs(panel):
    first = panel.train_once(steps=4, d_model=32, docs=100)
    second = panel.train_once(steps=6, d_model=16, docs=123)   # a corpus size between the slider's stops
    assert (panel.steps.value, panel.d_model.value, panel.docs.value) == (6, 16, 123)
    table = panel.runs_table()
    assert list(table.columns) == ["steps", "d_model", "parameters", "docs", "train_loss", "val_loss",
                                   "gap_closed", "seconds"]
    assert table.index.name == "run" and list(table.index) == [1, 2]
    assert table.loc[1, "parameters"] > table.loc[2, "parameters"]       # wider model, more weights
    for run in (first, second):
        assert 0 < run["val_loss"] < 10 and run["seconds"] > 0
    fig = panel.figure()
    _titled(fig)
    assert len([t for t in fig.data if t.name.endswith("validation")]) == 2  # both runs overlaid
    panel.clear()
    assert panel.runs_table().empty


def test_figures_have_titled_axes():
    history = [{"step": s, "tokens": 100 * s, "seconds": 0.1 * s, "train_loss": 3 / s, "val_loss": 3.2 / s}
               for s in (1, 2, 3)]
    for fig in [
        plots.neg_log_figure(0.51),
        plots.neg_log_figure([0.51, 0.21], unit="bits"),
        plots.loss_figure(history, floor=0.5, unigram=4.0),
        plots.loss_figure({"a": history, "b": history}, x="tokens", mark_min_val=True),
        plots.sweep_figure([{"d_model": 16, "parameters": 1e4, "val_loss": 2.0, "train_loss": 1.9},
                            {"d_model": 32, "parameters": 3e4, "val_loss": 1.5, "train_loss": 1.4}], 0.5, 4.0),
        plots.accuracy_bars([{"trained on": "train", "evaluated on": "test", "accuracy": 0.98},
                             {"trained on": "train", "evaluated on": "probe", "accuracy": 0.1}]),
        plots.prob_bars(["with", "on"], [0.6, 0.4]),
    ]:
        _titled(fig)
    fig = plots.loss_figure(history, floor=0.5, unigram=4.0)
    labels = [a.text for a in fig.layout.annotations]
    assert any("entropy floor 0.500" in t for t in labels) and any("unigram entropy 4.000" in t for t in labels)
    assert fig.layout.yaxis.title.text == "loss (nats/token)"


def test_live_plot_is_a_training_callback():
    live = plots.LiveLossPlot(floor=0.5, unigram=4.0)
    history = []
    for step in (1, 2):
        history.append({"step": step, "tokens": step, "seconds": step, "train_loss": 2.0, "val_loss": 2.1})
        live(history)
    assert live.calls == 2 and len(live.figure.data[0].x) == 2
    _titled(live.figure)


def test_figures_stay_small_when_saved():
    history = [{"step": s, "tokens": s, "seconds": s, "train_loss": 1.0, "val_loss": 1.0} for s in range(20)]
    assert len(plots.loss_figure(history, 0.5, 4.0).to_json()) < 6_000  # no big template, no plotly.js
    assert len(plots.neg_log_figure(0.5).to_json()) < 20_000


def test_setup_picks_a_renderer(monkeypatch):
    import plotly.io as pio

    before = pio.renderers.default
    try:
        assert plots.setup("json") == "json"
        monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
        assert plots.setup() == "colab"
    finally:
        pio.renderers.default = before
        plots._renderer = None


def test_experiment_panel_runs_checks_ranges_and_tabulates():
    import ipywidgets as W

    from labkit.widgets import ExperimentPanel

    calls = []

    def run(share):
        calls.append(share)
        return Run(row={"share": share, "accuracy": 1 - share})

    panel = ExperimentPanel("demo", {"share": W.FloatSlider(value=0.5, min=0.0, max=1.0, description="share")},
                            run, x="share", metrics=["accuracy"])
    panel.train_once(share=0.2)
    panel.train_once()
    assert calls == [0.2, 0.2] and list(panel.runs_table()["accuracy"]) == [0.8, 0.8]
    with pytest.raises(ValueError, match="share"):
        panel.train_once(share=2.0)
    with pytest.raises(ValueError, match="Unknown setting"):
        panel.train_once(rank=3)
    fig = panel.figure()
    assert fig.layout.xaxis.title.text == "share" and list(fig.data[0].y) == [80.0, 80.0]


def test_imbalance_panel_trains_for_real_under_smoke():
    from labkit.widgets import imbalance_panel

    panel = imbalance_panel("smoke")
    row = panel.train_once(arithmetic_share=0.75)
    assert row["examples"] == 2 * get_preset("smoke").sft_demos.per_category
    assert 0 <= row["arithmetic"] <= 1 and 0 <= row["classify"] <= 1


def test_lora_params_explorer_counts_and_rejects_bad_sizes():
    explorer = widgets.lora_params_explorer()
    counts = explorer.update()
    assert counts["full"] == 16_777_216 and counts["lora"] == 65_536
    assert "65,536" in explorer.text.value
    assert explorer.update(5, 4, 2)["lora"] == 18
    with pytest.raises(ValueError, match="rank r"):
        explorer.update(5, 4, 9)


def test_lora_panel_trains_full_and_lora_runs_under_smoke():
    panel = widgets.lora_panel("smoke")
    full = panel.train_once(rank=0)
    low = panel.train_once(rank=1)
    table = panel.runs_table()
    assert list(table["rank"]) == ["full", 1]
    assert full["trainable share"] == 1.0 and 0 < low["trainable share"] < 0.5
    assert low["training state MB"] < full["training state MB"]
    assert hasattr(panel.last_model, "merge_and_unload") and len(panel.histories) == 2
    assert [t.name for t in panel.curves_figure().data] == [f"{label}: train" for label in panel.histories]


def test_bradley_terry_explorer_values():
    explorer = widgets.bradley_terry_explorer()
    values = explorer.update(0.0)
    assert values["probability"] == 0.5 and values["loss"] == pytest.approx(math.log(2))
    assert explorer.update(2.0)["loss"] == pytest.approx(math.log1p(math.exp(-2.0)))
    with pytest.raises(ValueError, match="reward gap"):
        explorer.update(9.0)


def test_run_panel_base_draws_live_curves_and_overlays_runs():
    import ipywidgets as W

    from labkit.widgets import RunPanel

    def run(settings, on_history):
        history = []
        for step in (1, 2, 3):
            history.append({"step": step, "train_loss": settings["lr"] * step})
            on_history(history)
        return Run(row={"lr": settings["lr"], "final": history[-1]["train_loss"]}, history=history,
                   outputs={"model": object()})

    panel = RunPanel("demo", {"lr": W.FloatSlider(value=0.1, min=0.0, max=1.0, description="lr")}, run,
                     curves=lambda runs, faded: plots.loss_figure(runs, title="demo loss", faded=faded),
                     formats={"final": "{:.2f}"})
    panel.train_once(lr=0.5)
    assert panel.live_curves.draws == 3 + 1  # three live redraws, then the overlay of finished runs
    panel.train_once(lr=0.25)
    assert list(panel.runs_table()["final"]) == [1.5, 0.75] and "model" in panel.last
    assert "model" not in panel.runs_table().columns
    names = [t.name for t in panel.curves_figure().data]
    assert names == ["run 1: lr 0.5: train", "run 2: lr 0.25: train"]
    assert panel.styled_table().to_html().count("0.75") == 1
    with pytest.raises(ValueError, match=r"lr must be a number between 0.0 and 1.0"):
        panel.train_once(lr=3.0)


PPO_COLUMNS = ["P_cur", "P_prev", "ratio", "unclipped r·A", "clipped ratio", "clipped·A", "objective (min)",
               "d objective / d ratio", "clip binds?"]


def test_ppo_clip_table_lecture_worked_figures():
    table = widgets.ppo_clip_table(0.2, 2.0)
    assert list(table.columns) == PPO_COLUMNS and len(table) == 2
    up, down = table.iloc[0], table.iloc[1]
    assert (up["P_cur"], up["P_prev"], down["P_cur"], down["P_prev"]) == (0.3, 0.2, 0.2, 0.3)
    # (0.3, 0.2): r = 1.5 → min(3.0, 1.2·2 = 2.4) = 2.4, flat: the upper clip binds
    assert up["ratio"] == pytest.approx(1.5)
    assert up["unclipped r·A"] == pytest.approx(3.0)
    assert up["clipped ratio"] == pytest.approx(1.2)
    assert up["clipped·A"] == pytest.approx(2.4)
    assert up["objective (min)"] == pytest.approx(2.4)
    assert up["d objective / d ratio"] == 0.0 and up["clip binds?"]
    # (0.2, 0.3): r = 2/3 → min(4/3, 0.8·2 = 1.6) = 4/3 (the lecture rounds to 1.34), gradient still A = 2
    assert down["ratio"] == pytest.approx(2 / 3)
    assert down["unclipped r·A"] == pytest.approx(4 / 3)
    assert down["clipped ratio"] == pytest.approx(0.8)
    assert down["clipped·A"] == pytest.approx(1.6)
    assert down["objective (min)"] == pytest.approx(4 / 3)
    assert down["d objective / d ratio"] == pytest.approx(2.0) and not down["clip binds?"]


def test_ppo_clip_table_negative_advantage_clips_the_other_side():
    table = widgets.ppo_clip_table(0.2, -2.0)
    up, down = table.iloc[0], table.iloc[1]
    # A < 0, r = 1.5: min(−3.0, −2.4) = −3.0, the upper clip does not bind, gradient A = −2
    assert up["unclipped r·A"] == pytest.approx(-3.0) and up["clipped·A"] == pytest.approx(-2.4)
    assert up["objective (min)"] == pytest.approx(-3.0)
    assert up["d objective / d ratio"] == pytest.approx(-2.0) and not up["clip binds?"]
    # A < 0, r = 2/3: min(−4/3, −1.6) = −1.6, the lower clip binds, gradient 0
    assert down["unclipped r·A"] == pytest.approx(-4 / 3) and down["clipped·A"] == pytest.approx(-1.6)
    assert down["objective (min)"] == pytest.approx(-1.6)
    assert down["d objective / d ratio"] == 0.0 and down["clip binds?"]


def test_ppo_clip_table_gradient_column_is_a_or_zero():
    for eps in (0.05, 0.2, 0.3, 0.45):
        for advantage in (2.0, -2.0, 0.5):
            table = widgets.ppo_clip_table(eps, advantage)
            grads = list(table["d objective / d ratio"])
            assert all(g == 0.0 or g == pytest.approx(advantage) for g in grads)
            assert list(table["clip binds?"]) == [g == 0.0 for g in grads]
            # A > 0 can only flatten r = 1.5 (above 1+ε); A < 0 can only flatten r = 2/3 (below 1−ε)
            assert not table["clip binds?"].iloc[1 if advantage > 0 else 0]


@pytest.mark.parametrize("eps, advantage, message", [
    (0.6, 2.0, r"ε \(the clip range\) must be a number between 0.05 and 0.5 \(the slider's range\)"),
    (0.01, 2.0, r"ε \(the clip range\) must be a number between 0.05 and 0.5"),
    ("0.2", 2.0, r"ε \(the clip range\) must be a number"),
    (0.2, 0.0, r"advantage A must be a non-zero finite number"),
    (0.2, math.inf, r"advantage A must be a non-zero finite number"),
    (0.2, math.nan, r"advantage A must be a non-zero finite number"),
])
def test_ppo_clip_table_rejects_bad_settings(eps, advantage, message):
    with pytest.raises(ValueError, match=message):
        widgets.ppo_clip_table(eps, advantage)


def test_ppo_clip_explorer_slider_updates_readout_and_figure():
    explorer = widgets.ppo_clip_explorer()
    slider = explorer.slider
    assert (slider.min, slider.max, slider.step, slider.value) == (0.05, 0.5, 0.01, 0.2)
    assert slider.continuous_update is False
    values = explorer.compute(0.2)
    assert values["eps"] == 0.2
    assert values["positive"]["objective (min)"].iloc[0] == pytest.approx(2.4)
    assert values["negative"]["objective (min)"].iloc[1] == pytest.approx(-1.6)
    html = explorer.readout.value
    assert "<table" in html and html.count("2.400") >= 2 and "1.333" in html
    assert "only the upper clip 1+ε = 1.20 can bind" in html and "gradient is still 2.000" in html
    assert "does not apply when A &gt; 0" in html and "only the lower clip 1−ε = 0.80 can bind" in html
    assert "ε = 0.20" in explorer.figure.layout.title.text

    slider.value = 0.3                                  # what dragging the slider does
    at_03 = explorer.compute(0.3)["positive"].iloc[0]
    assert at_03["clipped ratio"] == pytest.approx(1.3)
    assert at_03["objective (min)"] == pytest.approx(2.6)   # min(3.0, 1.3·2 = 2.6): still clipped
    assert "2.600" in explorer.readout.value and "2.400" not in explorer.readout.value
    assert "ε = 0.30" in explorer.figure.layout.title.text
    assert explorer.figure.layout.shapes[0].x0 == pytest.approx(1.3)  # the flat region moved with ε

    widest = explorer.update(0.5)["positive"].iloc[0]   # 1+ε = 1.5 reaches r = 1.5: no longer flat
    assert slider.value == 0.5
    assert widest["objective (min)"] == pytest.approx(3.0) and widest["d objective / d ratio"] == pytest.approx(2.0)
    assert not widest["clip binds?"]
    with pytest.raises(ValueError, match=r"ε \(the clip range\) must be a number between 0.05 and 0.5"):
        explorer.update(0.7)
    assert slider.value == 0.5                           # a rejected value leaves the slider alone


def test_ppo_clip_figure_panels_shading_and_markers():
    fig = plots.ppo_clip_figure(0.2)
    _titled(fig)
    assert "ε = 0.20" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("probability ratio r = π_θ / π_old")
    assert fig.layout.xaxis2.title.text == fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text.startswith("L^CLIP")
    labels = [a.text for a in fig.layout.annotations]
    assert "A > 0 (A = +2)" in labels and "A < 0 (A = −2)" in labels
    assert labels.count("flat: no gradient") == 2
    shaded = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(s.xref, s.x0, s.x1) for s in shaded] == [("x", pytest.approx(1.2), 2.5), ("x2", 0.0, pytest.approx(0.8))]
    dotted = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(round(s.x0, 2) for s in dotted) == [0.8, 0.8, 1.2, 1.2]
    assert all(s.line.dash == "dot" for s in dotted)
    curves = [t for t in fig.data if t.mode == "lines"]
    assert len(curves) == 4 and all(50 <= len(t.x) <= 300 for t in curves)
    assert {t.line.dash for t in curves} == {"dash", None}               # unclipped dashed, objective solid
    markers = [t for t in fig.data if t.mode == "markers+text"]
    assert [list(t.x) for t in markers] == [[1.5, pytest.approx(2 / 3)]] * 2
    assert list(markers[0].y) == pytest.approx([2.4, 4 / 3]) and list(markers[1].y) == pytest.approx([-3.0, -1.6])
    assert len(fig.to_json()) < 20_000


def test_ppo_panel_names_a_slider_out_of_range_and_trains_one_smoke_run():
    panel = widgets.ppo_panel("smoke")
    assert list(panel.sliders) == ["eps", "beta", "rank", "lr"]
    for settings, slider in [({"eps": 0.9}, "clip range ε"), ({"beta": -0.1}, "KL coefficient β"),
                             ({"rank": 64}, "LoRA rank"), ({"lr": 0.5}, "learning rate")]:
        with pytest.raises(ValueError, match=slider):
            panel.train_once(**settings)
    assert panel.runs == []  # nothing trained on a bad setting
    row = panel.train_once(eps=0.3, beta=0.05, rank=2)
    assert row["eps"] == 0.3 and row["beta"] == 0.05 and row["rank"] == 2
    assert 0 <= row["win_rate"] <= 1 and row["trainable_parameters"] > 0
    table = panel.runs_table()
    assert list(table.columns) == ["eps", "beta", "rank", "lr", *widgets.panels.PPO_SPEC.results] and len(table) == 1
    assert "win rate" in panel.styled_table().to_html()  # the header a learner reads (plots.COLUMNS)
    curves = panel.curves_figure()
    assert {t.name for t in curves.data} == {"run 1: ε 0.30, β 0.05, LoRA rank 2, lr 1.0e-03"}  # LoRA's lr by default
    assert len(curves.data) == 3 and len(curves.data[0].x) == get_preset("smoke").ppo.iterations
    assert panel.last["evaluation"].answers.shape[0] == 48  # one answer per held-out prompt (smoke)


def test_dpo_panel_names_a_slider_out_of_range_and_trains_one_smoke_run():
    panel = widgets.dpo_panel("smoke")
    assert list(panel.sliders) == ["beta", "rank", "lr"]
    beta = panel.sliders["beta"]
    assert (beta.base ** beta.min, beta.base ** beta.max) == pytest.approx((0.01, 1.0))  # a log scale
    for settings, slider in [({"beta": 2.0}, "DPO strength β must be a number between 0.01 and 1.0"),
                             ({"beta": 0.0}, "DPO strength β"), ({"rank": 64}, "LoRA rank"),
                             ({"lr": 0.5}, "learning rate must be a number between 1e-05 and 0.01")]:
        with pytest.raises(ValueError, match=slider):
            panel.train_once(**settings)
    assert panel.runs == []  # nothing trained on a bad setting
    row = panel.train_once(beta=0.05, rank=2)
    assert row["beta"] == pytest.approx(0.05) and row["rank"] == 2 and row["lr"] == get_preset("smoke").dpo.lr
    assert 0 <= row["win_rate"] <= 1 and 0 <= row["implicit_accuracy"] <= 1 and row["trainable_parameters"] > 0
    table = panel.runs_table()
    assert list(table.columns) == ["beta", "rank", "lr", *widgets.panels.DPO_SPEC.results] and len(table) == 1
    curves = panel.curves_figure()
    assert len(curves.data) == 4 and {t.name for t in curves.data} == {"run 1: β 0.05, LoRA rank 2, lr 2.0e-04"}
    assert all(len(t.x) == 4 for t in curves.data)  # 64 pairs in batches of 16: four logged steps
    assert panel.figure().data[0].x[0] == pytest.approx(row["kl"])
    assert panel.last["evaluation"].answers.shape[0] == 48  # one answer per held-out prompt (smoke)

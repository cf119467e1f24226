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

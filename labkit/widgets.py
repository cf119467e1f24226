"""Interactive widgets (ipywidgets): explorers and run panels.

* **Explorers** are instant: a slider moves, a little pure-math function runs, a number and a figure
  change. :func:`neg_log_explorer` (−log p), :func:`temperature_explorer` (softmax temperature),
  :func:`bradley_terry_explorer`, :func:`lora_params_explorer`; the one-slider ones share
  :class:`SliderExplorer`.
* **Run panels** train for real: sliders choose a few settings, the *Train* button runs the
  training, curves grow live, and every finished run stays on the figure and in a table so runs
  can be compared. :func:`pretrain_panel` (lab 01).

Every callback is an ordinary method that works without a browser (``explorer.update(0.3)``,
``panel.train_once(steps=100)``, ``panel.runs_table()``); the buttons and sliders only call them.
That is how the tests drive the widgets, and how you can script them too.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import ipywidgets as W
import pandas as pd

from labkit import plots
from labkit.losses import nats_to_bits, nll
from labkit.presets import Preset, get_preset


def _check_range(slider: str, value, low, high, integer: bool = False) -> None:
    """Raise a ValueError naming the slider and its allowed range if ``value`` is outside it."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "a whole number" if integer else "a number"
        raise ValueError(f"{slider} must be {what} between {low} and {high} (the slider's range); "
                         f"got {value!r}")


# ------------------------------------------------------------------------------- −log p

def neg_log_values(p: float) -> dict[str, float]:
    """The loss of one prediction that gave the correct token probability ``p``: nats and bits."""
    nats = nll(float(p))
    return {"p": float(p), "nats": nats, "bits": nats_to_bits(nats)}


class SliderExplorer(W.VBox):
    """One slider, a line of numbers and a figure: moving the slider calls :meth:`update`.

    A subclass says what to compute (``compute(value) -> dict``, raising a clear ``ValueError`` out
    of range), how to show it (``readout_html(value, values)``) and what to draw
    (``make_figure(value, values)``).
    """

    def __init__(self, slider: W.FloatSlider, value: float):
        self.slider, self.readout, self.figure = slider, W.HTML(), None
        self.live = plots.LiveFigure(embedded=True)
        slider.observe(lambda change: self.update(change["new"]), names="value")
        super().__init__([slider, self.readout, self.live.out])
        self.update(value)

    def update(self, value: float) -> dict:
        """Recompute for ``value`` (what the slider calls); returns :meth:`compute`'s numbers."""
        values = self.compute(value)
        if abs(self.slider.value - value) > 1e-12:
            self.slider.value = value  # keeps slider and numbers in step when called from code
        self.readout.value = self.readout_html(value, values)
        self.figure = self.make_figure(value, values)
        self.live.show(self.figure)
        return values


class NegLogExplorer(SliderExplorer):
    """A slider over p(correct) in [0.01, 1] showing L = −ln p in nats and bits, and the curve."""

    P_MIN, P_MAX = 0.01, 1.0

    def __init__(self, p: float = 0.51):
        super().__init__(W.FloatSlider(value=p, min=self.P_MIN, max=self.P_MAX, step=0.01,
                                       description="p(correct)", readout_format=".2f",
                                       style={"description_width": "initial"},
                                       continuous_update=True, layout=W.Layout(width="420px")), p)

    def compute(self, p: float) -> dict[str, float]:
        _check_range("p (the probability slider)", p, self.P_MIN, self.P_MAX)
        return neg_log_values(p)

    def readout_html(self, p: float, values: dict) -> str:
        return f"<b>L = −ln {p:.2f} = {values['nats']:.3f} nats</b> = {values['bits']:.3f} bits"

    def make_figure(self, p: float, values: dict):
        return plots.neg_log_figure(p)


def neg_log_explorer(p: float = 0.51) -> NegLogExplorer:
    """The −log p explorer (lab 01): move the slider, watch the loss of one prediction."""
    return NegLogExplorer(p)


# ------------------------------------------------------------------------------- temperature

def temperature_softmax(logits: Sequence[float], temperature: float) -> list[float]:
    """p_i = exp(z_i / T) / Σ_j exp(z_j / T): T < 1 sharpens the distribution, T > 1 flattens it."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = [z / temperature for z in logits]
    top = max(scaled)
    weights = [math.exp(s - top) for s in scaled]
    total = sum(weights)
    return [w / total for w in weights]


class TemperatureExplorer(SliderExplorer):
    """A temperature slider over the next-token distribution after "May the force be".

    At T = 1 the probabilities are the model's own (0.51 / 0.21 / 0.13 and the rest for other
    words); sampling text at temperature T draws from the reshaped distribution.
    """

    T_MIN, T_MAX = 0.1, 3.0
    WORDS = ("with", "on", "in", "(other words)")
    PROBS = (0.51, 0.21, 0.13, 0.15)

    def __init__(self, temperature: float = 1.0):
        self.logits = [math.log(p) for p in self.PROBS]
        super().__init__(W.FloatSlider(value=temperature, min=self.T_MIN, max=self.T_MAX, step=0.05,
                                       description="temperature", readout_format=".2f",
                                       style={"description_width": "initial"},
                                       layout=W.Layout(width="420px")), temperature)

    def compute(self, temperature: float) -> dict[str, float]:
        """``{word: probability}`` at ``temperature``."""
        _check_range("temperature", temperature, self.T_MIN, self.T_MAX)
        return dict(zip(self.WORDS, temperature_softmax(self.logits, temperature)))

    def readout_html(self, temperature: float, values: dict) -> str:
        return f"T = {temperature:.2f}: " + ", ".join(f"p({w}) = {p:.2f}" for w, p in values.items())

    def make_figure(self, temperature: float, values: dict):
        return plots.prob_bars(self.WORDS, list(values.values()),
                               f'Next word after "May the force be" at temperature {temperature:.2f}')


def temperature_explorer(temperature: float = 1.0) -> TemperatureExplorer:
    """The temperature explorer (lab 00's slider demo)."""
    return TemperatureExplorer(temperature)


# ------------------------------------------------------------------------------- run panel

WIDTH_STEP = 16  # model widths move in steps of 16: quick_run gives each attention head >= 16 dims


def _docs_options(low: int, high: int) -> list[int]:
    """Round corpus sizes (1-2-5 steps) from ``low`` to ``high``, both included."""
    options = {low, high}
    power = 1
    while power <= high:
        options.update(v for v in (power, 2 * power, 5 * power) if low < v < high)
        power *= 10
    return sorted(options)


class PretrainPanel(W.VBox):
    """Sliders (steps, model width, training documents) + Train: real pretraining runs, compared.

    Ranges come from the preset: steps up to the preset's pretraining steps, widths from 16 to
    twice the preset's width, corpora from lab 01's tiny memorisation corpus up to the full one.
    """

    COLUMNS = ["run", "steps", "d_model", "parameters", "docs", "train_loss", "val_loss",
               "gap_closed", "seconds"]
    TITLE = "Pretraining runs (dashed: train, solid: validation)"

    def __init__(self, preset: Preset | None = None):
        self.preset = preset or get_preset()
        p = self.preset
        step_size = max(1, p.lab01.sweep_steps // 10)
        self.steps = W.IntSlider(value=min(p.lab01.sweep_steps, p.pretrain.steps), min=step_size,
                                 max=p.pretrain.steps, step=step_size, description="steps",
                                 continuous_update=False)
        middle = sorted(p.lab01.sweep_widths)[len(p.lab01.sweep_widths) // 2]
        self.d_model = W.IntSlider(value=min(max(middle - middle % WIDTH_STEP, WIDTH_STEP), 2 * p.model.d_model),
                                   min=WIDTH_STEP, max=2 * p.model.d_model, step=WIDTH_STEP,
                                   description="d_model", continuous_update=False)
        self.docs = W.SelectionSlider(options=_docs_options(p.lab01.memorise_docs, p.n_train_docs),
                                      value=p.n_train_docs, description="train docs",
                                      continuous_update=False)
        for slider in (self.steps, self.d_model, self.docs):
            slider.style.description_width = "80px"
            slider.layout.width = "460px"
        self.button = W.Button(description="Train", button_style="primary", icon="play")
        self.clear_button = W.Button(description="Clear runs", icon="trash")
        self.status = W.HTML("Choose settings and press <b>Train</b>. Each run trains a fresh model.")
        self.plot = plots.LiveFigure(embedded=True)
        self.table = plots.LiveFigure(embedded=True)  # the runs table, redrawn the same way
        self.runs: list[dict] = []
        self.histories: dict[str, list[dict]] = {}
        self.stats: dict | None = None
        self.button.on_click(self._on_train)
        self.clear_button.on_click(lambda _: self.clear())
        super().__init__([
            W.HTML(f"<b>Pretraining run panel</b> — preset <code>{p.name}</code>"),
            self.steps, self.d_model, self.docs,
            W.HBox([self.button, self.clear_button]), self.status, self.plot.out, self.table.out])

    # -- the callbacks (plain methods, usable without a browser) --

    def check(self, steps: int, d_model: int, docs: int) -> None:
        """Raise ValueError naming the slider if a value is out of its range."""
        _check_range("steps", steps, self.steps.min, self.steps.max, integer=True)
        _check_range("d_model", d_model, self.d_model.min, self.d_model.max, integer=True)
        if d_model % WIDTH_STEP:
            raise ValueError(f"d_model must be a multiple of {WIDTH_STEP} (so that the attention "
                             f"heads, {WIDTH_STEP}+ dimensions each, divide it evenly); got {d_model}")
        options = list(self.docs.options)
        _check_range("train docs", docs, options[0], options[-1], integer=True)

    def train_once(self, steps: int | None = None, d_model: int | None = None,
                   docs: int | None = None) -> dict:
        """Train one fresh model with these settings (default: the sliders'); return its table row.

        The sliders are moved to the values used, the curves update live, and the finished run
        is added to :meth:`runs_table` and to the figure.
        """
        from labkit.pipeline import gap_closed
        from labkit.train.pretrain import quick_run

        steps = self.steps.value if steps is None else steps
        d_model = self.d_model.value if d_model is None else d_model
        docs = self.docs.value if docs is None else docs
        self.check(steps, d_model, docs)
        self.steps.value, self.d_model.value = int(steps), int(d_model)
        if docs not in self.docs.options:
            self.docs.options = sorted({*self.docs.options, int(docs)})
        self.docs.value = int(docs)

        label = f"run {len(self.runs) + 1}: {steps} steps, d_model {d_model}, {docs:,} docs"
        if self.stats is None:  # lines to draw before the first run ends (the floor is exact already)
            from labkit import world

            p = self.preset
            self.stats = world.entropy_stats(world.corpus("validation", p.n_val_docs, p.world_seed))

        def on_eval(history):
            fig = plots.loss_figure({label: history}, self.stats["entropy_floor"],
                                    self.stats["unigram_entropy"], self.TITLE, faded=self.histories)
            self.plot.show(fig)
            last = history[-1]
            self.status.value = (f"{label} — step {last['step']}/{steps}: train {last['train_loss']:.3f}, "
                                 f"validation {last['val_loss']:.3f} nats/token")

        self.button.disabled = True
        self.status.value = f"{label} — preparing the corpus and the model…"
        start = time.perf_counter()
        try:
            model, _, result, stats = quick_run(self.preset, n_train_docs=int(docs), d_model=int(d_model),
                                                steps=int(steps), callback=on_eval, progress=False)
        finally:
            self.button.disabled = False
        self.stats = stats
        run = {"run": len(self.runs) + 1, "steps": int(steps), "d_model": int(d_model),
               "parameters": int(result.parameters), "docs": int(docs),
               "train_loss": result.train_loss, "val_loss": result.val_loss,
               "gap_closed": gap_closed(result.val_loss, stats), "seconds": result.seconds}
        self.runs.append(run)
        self.histories[label] = list(result.history)
        self.status.value = (f"{label} — done in {time.perf_counter() - start:.1f} s: validation "
                             f"{result.val_loss:.3f} nats/token, {run['gap_closed']:.0%} of the gap "
                             "from the unigram entropy to the floor closed.")
        self.redraw()
        return run

    def runs_table(self) -> pd.DataFrame:
        """One row per finished run: settings, size, final losses (nats/token), gap closed, seconds."""
        return pd.DataFrame(self.runs, columns=self.COLUMNS).set_index("run")

    def figure(self):
        """Every finished run's curves, with the entropy floor and the unigram entropy."""
        floor = self.stats["entropy_floor"] if self.stats else None
        unigram = self.stats["unigram_entropy"] if self.stats else None
        return plots.loss_figure(self.histories, floor, unigram, self.TITLE)

    def clear(self) -> None:
        """Forget every run."""
        self.runs.clear()
        self.histories.clear()
        self.redraw()

    def redraw(self) -> None:
        """Show the comparison figure and the table (inside a notebook)."""
        self.plot.show(self.figure())
        self.table.show(self.runs_table().style.format(
            {"parameters": "{:,}", "docs": "{:,}", "train_loss": "{:.3f}", "val_loss": "{:.3f}",
             "gap_closed": "{:.1%}", "seconds": "{:.1f}"}))

    def _on_train(self, _button) -> None:
        try:
            self.train_once()
        except Exception as err:  # shown in the panel; a button callback has nowhere else to report
            self.status.value = f"<span style='color:#c00'>Training failed: {type(err).__name__}: {err}</span>"


def pretrain_panel(preset: Preset | str | None = None) -> PretrainPanel:
    """The pretraining run panel of lab 01 for ``preset`` (default: the active preset)."""
    return PretrainPanel(get_preset(preset) if isinstance(preset, str) or preset is None else preset)


class ExperimentPanel(W.VBox):
    """A run panel for a one-number experiment: sliders, a Train button, a table and a line plot.

    ``run(**values)`` trains and returns a dict of results (a table row). The figure plots the
    ``metrics`` columns (rates in [0, 1], shown in %) against the slider named ``x``.
    """

    def __init__(self, title: str, sliders: dict[str, W.ValueWidget], run, x: str, metrics: list[str],
                 y_title: str = "exact match (% of held-out examples)", live_curves: bool = False,
                 formats: dict[str, str] | None = None, run_label=None, group: str | None = None):
        self.title, self.sliders, self.run_fn, self.x, self.metrics, self.y_title = title, sliders, run, x, metrics, y_title
        self.group = group  # a second setting: one line per value of it (see plots.metric_lines)
        # How the table shows each column (a format string); metrics are shares, shown in %.
        self.formats = {**{m: "{:.1%}" for m in metrics}, "seconds": "{:.1f}", **(formats or {})}
        # run_label(settings) -> the words a run is called by in legends (default: "name value, ...").
        self.run_label = run_label or (lambda settings: ", ".join(f"{k} {v}" for k, v in settings.items()))
        self.live_curves = live_curves  # run(**settings, callback=...) feeds loss curves while training
        self.histories: dict[str, list[dict]] = {}
        self.curves = plots.LiveFigure(embedded=True)
        for slider in sliders.values():
            slider.style.description_width = "160px"
            slider.layout.width = "460px"
        self.button = W.Button(description="Train", button_style="primary", icon="play")
        self.status = W.HTML("Choose a setting and press <b>Train</b>. Each run fine-tunes the pretrained model afresh.")
        self.plot, self.table = plots.LiveFigure(embedded=True), plots.LiveFigure(embedded=True)
        self.runs: list[dict] = []
        self.button.on_click(self._on_train)
        super().__init__([W.HTML(f"<b>{title}</b>"), *sliders.values(), self.button, self.status,
                          self.curves.out, self.plot.out, self.table.out])

    def train_once(self, **values) -> dict:
        """Run once with these slider values (default: the sliders'); add the result to the table."""
        for name, value in values.items():
            if name not in self.sliders:
                raise ValueError(f"Unknown setting {name!r}; this panel has {', '.join(self.sliders)}")
            slider = self.sliders[name]
            _check_range(slider.description, value, slider.min, slider.max, isinstance(slider, W.IntSlider))
            slider.value = value
        settings = {name: slider.value for name, slider in self.sliders.items()}
        self.button.disabled = True
        self.status.value = f"Training with {settings}…"
        label = f"run {len(self.runs) + 1}: " + self.run_label(settings)
        extra = {}
        if self.live_curves:
            def on_log(history):
                self.curves.show(plots.loss_figure({label: history}, title=f"{self.title}: training loss",
                                                        faded=self.histories))
            extra["callback"] = on_log
        try:
            row = self.run_fn(**settings, **extra)
        finally:
            self.button.disabled = False
        if "history" in row:
            self.histories[label] = row["history"]
        row = {k: v for k, v in row.items() if isinstance(v, (int, float, str, type(None)))}
        self.runs.append({"run": len(self.runs) + 1, **row})
        self.status.value = f"Run {len(self.runs)} done: " + ", ".join(
            f"{k} {v:.0%}" for k, v in row.items() if k in self.metrics)
        self.redraw()
        return row

    def runs_table(self) -> pd.DataFrame:
        """One row per finished run."""
        return pd.DataFrame(self.runs).set_index("run") if self.runs else pd.DataFrame()

    def styled_table(self):
        """:meth:`runs_table` formatted for reading: shares in %, seconds to 0.1 s, blanks as "—"."""
        table = self.runs_table()
        formats = {c: f for c, f in self.formats.items() if c in table.columns}
        return table.style.format(formats, na_rep="—")

    def figure(self):
        """Each metric against the slider ``x``, one line per metric."""
        table = self.runs_table().reset_index()
        return plots.metric_lines(table, self.x, self.metrics, self.title, self.y_title, group=self.group)

    def curves_figure(self):
        """Every finished run's training-loss curve, overlaid."""
        return plots.loss_figure(self.histories, title=f"{self.title}: training loss")

    def redraw(self) -> None:
        if self.histories:
            self.curves.show(self.curves_figure())
        self.plot.show(self.figure())
        self.table.show(self.styled_table())

    def _on_train(self, _button) -> None:
        try:
            self.train_once()
        except Exception as err:
            self.status.value = f"<span style='color:#c00'>Training failed: {type(err).__name__}: {err}</span>"


def imbalance_panel(preset: Preset | str | None = None) -> ExperimentPanel:
    """Lab 02: slide the share of arithmetic in a fixed SFT budget; see both tasks' exact match."""
    from labkit.train.sft import imbalance_experiment

    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    slider = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="arithmetic share",
                           continuous_update=False)
    return ExperimentPanel("Data imbalance: arithmetic vs classify in one budget", {"arithmetic_share": slider},
                           lambda arithmetic_share: imbalance_experiment(arithmetic_share, preset),
                           x="arithmetic share", metrics=["arithmetic", "classify"],
                           formats={"arithmetic share": "{:.0%}", "examples": "{:,}"})


def noise_panel(preset: Preset | str | None = None) -> ExperimentPanel:
    """Lab 02: quality vs quantity — training-set size and share of wrong answers, same compute."""
    from labkit.train.sft import noise_experiment

    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    top = preset.lab02.per_category
    sliders = {"examples_per_category": W.IntSlider(value=top, min=max(1, top // 8), max=top, step=max(1, top // 8),
                                                    description="examples per category", continuous_update=False),
               "wrong_share": W.FloatSlider(value=0.0, min=0.0, max=0.9, step=0.1, description="wrong answers",
                                            continuous_update=False)}
    return ExperimentPanel("Quality vs quantity: label noise", sliders,
                           lambda examples_per_category, wrong_share: noise_experiment(
                               examples_per_category, wrong_share, preset),
                           x="wrong share", metrics=["exact_match"], group="examples per category",
                           formats={"examples per category": "{:,}", "wrong share": "{:.0%}"})


def lora_panel(preset: Preset | str | None = None) -> ExperimentPanel:
    """Lab 03: LoRA rank slider (0 = full fine-tuning) + Train; live loss curves; a runs table.

    Each run's row: rank, trainable parameters, exact match, seconds, training-state memory.
    The last run's model is kept in ``panel.last_model`` (for merging).
    """
    from labkit.train.sft import lora_experiment

    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    slider = W.IntSlider(value=8, min=0, max=64, description="rank (0 = full)", continuous_update=False)
    panel = None

    def run(rank, callback=None):
        row = lora_experiment(rank or None, preset, callback=callback)
        panel.last_model, panel.last_tokenizer = row.pop("model"), row.pop("tokenizer")
        return row

    panel = ExperimentPanel("LoRA rank sweep", {"rank": slider}, run, x="trainable parameters",
                            metrics=["exact_match"], live_curves=True,
                            formats={"trainable parameters": "{:,}", "trainable share": "{:.1%}",
                                     "training state MB": "{:.2f}", "peak GPU MB": "{:.0f}"},
                            run_label=lambda s: "full fine-tuning" if s["rank"] == 0 else f"LoRA rank {s['rank']}")
    return panel


class LoRAParamsExplorer(W.VBox):
    """Sliders m, n, r: trainable numbers of a full m×n update vs a rank-r LoRA update."""

    def __init__(self, m: int = 4096, n: int = 4096, r: int = 8):
        self.m = W.IntSlider(value=m, min=1, max=8192, description="m (rows)", continuous_update=False)
        self.n = W.IntSlider(value=n, min=1, max=8192, description="n (columns)", continuous_update=False)
        self.r = W.IntSlider(value=r, min=1, max=256, description="r (rank)", continuous_update=False)
        self.text = W.HTML()
        self.live = plots.LiveFigure(embedded=True)
        for s in (self.m, self.n, self.r):
            s.observe(lambda _: self.update(), names="value")
        super().__init__([self.m, self.n, self.r, self.text, self.live.out])
        self.update()

    def update(self, m: int | None = None, n: int | None = None, r: int | None = None) -> dict:
        """Recompute for these sizes (default: the sliders'); returns ``lora_parameter_counts``."""
        from labkit.lora import lora_parameter_counts

        m, n, r = (self.m.value if m is None else m), (self.n.value if n is None else n), (self.r.value if r is None else r)
        counts = lora_parameter_counts(m, n, r)  # raises a clear ValueError for a bad size
        self.text.value = (f"full update {m:,}×{n:,} = <b>{counts['full']:,}</b> numbers; LoRA "
                           f"{r}·({m:,}+{n:,}) = <b>{counts['lora']:,}</b> ({counts['ratio']:.3%} of full)")
        self.live.show(plots.lora_params_figure(m, n, r))
        return counts


def lora_params_explorer(m: int = 4096, n: int = 4096, r: int = 8) -> LoRAParamsExplorer:
    """The parameter-count explorer of lab 03 (starts at the lecture's 4096×4096, r = 8)."""
    return LoRAParamsExplorer(m, n, r)


def bradley_terry_values(gap: float) -> dict[str, float]:
    """P(chosen ≻ rejected) = σ(Δ) and the Bradley–Terry loss −log σ(Δ) for a reward gap Δ."""
    _check_range("reward gap", gap, -6.0, 6.0)
    p = 1 / (1 + math.exp(-gap))
    return {"gap": gap, "probability": p, "loss": -math.log(p)}


class BradleyTerryExplorer(SliderExplorer):
    """A slider over the reward gap Δ: the preference probability σ(Δ) and the loss −log σ(Δ)."""

    def __init__(self, gap: float = 1.0):
        slider = W.FloatSlider(value=gap, min=-6.0, max=6.0, step=0.1, description="reward gap Δ",
                               continuous_update=False)
        slider.style.description_width = "100px"
        super().__init__(slider, gap)

    def compute(self, gap: float) -> dict[str, float]:
        return bradley_terry_values(gap)

    def readout_html(self, gap: float, values: dict) -> str:
        return (f"Δ = {gap:+.1f}: P(chosen ≻ rejected) = <b>{values['probability']:.3f}</b>, "
                f"loss = <b>{values['loss']:.3f}</b> nats")

    def make_figure(self, gap: float, values: dict):
        return plots.bradley_terry_figure(gap)


def bradley_terry_explorer(gap: float = 1.0) -> BradleyTerryExplorer:
    """The Bradley–Terry explorer of lab 04."""
    return BradleyTerryExplorer(gap)

"""Run panels: sliders + a Train button that trains for real, live curves, runs compared.

Every panel is a :class:`RunPanel`: a title, a few sliders, a function that trains once with the
sliders' settings, and three areas drawn through :class:`labkit.plots.LiveFigure` — the live
training curves (earlier runs pale behind the current one), a summary figure of the runs (a metric
against a setting), and a table of every finished run. Lab 01's pretraining panel, lab 02's and
03's experiment panels, and the policy methods' panels of labs 05-07 (one :class:`PolicyPanel`,
configured by a :class:`PolicySpec` per method) are all RunPanels.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import ipywidgets as W
import pandas as pd

from labkit import plots
from labkit.experiments import Run
from labkit.presets import Preset, get_preset, resolve_preset
from labkit.widgets.explorers import check_range


class RunPanel(W.VBox):
    """Sliders, a Train button, live curves, overlaid runs and a results table.

    ``run(settings, on_history)`` trains once with ``settings`` (slider name -> value), calls
    ``on_history(history)`` whenever its logged history grows (a list of dicts), and returns a
    :class:`labkit.experiments.Run`: its row goes into the table, its history onto the curves, its
    outputs (e.g. the trained model) into :attr:`last`. Everything else is optional:

    * ``curves(runs, faded)`` builds the training-curve figure from ``label -> history`` mappings;
    * ``summary(table)`` builds a figure of the runs table (e.g. accuracy against a setting);
    * ``formats`` maps table columns to format strings; ``columns`` fixes the table's columns;
    * ``run_label(settings)`` names a run in legends (default ``"name value, …"``);
    * ``check(settings)`` raises a ``ValueError`` for a combination the sliders allow but the run does not.

    Callbacks are plain methods: ``train_once(**settings)``, ``runs_table()``, ``figure()``,
    ``curves_figure()``, ``clear()``; the buttons only call them.
    """

    def __init__(self, title: str, sliders: dict[str, W.ValueWidget], run: Callable, *,
                 curves: Callable | None = None, summary: Callable | None = None,
                 formats: dict[str, str] | None = None, columns: list[str] | None = None,
                 run_label: Callable | None = None, check: Callable | None = None,
                 headline: list[str] | None = None,
                 intro: str = "Choose settings and press <b>Train</b>. Each run trains a fresh model."):
        self.title, self.sliders, self.run_fn = title, dict(sliders), run
        self.curves_fn, self.summary_fn, self.check_fn = curves, summary, check
        self.formats = {"seconds": "{:.1f}", **(formats or {})}
        self.columns = columns
        self.run_label = run_label or (lambda settings: ", ".join(
            f"{self.sliders[k].description} {v}" for k, v in settings.items()))
        self.headline = headline  # the results the status line reports when a run ends (default: formatted ones)
        self.runs: list[dict] = []
        self._busy = threading.Lock()  # one run at a time: a second Train while one trains is refused
        self.histories: dict[str, list[dict]] = {}
        self.last: dict = {}  # the latest run's non-numeric results (e.g. the trained model)
        for slider in self.sliders.values():
            slider.style.description_width = "160px"
            slider.layout.width = "480px"
        self.button = W.Button(description="Train", button_style="primary", icon="play")
        self.clear_button = W.Button(description="Clear runs", icon="trash")
        self.status = W.HTML(intro)
        self.live_curves = plots.LiveFigure(embedded=True)
        self.plot = plots.LiveFigure(embedded=True)
        self.table = plots.LiveFigure(embedded=True)
        self.button.on_click(self._on_train)
        self.clear_button.on_click(lambda _: self.clear())
        super().__init__([W.HTML(f"<b>{title}</b>"), *self.sliders.values(),
                          W.HBox([self.button, self.clear_button]), self.status,
                          self.live_curves.out, self.plot.out, self.table.out])

    # -- the callbacks (plain methods, usable without a browser) --

    def validate(self, settings: dict) -> None:
        """Raise ValueError naming the slider if a value is outside its range."""
        for name, value in settings.items():
            if name not in self.sliders:
                raise ValueError(f"Unknown setting {name!r}; this panel has {', '.join(self.sliders)}")
            slider = self.sliders[name]
            if isinstance(slider, W.SelectionSlider):
                options = list(slider.options)
                check_range(slider.description, value, options[0], options[-1], integer=True)
            elif isinstance(slider, W.FloatLogSlider):  # its min and max are exponents of its base
                low, high = slider.base ** slider.min, slider.base ** slider.max
                check_range(slider.description, value, round(low, 12), round(high, 12))
            else:
                check_range(slider.description, value, slider.min, slider.max, isinstance(slider, W.IntSlider))
        if self.check_fn is not None:
            self.check_fn({**self.settings(), **settings})

    def settings(self) -> dict:
        """The sliders' current values."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def _move_sliders(self, settings: dict) -> None:
        for name, value in settings.items():
            slider = self.sliders[name]
            if isinstance(slider, W.SelectionSlider) and value not in slider.options:
                slider.options = sorted({*slider.options, value})  # a value between the slider's stops
            slider.value = value

    def train_once(self, **settings) -> dict:
        """Train once with these settings (default: the sliders'); return the run's table row.

        The sliders move to the values used, the curves update live while it trains, and the
        finished run is added to :meth:`runs_table` and to the figures.
        """
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{self.title}: a run is training already (the Train button is off until it "
                               "ends). Wait for it to finish, or make a second panel for a run beside it.")
        try:
            return self._train_once(settings)
        finally:
            self._busy.release()

    def _train_once(self, settings: dict) -> dict:
        self.validate(settings)
        self._move_sliders(settings)
        settings = self.settings()
        label = f"run {len(self.runs) + 1}: " + self.run_label(settings)
        self.button.disabled = True
        self.status.value = f"{label} — training…"
        start = time.perf_counter()

        def on_history(history: list[dict]) -> None:
            if self.curves_fn is not None:
                self.live_curves.show(self.curves_fn({label: list(history)}, self.histories))
            self.status.value = f"{label} — training… {self._progress_text(history[-1]) if history else ''}"

        try:
            result: Run = self.run_fn(settings, on_history)
        finally:
            self.button.disabled = False
        row = dict(result.row)
        if result.history:
            self.histories[label] = list(result.history)
        self.last = dict(result.outputs)
        self.runs.append({"run": len(self.runs) + 1, **row})
        self.status.value = f"{label} — done in {time.perf_counter() - start:.1f} s: {self._done_text(row)}"
        self.redraw()
        return row

    def _progress_text(self, point: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in point.items()
                         if k in ("step", "train_loss", "val_loss"))

    def _done_text(self, row: dict) -> str:
        keys = self.headline if self.headline is not None else [k for k in row if k in self.formats]
        return ", ".join(f"{plots.COLUMNS.get(key, (key,))[0]} {self.formats.get(key, '{}').format(row[key])}"
                         for key in keys if isinstance(row.get(key), (int, float)))

    def runs_table(self) -> pd.DataFrame:
        """One row per finished run (index ``run``): its settings and results."""
        table = pd.DataFrame(self.runs, columns=None if self.columns is None else ["run", *self.columns])
        return table.set_index("run") if len(table.columns) else table

    def styled_table(self):
        """:meth:`runs_table` formatted for reading (shares in %, seconds to 0.1 s, blanks as "—"), the
        columns :data:`labkit.plots.COLUMNS` knows under their headers."""
        table = self.runs_table()
        style = table.style.format({c: f for c, f in self.formats.items() if c in table.columns}, na_rep="—")
        return style.relabel_index([plots.COLUMNS.get(c, (c,))[0] for c in table.columns], axis="columns")

    def curves_figure(self):
        """Every finished run's training curves, overlaid (``None`` if the panel draws none)."""
        return None if self.curves_fn is None else self.curves_fn(self.histories, {})

    def figure(self):
        """The summary figure of the runs (``None`` if the panel has none)."""
        return None if self.summary_fn is None else self.summary_fn(self.runs_table().reset_index())

    def clear(self) -> None:
        """Forget every run."""
        self.runs.clear()
        self.histories.clear()
        self.last = {}
        self.redraw()

    def redraw(self) -> None:
        """Show the overlaid curves, the summary figure and the table (inside a notebook)."""
        if self.curves_fn is not None:
            self.live_curves.show(self.curves_figure())
        if self.summary_fn is not None:
            self.plot.show(self.summary_fn(self.runs_table().reset_index()))
        self.table.show(self.styled_table())

    def _on_train(self, _button) -> None:
        try:
            self.train_once()
        except Exception as err:  # shown in the panel; a button callback has nowhere else to report
            self.status.value = f"<span style='color:#c00'>Training failed: {type(err).__name__}: {err}</span>"


# ------------------------------------------------------------------------------- lab 01: pretraining

WIDTH_STEP = 16  # model widths move in steps of 16: quick_run gives each attention head >= 16 dims


def _docs_options(low: int, high: int) -> list[int]:
    """Round corpus sizes (1-2-5 steps) from ``low`` to ``high``, both included."""
    options = {low, high}
    power = 1
    while power <= high:
        options.update(v for v in (power, 2 * power, 5 * power) if low < v < high)
        power *= 10
    return sorted(options)


class PretrainPanel(RunPanel):
    """Sliders (steps, model width, training documents) + Train: real pretraining runs, compared.

    Ranges come from the preset: steps up to the preset's pretraining steps, widths from 16 to
    twice the preset's width, corpora from lab 01's tiny memorisation corpus up to the full one.
    """

    COLUMNS = ["steps", "d_model", "parameters", "docs", "train_loss", "val_loss", "gap_closed", "seconds"]
    TITLE = "Pretraining runs (dashed: train, solid: validation)"

    def __init__(self, preset: Preset | None = None):
        self.preset = p = preset or get_preset()
        self.stats: dict | None = None  # the corpus's floor and unigram entropy (lines on the figure)
        step_size = max(1, p.pretrain_demos.sweep_steps // 10)
        self.steps = W.IntSlider(value=min(p.pretrain_demos.sweep_steps, p.pretrain.steps), min=step_size,
                                 max=p.pretrain.steps, step=step_size, description="steps",
                                 continuous_update=False)
        middle = sorted(p.pretrain_demos.sweep_widths)[len(p.pretrain_demos.sweep_widths) // 2]
        self.d_model = W.IntSlider(value=min(max(middle - middle % WIDTH_STEP, WIDTH_STEP), 2 * p.model.d_model),
                                   min=WIDTH_STEP, max=2 * p.model.d_model, step=WIDTH_STEP,
                                   description="d_model", continuous_update=False)
        self.docs = W.SelectionSlider(options=_docs_options(p.pretrain_demos.memorise_docs, p.n_train_docs),
                                      value=p.n_train_docs, description="train docs", continuous_update=False)
        super().__init__(f"Pretraining run panel — preset {p.name}",
                         {"steps": self.steps, "d_model": self.d_model, "docs": self.docs}, self._run,
                         curves=self._curves, columns=self.COLUMNS, check=self._check,
                         formats={"parameters": "{:,}", "docs": "{:,}", "train_loss": "{:.3f}",
                                  "val_loss": "{:.3f}", "gap_closed": "{:.1%}"},
                         headline=["val_loss", "gap_closed"],
                         run_label=lambda s: f"{s['steps']} steps, d_model {s['d_model']}, {s['docs']:,} docs")

    @staticmethod
    def _check(settings: dict) -> None:
        if settings["d_model"] % WIDTH_STEP:
            raise ValueError(f"d_model must be a multiple of {WIDTH_STEP} (so that the attention heads, "
                             f"{WIDTH_STEP}+ dimensions each, divide it evenly); got {settings['d_model']}")

    def check(self, steps: int, d_model: int, docs: int) -> None:
        """Raise ValueError naming the slider if a value is out of its range."""
        self.validate({"steps": steps, "d_model": d_model, "docs": docs})

    def _curves(self, runs: dict, faded: dict):
        stats = self.stats or {}
        return plots.loss_figure(runs, stats.get("entropy_floor"), stats.get("unigram_entropy"), self.TITLE,
                                 faded=faded)

    def figure(self):
        """Every finished run's curves, with the entropy floor and the unigram entropy."""
        return self.curves_figure()

    def _run(self, settings: dict, on_history) -> dict:
        from labkit import world
        from labkit.pipeline import gap_closed
        from labkit.experiments.pretraining import quick_run

        if self.stats is None:  # lines to draw before the first run ends (the floor is exact already)
            p = self.preset
            self.stats = world.entropy_stats(world.corpus("validation", p.n_val_docs, p.world_seed))
        _, _, result, stats = quick_run(self.preset, n_train_docs=int(settings["docs"]),
                                        d_model=int(settings["d_model"]), steps=int(settings["steps"]),
                                        callback=on_history, progress=False)
        self.stats = stats
        return Run(row={"steps": int(settings["steps"]), "d_model": int(settings["d_model"]),
                        "parameters": int(result.parameters), "docs": int(settings["docs"]),
                        "train_loss": result.train_loss, "val_loss": result.val_loss,
                        "gap_closed": gap_closed(result.val_loss, stats), "seconds": result.seconds},
                   history=result.history)


def pretrain_panel(preset: Preset | str | None = None) -> PretrainPanel:
    """The pretraining run panel of lab 01 for ``preset`` (default: the active preset)."""
    return PretrainPanel(resolve_preset(preset))


# ------------------------------------------------------------------------------- lab 02 and 03

class ExperimentPanel(RunPanel):
    """A run panel for an experiment scored by a few rates: a metric-vs-setting plot and a table.

    ``run(**settings)`` (with ``callback=`` when ``live_curves``) trains and returns a ``Run``. The
    summary figure plots the ``metrics`` columns (rates in [0, 1], drawn in %) against the column
    ``x``; with ``group``, one line per value of that column.
    """

    def __init__(self, title: str, sliders: dict[str, W.ValueWidget], run, x: str, metrics: list[str],
                 y_title: str = "exact match (% of held-out examples)", live_curves: bool = False,
                 formats: dict[str, str] | None = None, run_label=None, group: str | None = None):
        self.x, self.metrics, self.y_title, self.group = x, list(metrics), y_title, group

        def run_settings(settings, on_history):
            return run(**settings, callback=on_history) if live_curves else run(**settings)

        super().__init__(title, sliders, run_settings, summary=self._summary,
                         curves=self._curves if live_curves else None, run_label=run_label, headline=self.metrics,
                         formats={**{m: "{:.1%}" for m in metrics}, **(formats or {})},
                         intro="Choose a setting and press <b>Train</b>. Each run fine-tunes the pretrained "
                               "model afresh.")

    def _curves(self, runs: dict, faded: dict):
        return plots.loss_figure(runs, title=f"{self.title}: training loss", faded=faded)

    def _summary(self, table):
        return plots.metric_lines(table, self.x, self.metrics, self.title, self.y_title, group=self.group)


def imbalance_panel(preset: Preset | str | None = None) -> ExperimentPanel:
    """Lab 02: slide the share of arithmetic in a fixed SFT budget; see both tasks' exact match."""
    from labkit.experiments.instruction import imbalance_experiment

    preset = resolve_preset(preset)
    slider = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="arithmetic share",
                           continuous_update=False)
    return ExperimentPanel("Data imbalance: arithmetic vs classify in one budget", {"arithmetic_share": slider},
                           lambda arithmetic_share: imbalance_experiment(arithmetic_share, preset),
                           x="arithmetic share", metrics=["arithmetic", "classify"],
                           formats={"arithmetic share": "{:.0%}", "examples": "{:,}"})


def noise_panel(preset: Preset | str | None = None) -> ExperimentPanel:
    """Lab 02: quality vs quantity — training-set size and share of wrong answers, same compute."""
    from labkit.experiments.instruction import noise_experiment

    preset = resolve_preset(preset)
    top = preset.sft_demos.per_category
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

    Each run's row: rank, trainable parameters, exact match, seconds, training-state memory. The
    last run's model is kept in ``panel.last_model`` (for merging).
    """
    from labkit.experiments.instruction import lora_experiment

    preset = resolve_preset(preset)
    slider = W.IntSlider(value=8, min=0, max=64, description="rank (0 = full)", continuous_update=False)
    return LoRAPanel("LoRA rank sweep", {"rank": slider},
                     lambda rank, callback=None: lora_experiment(rank or None, preset, callback=callback),
                     x="trainable parameters", metrics=["exact_match"], live_curves=True,
                     formats={"trainable parameters": "{:,}", "trainable share": "{:.1%}",
                              "training state MB": "{:.2f}", "peak GPU MB": "{:.0f}"},
                     run_label=lambda s: "full fine-tuning" if s["rank"] == 0 else f"LoRA rank {s['rank']}")


class LoRAPanel(ExperimentPanel):
    """The rank panel: the last run's model and tokenizer stay at hand for merging."""

    @property
    def last_model(self):
        return self.last.get("model")

    @property
    def last_tokenizer(self):
        return self.last.get("tokenizer")


# ------------------------------------------------------------------------------- labs 05-07: the policy methods

def _setting_text(name: str, value) -> str:
    """A setting in a run's label: its header and value (``ε 0.30``, ``LoRA rank 8`` or ``full``)."""
    if name == "rank":
        return f"LoRA rank {value}" if value else "full"
    label, form = plots.COLUMNS.get(name, (name, "{}"))
    return f"{label} {form.format(value)}"


@dataclass(frozen=True)
class PolicySpec:
    """What makes a policy method's run panel: sliders, the experiment it runs, its columns and figures.

    The sliders' names are the experiment's keyword arguments and the row's setting columns; the
    ``results`` are the row's result columns (report keys; their headers and formats in
    :data:`labkit.plots.COLUMNS`).
    """
    method: str
    sliders: Callable[[Preset], dict]                 # preset -> {name: slider}, the preset's settings as defaults
    run: Callable[..., Run]                           # run(preset=, callback=, **settings) -> Run
    results: tuple[str, ...]                          # the row's result columns
    headline: tuple[str, ...]                         # the results the status line reports
    curves: Callable                                  # curves(panel, runs, faded) -> figure of the live curves
    summary: Callable                                 # summary(panel, table) -> figure of the runs
    progress: Callable[[dict], str]                   # a logged point -> the status line while training
    intro: Callable[[Preset], str]                    # preset -> what one run trains


class PolicyPanel(RunPanel):
    """One run panel for the policy methods (PPO, DPO, GRPO), configured by a :class:`PolicySpec`.

    Each run starts from the stage's starting policy with the preset's budget and the sliders'
    settings; live curves while it trains; each finished run's row (its settings and results) in
    the table and on the summary figure. ``panel.last`` holds the last run's outputs (its
    ``evaluation`` with every answer, or ``after`` for GRPO's word problems, the trained policy, …).
    """

    def __init__(self, spec: PolicySpec, preset: Preset, **run_options):
        from labkit.world import preferences as prefs

        self.spec, self.preset, self.run_options = spec, preset, run_options
        self.best_gold = prefs.best_mean_gold_reward(prefs.alignment_prompts("heldout"))
        sliders = spec.sliders(preset)
        columns = [*sliders, *spec.results]
        super().__init__(f"{spec.method} run panel — preset {preset.name}" + "".join(
                            f", {k.replace('_', ' ')} '{v}'" for k, v in run_options.items()), sliders, self._run,
                         curves=lambda runs, faded: spec.curves(self, runs, faded),
                         summary=lambda table: spec.summary(self, table), columns=columns,
                         formats=plots.column_formats(columns), headline=list(spec.headline),
                         run_label=lambda settings: ", ".join(_setting_text(k, v) for k, v in settings.items()),
                         intro=f"Choose settings and press <b>Train</b>. Each run starts from {spec.intro(preset)}.")

    def _progress_text(self, point: dict) -> str:
        return self.spec.progress(point)

    def _run(self, settings: dict, on_history) -> Run:
        return self.spec.run(preset=self.preset, callback=on_history, **self.run_options, **settings)


def _gold_vs_kl(panel: PolicyPanel, table):
    return plots.runs_scatter(table, "kl", "gold_reward", "Each run: held-out gold reward vs KL to the SFT policy",
                              "KL(π ‖ SFT) (nats per answer)", "gold reward (points per answer)", label="run",
                              best=panel.best_gold)


def _ppo_run(preset, callback, reward_stage, eps, beta, rank, lr):
    from labkit.experiments.alignment import ppo_experiment

    return ppo_experiment(float(eps), float(beta), int(rank), float(lr), preset, reward_stage=reward_stage,
                          callback=callback)


def _dpo_run(preset, callback, beta, rank, lr):
    from labkit.experiments.alignment import dpo_experiment

    return dpo_experiment(float(beta), int(rank), float(lr), preset, callback=callback)


def _grpo_run(preset, callback, group_size, eps, beta, iterations):
    from labkit.experiments.grpo import grpo_experiment

    return grpo_experiment(int(group_size), float(eps), float(beta), preset=preset, iterations=int(iterations),
                           callback=callback)


def _rank_slider(value: int) -> W.IntSlider:
    return W.IntSlider(value=value, min=0, max=32, description="LoRA rank (0 = full)", continuous_update=False)


# Lab 05: ε, β, LoRA rank and learning rate. Live curves: proxy reward, held-out gold reward, KL to SFT.
PPO_SPEC = PolicySpec(
    method="PPO",
    sliders=lambda p: {
        "eps": W.FloatSlider(value=p.ppo.eps, min=0.05, max=0.5, step=0.05, description="clip range ε",
                             continuous_update=False),
        "beta": W.FloatSlider(value=p.ppo.beta, min=0.0, max=0.5, step=0.01, description="KL coefficient β",
                              continuous_update=False),
        "rank": _rank_slider(p.ppo.lora_rank),
        "lr": W.FloatLogSlider(value=p.ppo.effective_lr, base=10, min=-5, max=-2, step=0.25,
                               description="learning rate", readout_format=".1e", continuous_update=False)},
    run=_ppo_run,
    results=("win_rate", "gold_reward", "sft_gold_reward", "kl", "proxy_reward", "train_seconds",
             "trainable_parameters"),
    headline=("win_rate", "gold_reward", "kl"),
    curves=lambda panel, runs, faded: plots.ppo_curves(
        runs, faded, title="PPO runs (live)", best_gold=panel.best_gold,
        sft_gold=panel.runs[-1]["sft_gold_reward"] if panel.runs else None),
    summary=_gold_vs_kl,
    progress=lambda point: ("judging the SFT policy on the held-out prompts" if "proxy" not in point else
                            f"iteration {point['step']}: proxy {point['proxy']:.2f}, KL {point['kl']:.2f}"),
    intro=lambda p: f"the SFT policy ({p.ppo.iterations} PPO iterations)")

# Lab 06: β on a log scale, LoRA rank and learning rate. Live curves: the implicit-reward margin, the
# share of pairs ranked right, log π of the chosen and the rejected answers.
DPO_SPEC = PolicySpec(
    method="DPO",
    sliders=lambda p: {
        "beta": W.FloatLogSlider(value=p.dpo.beta, base=10, min=-2, max=0, step=0.1, description="DPO strength β",
                                 readout_format=".3g", continuous_update=False),
        "rank": _rank_slider(p.dpo.lora_rank),
        "lr": W.FloatLogSlider(value=p.dpo.effective_lr, base=10, min=-5, max=-2, step=0.1,
                               description="learning rate", readout_format=".1e", continuous_update=False)},
    run=_dpo_run,
    results=("win_rate", "gold_reward", "sft_gold_reward", "kl", "implicit_accuracy", "chosen_logratio",
             "rejected_logratio", "train_seconds", "trainable_parameters"),
    headline=("win_rate", "gold_reward", "kl", "implicit_accuracy"),
    curves=lambda panel, runs, faded: plots.dpo_curves(runs, faded, title="DPO runs (live)"),
    summary=_gold_vs_kl,
    progress=lambda point: (f"step {point['step']}: loss {point['train_loss']:.3f}, margin "
                            f"{point.get('margin', 0):.2f}, accuracy {point.get('accuracy', 0):.0%}"),
    intro=lambda p: f"the SFT policy ({p.dpo.train_pairs:,} preference pairs, {p.dpo.epochs:g} epoch)")

# Lab 07: group size G, clip range ε, KL penalty β and updates per batch μ (at μ = 1 the policy that
# sampled a batch is the one updated on it: the ratio is 1 and ε has nothing to clip, as the
# "clipped" column shows). Live curves: reward mean and spread, zero-variance groups, answer length.
GRPO_SPEC = PolicySpec(
    method="GRPO",
    sliders=lambda p: {
        "group_size": W.SelectionSlider(options=[2, 4, 8, 16], value=p.grpo.group_size if p.grpo.group_size in
                                        (2, 4, 8, 16) else 8, description="group size G", continuous_update=False),
        "eps": W.FloatSlider(value=p.grpo.eps, min=0.05, max=0.5, step=0.05, description="clip range ε",
                             continuous_update=False),
        "beta": W.FloatSlider(value=p.grpo.beta, min=0.0, max=0.2, step=0.01, description="KL penalty β",
                              continuous_update=False),
        "iterations": W.IntSlider(value=p.grpo.iterations, min=1, max=4, description="updates per batch μ",
                                  continuous_update=False)},
    run=_grpo_run,
    results=("accuracy", "sft_accuracy", "sampled_accuracy", "worked_share", "length", "zero_std_share",
             "clip_fraction", "train_seconds", "seconds_per_step"),
    headline=("accuracy", "sft_accuracy", "worked_share"),
    curves=lambda panel, runs, faded: plots.grpo_curves(runs, faded, title="GRPO runs (live)"),
    summary=lambda panel, table: plots.accuracy_before_after(
        table, title="Each run: held-out accuracy before → after GRPO"),
    progress=lambda point: (f"step {point['step']}: reward {point.get('reward', 0):.2f}, zero-variance groups "
                            f"{point.get('zero_std_share', 0):.0%}, length {point.get('length', 0):.1f}"),
    intro=lambda p: (f"the word-problem SFT policy ({p.grpo.steps} steps of {p.grpo.prompts_per_step} problems "
                     "× G answers; a larger G samples more per step and takes longer)"))


def ppo_panel(preset: Preset | str | None = None, reward_stage: str = "reward") -> PolicyPanel:
    """Lab 05's PPO run panel for ``preset`` (default: the active preset), against the reward model of
    ``reward_stage``: ε, β, LoRA rank (0 = full) and learning rate."""
    return PolicyPanel(PPO_SPEC, resolve_preset(preset), reward_stage=reward_stage)


def dpo_panel(preset: Preset | str | None = None) -> PolicyPanel:
    """Lab 06's DPO run panel for ``preset`` (default: the active preset): β (log scale, 0.01 to 1), LoRA
    rank (0 = full) and learning rate, on the world's preference pairs."""
    return PolicyPanel(DPO_SPEC, resolve_preset(preset))


def grpo_panel(preset: Preset | str | None = None) -> PolicyPanel:
    """Lab 07's GRPO run panel for ``preset`` (default: the active preset): group size G, clip range ε,
    KL penalty β and updates per batch μ, on the word problems with the exact-answer reward."""
    return PolicyPanel(GRPO_SPEC, resolve_preset(preset))

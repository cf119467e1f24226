"""Run panels: sliders + a Train button that trains for real, live curves, runs compared.

Every panel is a :class:`RunPanel`: a title, a few sliders, a function that trains once with the
sliders' settings, and three areas drawn through :class:`labkit.plots.LiveFigure` — the live
training curves (earlier runs pale behind the current one), a summary figure of the runs (a metric
against a setting), and a table of every finished run. Lab 01's pretraining panel, lab 02's and
03's experiment panels, lab 05's PPO panel (ε, β, LoRA rank, learning rate), and the coming DPO/GRPO
panels (β, group size) are all RunPanels.
"""
from __future__ import annotations

import time
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
        return ", ".join(f"{key} {self.formats.get(key, '{}').format(row[key])}" for key in keys
                         if isinstance(row.get(key), (int, float)))

    def runs_table(self) -> pd.DataFrame:
        """One row per finished run (index ``run``): its settings and results."""
        table = pd.DataFrame(self.runs, columns=None if self.columns is None else ["run", *self.columns])
        return table.set_index("run") if len(table.columns) else table

    def styled_table(self):
        """:meth:`runs_table` formatted for reading (shares in %, seconds to 0.1 s, blanks as "—")."""
        table = self.runs_table()
        return table.style.format({c: f for c, f in self.formats.items() if c in table.columns}, na_rep="—")

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


# ------------------------------------------------------------------------------- lab 05: PPO

class PPOPanel(RunPanel):
    """Lab 05: sliders ε, β, LoRA rank (0 = full) and learning rate + Train: real PPO runs, compared.

    Each run starts from the SFT policy and optimises the reward model (``reward_stage``) with the
    preset's PPO budget. Live curves: proxy reward, held-out gold reward, KL to SFT; the table:
    win rate vs SFT, gold, KL, time, trainable parameters. The last run's evaluation (its answers
    beside the SFT's) is in ``panel.last["evaluation"]``.
    """

    COLUMNS = ["ε", "β", "rank", "lr", "win rate", "gold", "SFT gold", "KL", "proxy", "seconds", "trainable parameters"]

    def __init__(self, preset: Preset | None = None, reward_stage: str = "reward"):
        from labkit.world import preferences as prefs

        self.preset = p = preset or get_preset()
        self.reward_stage = reward_stage
        self.best_gold = prefs.best_mean_gold_reward(prefs.alignment_prompts("heldout"))
        sliders = {
            "eps": W.FloatSlider(value=p.ppo.eps, min=0.05, max=0.5, step=0.05, description="clip range ε",
                                 continuous_update=False),
            "beta": W.FloatSlider(value=p.ppo.beta, min=0.0, max=0.5, step=0.01, description="KL coefficient β",
                                  continuous_update=False),
            "rank": W.IntSlider(value=p.ppo.lora_rank, min=0, max=32, description="LoRA rank (0 = full)",
                                continuous_update=False),
            "lr": W.FloatLogSlider(value=p.ppo.effective_lr, base=10, min=-5, max=-2, step=0.25, description="learning rate",
                                   readout_format=".1e", continuous_update=False),
        }
        super().__init__(f"PPO run panel — preset {p.name}, reward model '{reward_stage}'", sliders, self._run,
                         curves=self._curves, summary=self._summary, columns=self.COLUMNS,
                         formats={"ε": "{:.2f}", "β": "{:.2f}", "lr": "{:.1e}", "win rate": "{:.1%}", "gold": "{:.2f}",
                                  "SFT gold": "{:.2f}", "KL": "{:.2f}", "proxy": "{:.2f}",
                                  "trainable parameters": "{:,}"},
                         headline=["win rate", "gold", "KL"],
                         run_label=lambda s: (f"ε {s['eps']:.2f}, β {s['beta']:.2f}, "
                                              f"{'full' if not s['rank'] else 'LoRA r ' + str(s['rank'])}, "
                                              f"lr {s['lr']:.0e}"),
                         intro="Choose settings and press <b>Train</b>. Each run starts from the SFT policy "
                               f"({p.ppo.iterations} PPO iterations).")

    def _progress_text(self, point: dict) -> str:
        if "proxy" not in point:  # the evaluation before the first iteration
            return "judging the SFT policy on the held-out prompts"
        return f"iteration {point['step']}: proxy {point['proxy']:.2f}, KL {point['kl']:.2f}"

    def _curves(self, runs: dict, faded: dict):
        sft_gold = self.runs[-1]["SFT gold"] if self.runs else None
        return plots.ppo_curves(runs, faded, title="PPO runs (live)", best_gold=self.best_gold, sft_gold=sft_gold)

    def _summary(self, table):
        return plots.runs_scatter(table, "KL", "gold", "Each run: held-out gold reward vs KL to the SFT policy",
                                  "KL(π ‖ SFT) (nats per answer)", "gold reward (points per answer)",
                                  label="run", best=self.best_gold)

    def _run(self, settings: dict, on_history) -> Run:
        from labkit.experiments.alignment import ppo_experiment

        return ppo_experiment(float(settings["eps"]), float(settings["beta"]), int(settings["rank"]),
                              float(settings["lr"]), self.preset, reward_stage=self.reward_stage,
                              callback=on_history)


def ppo_panel(preset: Preset | str | None = None, reward_stage: str = "reward") -> PPOPanel:
    """The PPO run panel of lab 05 for ``preset`` (default: the active preset)."""
    return PPOPanel(resolve_preset(preset), reward_stage)


# ------------------------------------------------------------------------------- lab 06: DPO

class DPOPanel(RunPanel):
    """Lab 06: sliders β (log scale, 0.01 to 1), LoRA rank (0 = full) and learning rate + Train.

    Each run is a real DPO run from the SFT policy on the world's preference pairs (the ``dpo``
    stage's recipe with these settings). Live curves: the implicit-reward margin, the share of
    pairs ranked right, and the log-probabilities of the chosen and the rejected answers; the table:
    win rate vs SFT, gold, KL to SFT, the implicit reward's held-out accuracy, and how far log π of
    the held-out chosen and rejected answers moved. ``panel.last["evaluation"]`` holds the last
    run's answers beside the SFT policy's.
    """

    COLUMNS = ["β", "rank", "lr", "win rate", "gold", "SFT gold", "KL", "implicit accuracy", "Δ log π chosen",
               "Δ log π rejected", "seconds", "trainable parameters"]

    def __init__(self, preset: Preset | None = None):
        from labkit.world import preferences as prefs

        self.preset = p = preset or get_preset()
        self.best_gold = prefs.best_mean_gold_reward(prefs.alignment_prompts("heldout"))
        sliders = {
            "beta": W.FloatLogSlider(value=p.dpo.beta, base=10, min=-2, max=0, step=0.1, description="DPO strength β",
                                     readout_format=".3g", continuous_update=False),
            "rank": W.IntSlider(value=p.dpo.lora_rank, min=0, max=32, description="LoRA rank (0 = full)",
                                continuous_update=False),
            "lr": W.FloatLogSlider(value=p.dpo.effective_lr, base=10, min=-5, max=-2,
                                   step=0.1, description="learning rate", readout_format=".1e",
                                   continuous_update=False),
        }
        super().__init__(f"DPO run panel — preset {p.name}", sliders, self._run, curves=self._curves,
                         summary=self._summary, columns=self.COLUMNS,
                         formats={"β": "{:.3g}", "lr": "{:.1e}", "win rate": "{:.1%}", "gold": "{:.2f}",
                                  "SFT gold": "{:.2f}", "KL": "{:.2f}", "implicit accuracy": "{:.1%}",
                                  "Δ log π chosen": "{:+.2f}", "Δ log π rejected": "{:+.2f}",
                                  "trainable parameters": "{:,}"},
                         headline=["win rate", "gold", "KL", "implicit accuracy"],
                         run_label=lambda s: (f"β {s['beta']:.3g}, "
                                              f"{'full' if not s['rank'] else 'LoRA r ' + str(s['rank'])}, "
                                              f"lr {s['lr']:.0e}"),
                         intro="Choose settings and press <b>Train</b>. Each run starts from the SFT policy "
                               f"({p.dpo.train_pairs:,} preference pairs, {p.dpo.epochs:g} epoch).")

    def _progress_text(self, point: dict) -> str:
        return (f"step {point['step']}: loss {point['train_loss']:.3f}, margin {point.get('margin', 0):.2f}, "
                f"accuracy {point.get('accuracy', 0):.0%}")

    def _curves(self, runs: dict, faded: dict):
        return plots.dpo_curves(runs, faded, title="DPO runs (live)")

    def _summary(self, table):
        return plots.runs_scatter(table, "KL", "gold", "Each run: held-out gold reward vs KL to the SFT policy",
                                  "KL(π ‖ SFT) (nats per answer)", "gold reward (points per answer)",
                                  label="run", best=self.best_gold)

    def _run(self, settings: dict, on_history) -> Run:
        from labkit.experiments.alignment import dpo_experiment

        return dpo_experiment(float(settings["beta"]), int(settings["rank"]), float(settings["lr"]), self.preset,
                              callback=on_history)


def dpo_panel(preset: Preset | str | None = None) -> DPOPanel:
    """The DPO run panel of lab 06 for ``preset`` (default: the active preset)."""
    return DPOPanel(resolve_preset(preset))


# ------------------------------------------------------------------------------- lab 07: GRPO

class GRPOPanel(RunPanel):
    """Lab 07: sliders group size G, clip range ε, KL penalty β and updates per batch μ + Train: real
    GRPO runs, compared. (At μ = 1 the policy that sampled a batch is the one updated on it, so the
    ratio is 1 and ε has nothing to clip: the table's ``clipped`` column shows it.)

    Each run starts from the ``sft_math`` policy and trains on the word problems with the exact-answer
    reward (the ``grpo`` stage's recipe with these settings; the number of problems per step stays
    the preset's, so a larger G samples more answers per step and takes longer). Live curves:
    reward mean and spread, the share of zero-variance groups, answer length; a figure of held-out
    accuracy before and after each run; the table. ``panel.last["after"]`` holds the last run's
    held-out answers.
    """

    COLUMNS = ["G", "ε", "β", "μ", "accuracy", "SFT accuracy", "sampled accuracy", "shows working", "length",
               "zero-variance groups", "clipped", "seconds", "seconds per step"]

    def __init__(self, preset: Preset | None = None):
        self.preset = p = preset or get_preset()
        sliders = {
            "group_size": W.SelectionSlider(options=[2, 4, 8, 16], value=p.grpo.group_size if p.grpo.group_size in
                                            (2, 4, 8, 16) else 8, description="group size G",
                                            continuous_update=False),
            "eps": W.FloatSlider(value=p.grpo.eps, min=0.05, max=0.5, step=0.05, description="clip range ε",
                                 continuous_update=False),
            "beta": W.FloatSlider(value=p.grpo.beta, min=0.0, max=0.2, step=0.01, description="KL penalty β",
                                  continuous_update=False),
            "iterations": W.IntSlider(value=p.grpo.iterations, min=1, max=4, description="updates per batch μ",
                                      continuous_update=False),
        }
        super().__init__(f"GRPO run panel — preset {p.name}", sliders, self._run, curves=self._curves,
                         summary=self._summary, columns=self.COLUMNS,
                         formats={"ε": "{:.2f}", "β": "{:.2f}", "accuracy": "{:.1%}", "SFT accuracy": "{:.1%}",
                                  "sampled accuracy": "{:.1%}", "shows working": "{:.0%}", "length": "{:.1f}",
                                  "zero-variance groups": "{:.0%}", "clipped": "{:.2%}", "seconds per step": "{:.2f}"},
                         headline=["accuracy", "SFT accuracy", "shows working"],
                         run_label=lambda s: f"G {s['group_size']}, ε {s['eps']:.2f}, β {s['beta']:.2f}, μ {s['iterations']}",
                         intro="Choose settings and press <b>Train</b>. Each run starts from the word-problem SFT "
                               f"policy ({p.grpo.steps} steps of {p.grpo.prompts_per_step} problems × G answers).")

    def _progress_text(self, point: dict) -> str:
        return (f"step {point['step']}: reward {point.get('reward', 0):.2f}, zero-variance groups "
                f"{point.get('zero_std_share', 0):.0%}, length {point.get('length', 0):.1f}")

    def _curves(self, runs: dict, faded: dict):
        return plots.grpo_curves(runs, faded, title="GRPO runs (live)")

    def _summary(self, table):
        return plots.accuracy_before_after(table, title="Each run: held-out accuracy before → after GRPO")

    def _run(self, settings: dict, on_history) -> Run:
        from labkit.experiments.grpo import grpo_experiment

        return grpo_experiment(int(settings["group_size"]), float(settings["eps"]), float(settings["beta"]),
                               preset=self.preset, iterations=int(settings["iterations"]), callback=on_history)


def grpo_panel(preset: Preset | str | None = None) -> GRPOPanel:
    """The GRPO run panel of lab 07 for ``preset`` (default: the active preset)."""
    return GRPOPanel(resolve_preset(preset))

"""Plotly figures shared by the labs. Figures live here and nowhere else.

Every builder returns a ``plotly.graph_objects.Figure`` with a title and titled axes (with units),
so a notebook cell ends with ``plots.loss_figure(...)`` and the figure appears. Nothing here trains
or computes losses; the builders only draw numbers they are given.

Rendering. :func:`setup` picks a plotly renderer once per session: ``colab`` in Google Colab, and
``plotly_mimetype`` in Jupyter (JupyterLab, Notebook 7, VS Code). The mimetype renderer sends only
the figure's JSON, a few kB; the front end draws it with the plotly.js it already ships, offline.
Renderers that embed plotly.js itself would add megabytes to every saved notebook. Figures also
use a small template of their own (:data:`TEMPLATE`), since plotly's default one adds ~7 kB of
JSON to every figure.

Live curves. :class:`LiveFigure` is the one mechanism for a figure that changes while a cell runs:
an ``ipywidgets.Output`` area that is cleared and redrawn with the new figure. (Updating a plotly
output through an IPython display handle does not redraw in JupyterLab: seen in a browser.) Every
live plot and run panel draws through it. :class:`LiveLossPlot` is a training callback built on it
for ``labkit.pipeline.ensure``, ``labkit.train.pretrain.pretrain`` and ``labkit.experiments.pretraining.quick_run``.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from labkit import runtime

LOSS_AXIS = "loss (nats/token)"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22"]
FLOOR_COLOR = "#2ca02c"     # the entropy floor: the truth, in green everywhere
UNIGRAM_COLOR = "#7f7f7f"   # the no-context baseline, in grey everywhere

_axis = dict(showgrid=True, gridcolor="#e6e6e6", zeroline=False, showline=True, linecolor="#444",
             ticks="outside", automargin=True)
TEMPLATE = go.layout.Template(layout=go.Layout(
    font=dict(size=13),
    colorway=COLORS,
    plot_bgcolor="white",
    paper_bgcolor="white",
    xaxis=_axis,
    yaxis=_axis,
    margin=dict(l=70, r=30, t=60, b=60),
    legend=dict(bgcolor="rgba(255,255,255,0.7)"),
))

_renderer: str | None = None


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab, or nbval/nbclient)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def setup(renderer: str | None = None) -> str:
    """Choose the plotly renderer for this session and return its name.

    ``renderer`` wins if given. Otherwise: ``colab`` in Google Colab; the ``PLOTLY_RENDERER``
    environment variable if you set one; ``plotly_mimetype`` in any other Jupyter kernel (small
    saved notebooks, works offline); and plotly's own default elsewhere (e.g. a script).
    """
    global _renderer
    if renderer is None:
        if runtime.in_colab():
            renderer = "colab"
        elif os.environ.get("PLOTLY_RENDERER"):
            renderer = os.environ["PLOTLY_RENDERER"]
        elif _in_kernel():
            renderer = "plotly_mimetype"
        else:
            renderer = pio.renderers.default
    if renderer:
        pio.renderers.default = renderer
    _renderer = renderer
    return renderer


def _ensure_setup() -> None:
    if _renderer is None:
        setup()


def _figure(title: str, x_title: str, y_title: str, **layout) -> go.Figure:
    """An empty figure in the labkit style with a title and both axis titles."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.02),
                      xaxis_title=x_title, yaxis_title=y_title, **layout)
    return fig


def _reference_lines(fig: go.Figure, floor: float | None, unigram: float | None) -> None:
    """Horizontal lines for the entropy floor and the unigram entropy, labelled with their values."""
    if unigram is not None:
        fig.add_hline(y=unigram, line=dict(color=UNIGRAM_COLOR, dash="dash", width=1.5),
                      annotation_text=f"unigram entropy {unigram:.3f} (no context)",
                      annotation_position="top right", annotation_font_color=UNIGRAM_COLOR)
    if floor is not None:
        fig.add_hline(y=floor, line=dict(color=FLOOR_COLOR, dash="dot", width=2),
                      annotation_text=f"entropy floor {floor:.3f} (no model can beat it)",
                      annotation_position="bottom right", annotation_font_color=FLOOR_COLOR)


# ------------------------------------------------------------------------------- cross-entropy

def neg_log_figure(p: float | Sequence[float] | None = None, *, unit: str = "nats") -> go.Figure:
    """The curve L = −log p(correct) over p in (0, 1], with a marker at each ``p``.

    ``unit`` is ``"nats"`` (natural log, as in training) or ``"bits"`` (log base 2).
    """
    if unit not in ("nats", "bits"):
        raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")
    scale = 1.0 if unit == "nats" else 1 / math.log(2)
    xs = [round(0.005 + i * (1 - 0.005) / 149, 4) for i in range(150)]
    fig = _figure(f"Cross-entropy of one prediction: L = −log p(correct), in {unit}",
                  "p(correct token) (probability, no unit)", f"loss L ({unit})")
    fig.add_trace(go.Scatter(x=xs, y=[round(-math.log(x) * scale, 4) for x in xs], mode="lines",
                             name=f"−log p ({unit})", line=dict(color=COLORS[0], width=3),
                             hovertemplate="p = %{x:.3f}<br>L = %{y:.3f}<extra></extra>"))
    marks = [] if p is None else ([p] if isinstance(p, (int, float)) else list(p))
    for i, value in enumerate(marks):
        if not 0 < value <= 1:
            raise ValueError(f"p must lie in (0, 1], got {value}")
        loss = -math.log(value) * scale
        fig.add_trace(go.Scatter(
            x=[value], y=[loss], mode="markers+text", name=f"p = {value:g}",
            marker=dict(size=13, color=COLORS[1 + i % (len(COLORS) - 1)]),
            text=[f"p = {value:g} → L = {loss:.3f} {unit}"], textposition="top right",
            hovertemplate="p = %{x:.3f}<br>L = %{y:.3f}<extra></extra>"))
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, -math.log(0.005) * scale * 1.02])
    fig.update_layout(showlegend=False)
    return fig


def prob_bars(words: Sequence[str], probs: Sequence[float], title: str = "Next-token probabilities") -> go.Figure:
    """A bar per candidate token with its probability (used by the temperature explorer)."""
    fig = _figure(title, "candidate next token", "probability (0 to 1)")
    fig.add_trace(go.Bar(x=list(words), y=list(probs), marker_color=COLORS[0],
                         text=[f"{p:.2f}" for p in probs], textposition="outside",
                         hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.1])
    return fig


# ------------------------------------------------------------------------------- loss curves

def _as_runs(history_or_runs) -> dict[str, list[dict]]:
    """Accept one history (a list of dicts) or a mapping ``label -> history``."""
    if isinstance(history_or_runs, Mapping):
        return {str(k): list(v) for k, v in history_or_runs.items()}
    return {"": list(history_or_runs)}


_X_TITLES = {"step": "training step (optimiser updates)",
             "tokens": "tokens seen in training (predicted tokens)",
             "seconds": "training time (seconds)"}


def loss_figure(history_or_runs, floor: float | None = None, unigram: float | None = None,
                title: str = "Pretraining loss", *, x: str = "step", mark_min_val: bool = False,
                faded: Mapping[str, list[dict]] | None = None, y_title: str = LOSS_AXIS) -> go.Figure:
    """Train (dashed) and validation (solid) loss against ``x`` (``step``, ``tokens`` or ``seconds``).

    ``history_or_runs`` is a history as written by :func:`labkit.train.pretrain.pretrain` (a list of
    dicts with ``step``, ``tokens``, ``train_loss``, ``val_loss``) or a mapping ``label -> history``
    for several runs (one colour each). ``floor`` and ``unigram`` (nats/token) add labelled
    horizontal lines. ``mark_min_val`` marks each run's lowest validation loss. ``faded`` runs are
    drawn thin and pale behind the others (earlier runs, for comparison). ``y_title`` names the
    loss and its unit (default ``loss (nats/token)``; a per-pair loss says so).
    """
    if x not in _X_TITLES:
        raise ValueError(f"x must be one of {list(_X_TITLES)}, got {x!r}")
    fig = _figure(title, _X_TITLES[x], y_title, hovermode="x unified")
    runs = _as_runs(history_or_runs)
    colors = {label: COLORS[i % len(COLORS)] for i, label in enumerate([*(faded or {}), *runs])}
    for label, history in [*(faded or {}).items(), *runs.items()]:
        if not history:
            continue
        is_faded = faded is not None and label in faded and label not in runs
        xs = [h[x] for h in history]
        name = f"{label}: " if label else ""
        style = dict(color=colors[label], width=1.5 if is_faded else 2.5)
        opacity = 0.45 if is_faded else 1.0
        fig.add_trace(go.Scatter(x=xs, y=[h["train_loss"] for h in history], mode="lines+markers",
                                 name=f"{name}train", line=dict(dash="dash", **style), opacity=opacity,
                                 marker=dict(size=4), legendgroup=label))  # markers: one point shows too
        if not all("val_loss" in h for h in history):  # e.g. SFT logs training loss only
            continue
        fig.add_trace(go.Scatter(x=xs, y=[h["val_loss"] for h in history], mode="lines+markers",
                                 name=f"{name}validation", line=style, marker=dict(size=5),
                                 opacity=opacity, legendgroup=label))
        if mark_min_val and not is_faded:
            best = min(history, key=lambda h: h["val_loss"])
            fig.add_trace(go.Scatter(
                x=[best[x]], y=[best["val_loss"]], mode="markers+text",
                name=f"{name}lowest validation", marker=dict(size=12, symbol="star", color=colors[label]),
                text=[f"lowest val {best['val_loss']:.3f} at {x} {best[x]:,}"],
                textposition="top center", legendgroup=label))
    _reference_lines(fig, floor, unigram)
    return fig


class LiveFigure:
    """A figure that redraws in place while Python keeps running: an Output area, cleared and redrawn.

        live = LiveFigure()          # or embed ``live.out`` in a widget box (run panels do)
        live.show(fig)               # first call displays the area, later calls replace the figure

    JupyterLab, Notebook 7, VS Code and Colab redraw an ``ipywidgets.Output`` whenever the kernel
    writes into it, also in the middle of a long cell, so the learner watches the curve grow. The
    saved notebook keeps one figure (the last). Outside a notebook kernel (a script, a test) nothing
    is displayed; the latest figure is kept in ``.figure`` and ``.draws`` counts the redraws.
    """

    def __init__(self, *, embedded: bool = False):
        import ipywidgets

        self.out = ipywidgets.Output()
        self.figure: go.Figure | None = None
        self.draws = 0
        self._displayed = embedded  # an embedded area is shown by the widget box that holds it

    def show(self, figure: go.Figure) -> None:
        """Make ``figure`` the one shown (displaying the area on the first call)."""
        self.figure = figure
        self.draws += 1
        if not _in_kernel():
            return
        _ensure_setup()
        from IPython.display import clear_output, display

        if not self._displayed:
            display(self.out)
            self._displayed = True
        with self.out:
            clear_output(wait=True)  # the old figure goes when the new one arrives: no flicker
            display(figure)

    def _ipython_display_(self):
        """Showing the object itself (a cell's last line) displays its area."""
        from IPython.display import display

        self._displayed = True
        display(self.out)


class LiveLossPlot:
    """A training callback that redraws the loss curves in place after every evaluation.

        live = LiveLossPlot(floor=stats["entropy_floor"], unigram=stats["unigram_entropy"])
        labkit.pipeline.ensure("pretrain", callback=live)   # curves grow while it trains
        live(saved_history)                                  # or draw a finished run's history

    Draws through a :class:`LiveFigure`, so the curve grows in JupyterLab while the run goes on and
    the saved notebook holds one figure. ``faded`` runs (``label -> history``) are drawn pale behind
    the live one; ``y_title`` names the loss and its unit (default: nats/token).
    """

    def __init__(self, floor: float | None = None, unigram: float | None = None,
                 title: str = "Pretraining loss (live)", *, x: str = "step", label: str = "",
                 faded: Mapping[str, list[dict]] | None = None, mark_min_val: bool = False,
                 y_title: str = LOSS_AXIS):
        self.floor, self.unigram, self.title, self.x, self.y_title = floor, unigram, title, x, y_title
        self.label, self.faded, self.mark_min_val = label, dict(faded or {}), mark_min_val
        self.live = LiveFigure()
        self.calls = 0

    @property
    def figure(self) -> go.Figure | None:
        """The figure drawn last (``None`` before the first call)."""
        return self.live.figure

    def __call__(self, history: list[dict]) -> None:
        self.calls += 1
        runs = {self.label: list(history)} if self.label else list(history)
        self.live.show(loss_figure(runs, self.floor, self.unigram, self.title, x=self.x,
                                   mark_min_val=self.mark_min_val, faded=self.faded, y_title=self.y_title))


# ------------------------------------------------------------------------------- experiments

# How the runs' numbers read in a table: the key (a report key, a PolicyRun field, a setting's name)
# -> (the header a learner reads, its format). One place for every run panel and lab 08's race.
COLUMNS = {
    "eps": ("ε", "{:.2f}"), "beta": ("β", "{:.3g}"), "rank": ("LoRA rank", "{}"), "lr": ("lr", "{:.1e}"),
    "group_size": ("G", "{}"), "iterations": ("μ", "{}"), "reward_model": ("reward model", "{}"),
    "pairs": ("pairs", "{}"), "method": ("method", "{}"),
    "gold_reward": ("gold", "{:.2f}"), "sft_gold_reward": ("SFT gold", "{:.2f}"), "helpfulness": ("helpfulness", "{:.2f}"),
    "safety": ("safety", "{:.2f}"), "proxy_reward": ("proxy", "{:.2f}"), "win_rate": ("win rate", "{:.1%}"),
    "win_low": ("win rate, 95 % low", "{:.1%}"), "win_high": ("win rate, 95 % high", "{:.1%}"),
    "gold_low": ("gold, 95 % low", "{:.2f}"), "gold_high": ("gold, 95 % high", "{:.2f}"),
    "kl": ("KL", "{:.2f}"), "kl_bound": ("KL bound", "{:.2f}"), "train_seconds": ("train seconds", "{:.1f}"), "peak_MB": ("peak MB", "{:,.0f}"),
    "trainable_parameters": ("trainable parameters", "{:,.0f}"),
    "answers_sampled": ("answers sampled in training", "{:,.0f}"),
    "implicit_accuracy": ("implicit accuracy", "{:.1%}"), "chosen_logratio": ("Δ log π chosen", "{:+.2f}"),
    "rejected_logratio": ("Δ log π rejected", "{:+.2f}"),
    "accuracy": ("accuracy", "{:.1%}"), "sft_accuracy": ("SFT accuracy", "{:.1%}"),
    "sampled_accuracy": ("sampled accuracy", "{:.1%}"), "sft_sampled_accuracy": ("SFT sampled accuracy", "{:.1%}"),
    "worked_share": ("shows working", "{:.0%}"), "right_working_share": ("working right", "{:.0%}"), "length": ("words per answer", "{:.1f}"),
    "zero_std_share": ("zero-variance groups", "{:.0%}"), "clip_fraction": ("clipped", "{:.2%}"),
    "seconds_per_step": ("seconds per step", "{:.2f}"),
}


def column_formats(columns: Sequence[str]) -> dict[str, str]:
    """The format of each of ``columns`` that :data:`COLUMNS` knows."""
    return {c: COLUMNS[c][1] for c in columns if c in COLUMNS}


def styled_table(table):
    """``table`` for reading: numbers formatted and headers relabelled as :data:`COLUMNS` says, blanks as "—"."""
    style = table.style.format(column_formats(table.columns), na_rep="—")
    return style.relabel_index([COLUMNS.get(c, (c,))[0] for c in table.columns], axis="columns")


def _rows(table) -> list[dict]:
    """A pandas DataFrame or a list of dicts, as a list of dicts."""
    return table.to_dict("records") if hasattr(table, "to_dict") else list(table)


def sweep_figure(table, floor: float | None = None, unigram: float | None = None,
                 title: str = "Model size vs loss") -> go.Figure:
    """Final losses against the number of parameters (log scale), one point per model.

    ``table`` rows need ``parameters``, ``val_loss`` and optionally ``train_loss`` and ``d_model``.
    """
    rows = sorted(_rows(table), key=lambda r: r["parameters"])
    fig = _figure(title, "parameters (count, log scale)", f"final {LOSS_AXIS}")
    labels = [f"d_model {r['d_model']}" if "d_model" in r else "" for r in rows]
    xs = [r["parameters"] for r in rows]
    fig.add_trace(go.Scatter(x=xs, y=[r["val_loss"] for r in rows], mode="lines+markers+text",
                             name="validation", text=labels, textposition="top center",
                             line=dict(color=COLORS[0], width=2.5), marker=dict(size=10)))
    if rows and "train_loss" in rows[0]:
        fig.add_trace(go.Scatter(x=xs, y=[r["train_loss"] for r in rows], mode="lines+markers",
                                 name="train", line=dict(color=COLORS[0], dash="dash", width=1.5)))
    fig.update_xaxes(type="log")
    _reference_lines(fig, floor, unigram)
    return fig


def accuracy_bars(table, title: str = "Shortcut learning: accuracy by evaluation set",
                  chance: float | None = 0.5, legend: str = "trained on {}") -> go.Figure:
    """Grouped bars of accuracy (%) per evaluation set, one colour per training set.

    ``table`` rows need ``trained on``, ``evaluated on`` and ``accuracy`` (a rate in [0, 1]).
    ``legend`` names each colour from its ``trained on`` value (e.g. ``"{} model"``).
    """
    rows = _rows(table)
    fig = _figure(title, "evaluation set", "accuracy (% of examples correct)", barmode="group")
    for i, trained_on in enumerate(dict.fromkeys(r["trained on"] for r in rows)):
        mine = [r for r in rows if r["trained on"] == trained_on]
        fig.add_trace(go.Bar(x=[r["evaluated on"] for r in mine], y=[100 * r["accuracy"] for r in mine],
                             name=legend.format(trained_on), marker_color=COLORS[i % len(COLORS)],
                             text=[f"{100 * r['accuracy']:.1f} %" for r in mine], textposition="outside"))
    if chance is not None:
        fig.add_hline(y=100 * chance, line=dict(color=UNIGRAM_COLOR, dash="dash"),
                      annotation_text=f"chance {100 * chance:.0f} %", annotation_position="bottom right")
    fig.update_yaxes(range=[0, 110])
    return fig


def metric_lines(table, x: str, metrics: Sequence[str], title: str,
                 y_title: str = "exact match (% of held-out examples)", group: str | None = None) -> go.Figure:
    """Rates (in [0, 1], drawn in %) against a setting ``x``: one line with markers per metric.

    With ``group`` (another setting), one line per metric and value of that setting, so runs that
    differ in two settings are not joined into one misleading line.
    """
    rows = sorted(_rows(table), key=lambda r: r[x]) if len(table) else []
    fig = _figure(title, x, y_title)
    groups = list(dict.fromkeys(r[group] for r in rows)) if group else [None]
    for i, (metric, value) in enumerate((m, g) for m in metrics for g in groups):
        mine = [r for r in rows if group is None or r[group] == value]
        name = metric if group is None else f"{metric}, {group} {value:,}" if isinstance(value, int) \
            else f"{metric}, {group} {value}"
        fig.add_trace(go.Scatter(x=[r[x] for r in mine], y=[100 * r[metric] for r in mine], name=name,
                                 mode="lines+markers", line=dict(color=COLORS[i % len(COLORS)]),
                                 marker=dict(size=9)))
    fig.update_yaxes(range=[0, 105])
    return fig


def lora_params_figure(m: int, n: int, r: int) -> go.Figure:
    """Trainable numbers of a rank-r LoRA update of an m×n matrix against r, with the full m·n line."""
    top = max(1, min(m, n))
    ranks = sorted({1, *[2 ** k for k in range(1, 13) if 2 ** k <= top], top, r})
    fig = _figure(f"LoRA vs full update of a {m:,}×{n:,} matrix", "rank r", "trainable numbers (log scale)")
    fig.add_trace(go.Scatter(x=ranks, y=[k * (m + n) for k in ranks], mode="lines+markers", name="LoRA r·(m+n)",
                             line=dict(color=COLORS[0])))
    fig.add_trace(go.Scatter(x=[r], y=[r * (m + n)], mode="markers+text", name=f"r = {r}",
                             text=[f"{r * (m + n):,}"], textposition="top left",
                             marker=dict(size=12, symbol="star", color=COLORS[1])))
    fig.add_trace(go.Scatter(x=[ranks[0], ranks[-1]], y=[m * n, m * n], mode="lines",
                             name=f"full update m·n = {m * n:,}", line=dict(color=UNIGRAM_COLOR, dash="dash")))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def bradley_terry_figure(gap: float | None = None) -> go.Figure:
    """P(chosen ≻ rejected) = σ(Δ) and the loss −log σ(Δ) against the reward gap Δ = r_chosen − r_rejected."""
    import math

    xs = [i / 10 for i in range(-60, 61)]
    fig = _figure("Bradley–Terry: preference probability and loss vs reward gap",
                  "reward gap Δ = r(chosen) − r(rejected)", "probability / loss (nats)")
    fig.add_trace(go.Scatter(x=xs, y=[1 / (1 + math.exp(-x)) for x in xs], name="P(chosen ≻ rejected) = σ(Δ)",
                             line=dict(color=COLORS[0])))
    fig.add_trace(go.Scatter(x=xs, y=[math.log1p(math.exp(-x)) for x in xs], name="loss −log σ(Δ)",
                             line=dict(color=COLORS[1])))
    if gap is not None:
        p = 1 / (1 + math.exp(-gap))
        fig.add_trace(go.Scatter(x=[gap, gap], y=[p, -math.log(p)], mode="markers+text", name=f"Δ = {gap:g}",
                                 text=[f"P = {p:.3f}", f"loss = {-math.log(p):.3f}"], textposition="top right",
                                 marker=dict(size=11, color=COLORS[2])))
    fig.update_yaxes(range=[0, 4])
    return fig


def calibration_figure(table, title: str = "Reward model calibration on held-out pairs") -> go.Figure:
    """Per bin of predicted P(a ≻ b): the share of labels that agreed, and the gold probability."""
    rows = _rows(table)
    fig = _figure(title, "predicted probability that a is preferred", "observed share / gold probability")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color=UNIGRAM_COLOR, dash="dash")))
    fig.add_trace(go.Scatter(x=[r["predicted"] for r in rows], y=[r["labels"] for r in rows], mode="lines+markers",
                             name="share of labels preferring a", line=dict(color=COLORS[0]),
                             text=[f"{r['pairs']} pairs" for r in rows]))
    fig.add_trace(go.Scatter(x=[r["predicted"] for r in rows], y=[r["gold"] for r in rows], mode="lines+markers",
                             name="gold probability (from the true reward)", line=dict(color=COLORS[1], dash="dot")))
    return fig


def best_of_n_figure(table, best: float | None = None,
                     title: str = "Best-of-n: proxy and gold reward vs KL to the SFT policy") -> go.Figure:
    """Proxy (reward-model) and gold reward of best-of-n answers against their KL to the SFT policy,
    one point per n.

    ``table`` has columns ``n``, ``proxy``, ``gold``, ``kl`` (estimated on the answers drawn) and
    optionally ``kl_bound`` (log n − (n − 1)/n), as :func:`labkit.evaluate.best_of_n` returns; the
    bound is shown in each point's label. The two rewards have different units, so the proxy gets
    the right-hand axis. ``best``: the best achievable gold reward, drawn as a line.
    """
    rows = sorted(_rows(table), key=lambda r: r["n"])
    fig = _figure(title, "KL(best-of-n ‖ SFT), on the answers drawn (nats)", "gold reward (points per answer)",
                  yaxis2=dict(title="proxy reward (reward-model score)", overlaying="y", side="right",
                              showgrid=False, automargin=True))
    kl = [r["kl"] for r in rows]
    labels = [f"n = {r['n']}" + (f" (bound {r['kl_bound']:.2f})" if "kl_bound" in r else "") for r in rows]
    fig.add_trace(go.Scatter(x=kl, y=[r["gold"] for r in rows], name="gold reward", mode="lines+markers+text",
                             text=labels, textposition="bottom right", line=dict(color=FLOOR_COLOR)))
    fig.add_trace(go.Scatter(x=kl, y=[r["proxy"] for r in rows], name="proxy reward (right axis)", yaxis="y2",
                             mode="lines+markers", line=dict(color=COLORS[1], dash="dash")))
    if best is not None:
        fig.add_hline(y=best, line=dict(color=UNIGRAM_COLOR, dash="dot"),
                      annotation_text=f"best achievable gold {best:.2f}", annotation_position="top left")
    # the right-hand axis needs the room the legend usually takes: legend above the plot instead
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.0),
                      margin=dict(l=70, r=90, t=90, b=60))
    return fig


def ppo_clip_figure(eps: float = 0.2, advantage: float = 2.0) -> go.Figure:
    """PPO's clipped objective L^CLIP = min(r·A, clip(r, 1−ε, 1+ε)·A) against the ratio r, for A > 0 and A < 0.

    Two panels (A = +advantage, A = −advantage): the objective (solid), the unclipped r·A (dashed),
    the flat region where its gradient is zero shaded (A > 0: r > 1+ε; A < 0: r < 1−ε), dotted lines
    at 1−ε and 1+ε, and markers at the lecture's two ratios 0.3/0.2 = 1.5 and 0.2/0.3 = 2/3.
    The curve is :func:`labkit.losses.ppo_clip_objective` itself, evaluated on 201 ratios.
    """
    import torch
    from plotly.subplots import make_subplots

    from labkit.losses import ppo_clip_objective

    a = abs(float(advantage))
    if not 0 < a < math.inf:
        raise ValueError(f"advantage must be a non-zero finite number, got {advantage!r}")
    r_max = 2.5
    xs = [round(i * r_max / 200, 4) for i in range(201)]
    worked = [1.5, 2 / 3]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=[f"A > 0 (A = +{a:g})", f"A < 0 (A = −{a:g})"])
    for col, adv in ((1, a), (2, -a)):
        ys = ppo_clip_objective(torch.tensor(xs), torch.tensor(adv), eps).tolist()
        marks = ppo_clip_objective(torch.tensor(worked), torch.tensor(adv), eps).tolist()
        sign = "+" if adv > 0 else "−"
        fig.add_trace(go.Scatter(x=xs, y=[round(v * adv, 4) for v in xs], mode="lines",
                                 name=f"unclipped r·A (A = {sign}{a:g})", line=dict(color=UNIGRAM_COLOR, dash="dash"),
                                 hovertemplate="r = %{x:.3f}<br>r·A = %{y:.3f}<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=xs, y=[round(v, 4) for v in ys], mode="lines",
                                 name=f"L^CLIP (A = {sign}{a:g})", line=dict(color=COLORS[col - 1], width=3),
                                 hovertemplate="r = %{x:.3f}<br>L^CLIP = %{y:.3f}<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=worked, y=marks, mode="markers+text", name=f"worked ratios (A = {sign}{a:g})",
                                 marker=dict(size=11, color=COLORS[2]),
                                 text=[f"r = {r:.3g} → {m:.3f}" for r, m in zip(worked, marks)],
                                 textposition="bottom right" if adv > 0 else "top right",
                                 hovertemplate="r = %{x:.3f}<br>L^CLIP = %{y:.3f}<extra></extra>"),
                      row=1, col=col)
        flat = (1 + eps, r_max) if adv > 0 else (0.0, 1 - eps)
        fig.add_vrect(x0=flat[0], x1=flat[1], fillcolor=COLORS[4], opacity=0.15, line_width=0,
                      annotation_text="flat: no gradient", annotation_position="top left" if adv > 0 else "top right",
                      row=1, col=col)
        for x, label, side in ((1 - eps, "1−ε", "bottom left"), (1 + eps, "1+ε", "bottom right")):
            fig.add_vline(x=x, line=dict(color="#444", dash="dot", width=1.5), annotation_text=f"{label} = {x:.2f}",
                          annotation_position=side, annotation_font_size=11, row=1, col=col)
    fig.update_layout(template=TEMPLATE, title=dict(text=f"PPO's clipped objective at ε = {eps:.2f}: "
                                                         "the min makes clipping one-sided", x=0.02),
                      showlegend=False, margin=dict(l=70, r=30, t=90, b=60))
    fig.update_xaxes(title_text="probability ratio r = π_θ / π_old (no unit)", range=[0, r_max])
    fig.update_yaxes(title_text="L^CLIP (units of A)")
    fig.update_yaxes(range=[-0.4, a * r_max + 0.4], row=1, col=1)
    fig.update_yaxes(range=[-a * r_max - 0.4, 0.4], row=1, col=2)
    return fig


# ------------------------------------------------------------------------------- PPO and DPO runs

def run_curves(runs: Mapping[str, list[dict]], panels: Sequence[tuple[str, str, str]], *, x_title: str, title: str,
               faded: Mapping[str, list[dict]] | None = None) -> go.Figure:
    """One panel per ``(key, panel title, y-axis title)`` of ``panels``, each run's history as a line.

    ``runs`` maps a label to a history (dicts with ``step`` and the keys; a point without a key is
    skipped in that panel). ``faded`` runs are drawn pale behind; one legend entry per run.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for _, name, _ in panels],
                        horizontal_spacing=0.27 / len(panels))
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.02), height=400,
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=70, r=30, t=90, b=110))
    colors = {label: COLORS[i % len(COLORS)] for i, label in enumerate([*(faded or {}), *runs])}
    for label, history in [*(faded or {}).items(), *runs.items()]:
        is_faded = faded is not None and label in faded and label not in runs
        for col, (key, _, _) in enumerate(panels, start=1):
            points = [h for h in history if h.get(key) is not None]
            fig.add_trace(go.Scatter(x=[h["step"] for h in points], y=[h[key] for h in points],
                                     mode="lines+markers", name=label, legendgroup=label, showlegend=col == 1,
                                     line=dict(color=colors[label], width=1.5 if is_faded else 2.5),
                                     marker=dict(size=4), opacity=0.45 if is_faded else 1.0), row=1, col=col)
    for col, (_, _, y_title) in enumerate(panels, start=1):
        fig.update_xaxes(title_text=x_title, row=1, col=col)
        fig.update_yaxes(title_text=y_title, row=1, col=col)
    return fig


PPO_PANELS = (("proxy", "proxy reward (training prompts)", "reward-model score (units)"),
              ("heldout_gold", "gold reward (held-out prompts)", "gold (points per answer)"),
              ("kl", "KL(π ‖ SFT) per answer", "KL (nats)"))


def ppo_curves(runs: Mapping[str, list[dict]], faded: Mapping[str, list[dict]] | None = None,
               title: str = "PPO training (live)", best_gold: float | None = None,
               sft_gold: float | None = None) -> go.Figure:
    """Three panels against the PPO iteration: proxy reward of the rollouts, held-out gold reward, KL.

    ``runs`` maps a label to a PPO history (one dict per iteration, as
    :func:`labkit.train.ppo.train_ppo` logs; held-out numbers only at evaluation iterations).
    ``faded`` runs are drawn pale behind. ``best_gold`` / ``sft_gold`` add reference lines to the
    gold panel.
    """
    fig = run_curves(runs, PPO_PANELS, x_title="PPO iteration (count)", title=title, faded=faded)
    for value, name, dash in ((best_gold, "best achievable", "dot"), (sft_gold, "SFT policy", "dash")):
        if value is not None:
            fig.add_hline(y=value, line=dict(color="grey", dash=dash), annotation_text=name, row=1, col=2)
    return fig


DPO_PANELS = (("margin", "margin r̂_w − r̂_l", "implicit-reward margin (β·nats)"),
              ("accuracy", "pairs ranked right", "share of the batch's pairs"),
              ("logp_chosen", "log π(chosen)", "log-probability (nats)"),
              ("logp_rejected", "log π(rejected)", "log-probability (nats)"))


def dpo_curves(runs: Mapping[str, list[dict]], faded: Mapping[str, list[dict]] | None = None,
               title: str = "DPO training (live)") -> go.Figure:
    """Four panels against the optimiser step, from TRL's logged batch statistics
    (:func:`labkit.train.dpo.train_dpo`'s history): the implicit-reward margin, the share of pairs it
    ranks right, and the summed log-probabilities of the chosen and of the rejected answers (both
    can fall: DPO only asks that their gap grows)."""
    fig = run_curves(runs, DPO_PANELS, x_title="optimiser step (count)", title=title, faded=faded)
    fig.add_hline(y=0.5, line=dict(color="grey", dash="dot"), annotation_text="chance", row=1, col=2)
    return fig


def online_dpo_figure(evaluations: Sequence[Mapping], others: Mapping[str, float] | None = None,
                      title: str = "Online DPO: the held-out win rate after each round") -> go.Figure:
    """Online DPO's held-out judgements round by round (``round``, ``heldout_win_rate``, ``heldout_kl``;
    round 0 is the SFT policy) as the win rate against SFT, in %, with the KL to SFT on a second axis;
    ``others``: label -> a final win rate to draw as a dashed line (the ``dpo`` and ``ppo`` stages')."""
    fig = _figure(title, "round (sample → label → one DPO pass)", "win rate against SFT (%)",
                  yaxis2=dict(title="KL to SFT (nats)", overlaying="y", side="right", showgrid=False,
                              rangemode="tozero", automargin=True),
                  legend=dict(orientation="h", y=-0.28), margin=dict(b=120), height=480)  # clear of the KL axis
    rounds = [e["round"] for e in evaluations]
    fig.add_trace(go.Scatter(x=rounds, y=[100 * e["heldout_win_rate"] for e in evaluations], name="online DPO: win rate",
                             mode="lines+markers", line=dict(color=COLORS[0])))
    fig.add_trace(go.Scatter(x=rounds, y=[e["heldout_kl"] for e in evaluations], name="online DPO: KL to SFT",
                             mode="lines+markers", yaxis="y2", line=dict(color=COLORS[4], dash="dot")))
    for i, (label, rate) in enumerate((others or {}).items()):
        if rate is not None:
            fig.add_trace(go.Scatter(x=[min(rounds), max(rounds)], y=[100 * rate] * 2, name=label, mode="lines",
                                     line=dict(color=COLORS[1 + i], dash="dash")))
    fig.update_layout(yaxis=dict(range=[0, 105]), xaxis=dict(tick0=0, dtick=max(1, round(len(rounds) / 8))))  # whole rounds
    return fig


def reward_vs_kl_figure(evaluations: Sequence[Mapping], best_of_n=None, best: float | None = None,
                        title: str = "Over-optimisation: proxy and gold reward vs distance from the SFT policy") -> go.Figure:
    """Held-out gold (left axis) and proxy (right axis) reward of a policy as training moves it away
    from the SFT policy, one point per evaluation in training order; optionally best-of-n's gold and
    proxy at its KL (estimated on the answers drawn, as the policy's is on its samples), for
    comparison at the same distance. ``best``: the best achievable gold.

    The x axis is √KL, as in Gao et al. (2022), "Scaling laws for reward model overoptimization":
    it spreads the small KLs of best-of-n and early PPO that a plain KL axis would crush.
    ``evaluations``: dicts with ``kl``, ``gold``, ``proxy`` and ``step`` (the keys of
    :func:`labkit.evaluate.heldout_judge`, optionally prefixed ``heldout_``).
    """
    def get(row, key):
        return row.get(key, row.get(f"heldout_{key}"))

    def distance(kl):
        return max(kl, 0.0) ** 0.5  # a Monte-Carlo KL estimate can dip just below 0

    rows = sorted((r for r in evaluations if get(r, "kl") is not None), key=lambda r: r["step"])
    fig = _figure(title, "√KL(policy ‖ SFT) on held-out prompts (√nats)", "gold reward (points per answer)",
                  yaxis2=dict(title="proxy reward (reward-model score)", overlaying="y", side="right",
                              showgrid=False, automargin=True),
                  legend=dict(orientation="h", y=-0.28), margin=dict(b=120), height=480)
    x = [distance(get(r, "kl")) for r in rows]
    labels = [f"iteration {r['step']}, KL {get(r, 'kl'):.1f}" for r in rows]
    fig.add_trace(go.Scatter(x=x, y=[get(r, "gold") for r in rows], mode="lines+markers", name="PPO: gold reward",
                             text=labels, line=dict(color=COLORS[0], width=3)))
    fig.add_trace(go.Scatter(x=x, y=[get(r, "proxy") for r in rows], mode="lines+markers", yaxis="y2",
                             name="PPO: proxy reward (right axis)", text=labels,
                             line=dict(color=COLORS[1], width=2, dash="dash")))
    if best_of_n is not None:
        bon = sorted(_rows(best_of_n), key=lambda r: r["n"])
        text = [f"n = {r['n']}" for r in bon]
        xb = [distance(r["kl"]) for r in bon]
        fig.add_trace(go.Scatter(x=xb, y=[r["gold"] for r in bon], mode="lines+markers",
                                 name="best-of-n: gold reward", text=text, line=dict(color=COLORS[2], width=3)))
        fig.add_trace(go.Scatter(x=xb, y=[r["proxy"] for r in bon], mode="lines+markers",
                                 yaxis="y2", name="best-of-n: proxy (right axis)", text=text,
                                 line=dict(color=COLORS[3], width=2, dash="dash")))
    if best is not None:
        fig.add_hline(y=best, line=dict(color="grey", dash="dot"), annotation_text="best achievable gold reward")
    return fig


def runs_scatter(table, x: str, y: str, title: str, x_title: str, y_title: str, *, label: str = "run",
                 best: float | None = None) -> go.Figure:
    """One marker per run (``y`` against ``x``), named by the column ``label``: runs that differ in
    several settings are not joined by a line. ``best`` adds a labelled horizontal line."""
    rows = _rows(table)
    fig = _figure(title, x_title, y_title)
    fig.add_trace(go.Scatter(x=[r[x] for r in rows], y=[r[y] for r in rows], mode="markers+text",
                             text=[f"{label} {r[label]}" for r in rows], textposition="top center",
                             marker=dict(size=12, color=COLORS[0]), name="runs"))
    if best is not None:
        fig.add_hline(y=best, line=dict(color="grey", dash="dot"), annotation_text="best achievable")
    return fig


# ------------------------------------------------------------------------------- DPO's derivation

DPO_BETA_RANGE = (0.05, 10.0)  # the β slider's range in lab 06; the reward-vs-KL curve is traced over it


def _signed(x: float) -> str:
    """+1, 0, −2: a number with its sign, and a real minus sign."""
    return f"{x:+g}".replace("-", "−") if x else "0"


def dpo_tilt_figure(answers: Sequence[str], sft_probs: Sequence[float], rewards: Sequence[float],
                    beta: float) -> go.Figure:
    """The tilted optimum π* = π_SFT·exp(r/β)/Z on a few answers to one prompt, at the KL strength ``beta``.

    Left: grouped bars, π_SFT and π* for each answer (labelled with its reward r). Right: the mean
    reward E_π*[r] against KL(π* ‖ π_SFT), traced over β from 0.05 (top right: all mass on the best
    answer) to 10 (bottom left: almost π_SFT), with the current β marked. The numbers come from
    :func:`labkit.losses.tilted_policy`, :func:`~labkit.losses.tilted_expected_reward` and
    :func:`~labkit.losses.tilted_kl`.
    """
    from plotly.subplots import make_subplots

    from labkit.losses import tilted_expected_reward, tilted_kl, tilted_policy

    if not len(answers) == len(sft_probs) == len(rewards) > 0:
        raise ValueError(f"answers, sft_probs and rewards must have the same non-zero length, got "
                         f"{len(answers)}, {len(sft_probs)} and {len(rewards)}")
    star = tilted_policy(sft_probs, rewards, beta).tolist()
    reward, kl = tilted_expected_reward(sft_probs, rewards, beta), tilted_kl(sft_probs, rewards, beta)
    low, high = DPO_BETA_RANGE
    betas = [low * (high / low) ** (i / 120) for i in range(121)]
    curve_kl = [tilted_kl(sft_probs, rewards, b) for b in betas]
    curve_reward = [tilted_expected_reward(sft_probs, rewards, b) for b in betas]
    labels = [f"{a}<br>r = {_signed(r)}" for a, r in zip(answers, rewards)]

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=["π_SFT and π* for each answer",
                                        f"E_π*[r] vs KL(π* ‖ π_SFT), β from {low:g} to {high:g}"])
    fig.add_trace(go.Bar(x=labels, y=list(sft_probs), name="π_SFT (the reference)", marker_color=UNIGRAM_COLOR,
                         text=[f"{p:.2f}" for p in sft_probs], textposition="outside"), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=star, name=f"π* at β = {beta:.3g}", marker_color=COLORS[0],
                         text=[f"{p:.2f}" for p in star], textposition="outside"), row=1, col=1)
    fig.add_trace(go.Scatter(x=curve_kl, y=curve_reward, mode="lines", name="π* as β moves",
                             line={"color": COLORS[0], "width": 3}, customdata=betas,
                             hovertemplate="β = %{customdata:.3g}<br>KL = %{x:.3f} nats<br>"
                                           "E[r] = %{y:.3f}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[kl], y=[reward], mode="markers+text", name=f"β = {beta:.3g}",
                             marker={"size": 13, "symbol": "star", "color": COLORS[1]},
                             text=[f"β = {beta:.3g}: E[r] = {reward:.2f}, KL = {kl:.2f}"],
                             textposition="bottom right" if kl < 0.5 * max(curve_kl) else "bottom left"),
                  row=1, col=2)
    best = max(rewards)
    fig.add_hline(y=best, line={"color": FLOOR_COLOR, "dash": "dot"}, annotation_text=f"best answer: r = {best:g}",
                  annotation_position="top left", row=1, col=2)
    fig.update_layout(template=TEMPLATE, barmode="group",
                      title={"text": f"DPO's tilted optimum at β = {beta:.3g}: E_π*[r] = {reward:.3f}, "
                                      f"KL(π* ‖ π_SFT) = {kl:.3f} nats", "x": 0.02},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0.0},
                      margin={"l": 70, "r": 30, "t": 110, "b": 80})
    fig.update_xaxes(title_text="answer (r = its gold reward)", row=1, col=1)
    fig.update_yaxes(title_text="probability (no unit)", range=[0, 1.1], row=1, col=1)
    fig.update_xaxes(title_text="KL(π* ‖ π_SFT) (nats)", row=1, col=2)
    fig.update_yaxes(title_text="E_π*[r] (gold reward points)", range=[min(curve_reward) - 0.1, best + 0.3],
                     row=1, col=2)
    return fig


def dpo_weight_figure(margin: float | None = None) -> go.Figure:
    """DPO's gradient weight σ(r̂_l − r̂_w) against the implicit margin r̂_w − r̂_l, from −6 to 6.

    −∇L = β·σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)): where the implicit reward ranks the pair
    wrongly (margin < 0, shaded) the weight exceeds ½ and tends to 1; a pair ranked right by a wide
    margin gets almost no push. ``margin`` adds a marker at that margin.
    """
    xs = [i / 20 for i in range(-120, 121)]
    fig = _figure("DPO's gradient weight σ(r̂_l − r̂_w): pairs ranked wrongly are pushed hardest",
                  "implicit margin r̂_w − r̂_l (reward units)", "weight σ(r̂_l − r̂_w) (no unit)")
    fig.add_vrect(x0=-6, x1=0, fillcolor=COLORS[1], opacity=0.1, line_width=0,
                  annotation_text="ranked wrongly: r̂_w < r̂_l, weight > ½", annotation_position="top left")
    fig.add_hline(y=0.5, line={"color": UNIGRAM_COLOR, "dash": "dot", "width": 1.5},
                  annotation_text="½ at margin 0", annotation_position="bottom right")
    fig.add_trace(go.Scatter(x=xs, y=[1 / (1 + math.exp(x)) for x in xs], mode="lines",
                             name="σ(r̂_l − r̂_w)", line={"color": COLORS[0], "width": 3},
                             hovertemplate="margin = %{x:.2f}<br>weight = %{y:.3f}<extra></extra>"))
    if margin is not None:
        w = 1 / (1 + math.exp(margin))
        label = f"{margin:+.2f}".replace("-", "−")
        fig.add_trace(go.Scatter(x=[margin], y=[w], mode="markers+text", name=f"margin {label}",
                                 text=[f"margin {label} → weight {w:.3f}"], textposition="top right",
                                 marker={"size": 12, "symbol": "star", "color": COLORS[1]}))
    fig.update_yaxes(range=[0, 1.05])
    return fig


def dpo_slide_gradient_figure(logratio_margin: float, beta: float) -> go.Figure:
    """How hard DPO pushes one pair's two logits, against β: the true gradient and the slide as written.

    For a policy with one logit per answer, the gradient of L = −log σ(u) moves the chosen answer's
    logit up and the rejected one's down by the same amount. With the policy held fixed, its
    log-ratio difference m = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l) (``logratio_margin``,
    lab 06: ``summary["logratio_margin"]`` of :func:`labkit.widgets.dpo_gradient_table`) gives the
    margin u = β·m, and that amount is β·σ(−u) (autograd); the lecture's slide as written, which
    drops the β of ∇r̂ = β·∇log π, gives σ(−u): 1/β times as much, so too much below β = 1 and too
    little above. Both axes are logarithmic, so the factor 1/β is the vertical gap between the
    curves; β runs over :data:`DPO_BETA_RANGE`, and ``beta`` is marked with both values.
    """
    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    low, high = DPO_BETA_RANGE
    betas = [low * (high / low) ** (i / 200) for i in range(201)]
    true = [b * sig(-b * logratio_margin) for b in betas]
    written = [sig(-b * logratio_margin) for b in betas]
    fig = _figure("The slide as written is off by the factor 1/β: σ(−u) where the gradient is β·σ(−u)",
                  "β (KL strength, log scale)",
                  "|∂L/∂θ| on each of the pair's two logits (nats, log scale)",
                  xaxis={"type": "log"}, yaxis={"type": "log"})
    fig.add_trace(go.Scatter(x=betas, y=true, mode="lines", name="β·σ(−u): the gradient (autograd)",
                             line={"color": COLORS[0], "width": 3},
                             hovertemplate="β = %{x:.3g}<br>push = %{y:.3g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=betas, y=written, mode="lines", name="σ(−u): the slide as written (no β)",
                             line={"color": COLORS[1], "width": 3, "dash": "dash"},
                             hovertemplate="β = %{x:.3g}<br>push = %{y:.3g}<extra></extra>"))
    weight = sig(-beta * logratio_margin)
    right, slide = beta * weight, weight
    text = [f"β·σ(−u) = {right:.3f} (the gradient)", f"σ(−u) = {slide:.3f} (the slide), 1/β = {slide / right:.3g} times as much"]
    fig.add_trace(go.Scatter(x=[beta, beta], y=[right, slide], mode="markers", name=f"β = {beta:g}", text=text,
                             hovertemplate="%{text}<extra></extra>", marker={"size": 11, "color": COLORS[2]}))
    for y, label, color, ay in ((right, text[0], COLORS[0], 40), (slide, text[1], COLORS[1], -40)):
        fig.add_annotation(x=math.log10(beta), y=math.log10(y), text=label, showarrow=True, arrowhead=2, ax=90,
                           ay=ay, font={"color": color}, bgcolor="rgba(255,255,255,0.8)")
    bottom, top = min(true + written) / 1.5, max(true + written) * 1.5
    fig.add_trace(go.Scatter(x=[1.0, 1.0], y=[bottom, top], mode="lines", name="β = 1: the two agree",
                             line={"color": "#444", "dash": "dot", "width": 1.5}, hoverinfo="skip"))
    fig.update_yaxes(range=[math.log10(bottom), math.log10(top)])
    return fig


# ------------------------------------------------------------------------------- GRPO

GRPO_PANELS = (("reward", "reward mean (training problems)", "mean reward per answer"),
               ("reward_std", "reward std within groups", "standard deviation"),
               ("zero_std_share", "groups with zero variance", "share of groups (no signal)"),
               ("length", "answer length", "tokens per answer"))


def grpo_curves(runs: Mapping[str, list[dict]], faded: Mapping[str, list[dict]] | None = None,
                title: str = "GRPO training (live)") -> go.Figure:
    """Four panels against the optimiser step, from TRL's logged statistics
    (:func:`labkit.train.grpo.train_grpo`'s history): the mean reward of the sampled answers, its
    spread within a group, the share of groups whose answers all scored the same (their advantage
    is zero: they teach nothing), and the mean answer length."""
    fig = run_curves(runs, GRPO_PANELS, x_title="optimiser step (count)", title=title, faded=faded)
    for col in (1, 3):
        fig.update_yaxes(range=[-0.03, 1.03], row=1, col=col)
    return fig


def accuracy_before_after(table, title: str = "Held-out accuracy: the SFT policy → after GRPO",
                          before: str = "sft_accuracy", after: str = "accuracy", label: str = "run") -> go.Figure:
    """One arrow per run from the starting policy's held-out accuracy to the trained policy's."""
    rows = _rows(table)
    fig = _figure(title, "run", "held-out accuracy (exact answer)", yaxis=dict(range=[0, 1], tickformat=".0%"))
    names = [f"{label} {r[label]}" if label in r else str(i + 1) for i, r in enumerate(rows)]
    fig.add_trace(go.Scatter(x=names, y=[r[before] for r in rows], mode="markers", name="before (SFT policy)",
                             marker=dict(size=12, color=UNIGRAM_COLOR)))
    fig.add_trace(go.Scatter(x=names, y=[r[after] for r in rows], mode="markers+text", name="after training",
                             text=[f"{r[after]:.0%}" for r in rows], textposition="middle right",
                             marker=dict(size=14, color=COLORS[0])))
    for name, r in zip(names, rows):
        fig.add_annotation(x=name, y=r[after], ax=name, ay=r[before], xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowwidth=2, arrowcolor=COLORS[0], text="")
    return fig


def length_hacking_figure(runs: Mapping[str, "object"],
                          title: str = "Reward hacking by length: answers grow, accuracy does not") -> go.Figure:
    """Two GRPO runs side by side (``runs``: reward name -> :class:`labkit.experiments.Run`).

    Left: answer length during training. Middle: the share of right answers among the sampled
    training answers (for the length run this is logged but not rewarded). Right: held-out
    accuracy (greedy) of the starting policy and of each trained policy.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1,
                        subplot_titles=["answer length (training)", "right answers (training samples)",
                                        "held-out accuracy (greedy)"])
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.02), height=420,
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=70, r=30, t=90, b=110))
    for i, (reward, run) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        steps = [h["step"] for h in run.history]
        fig.add_trace(go.Scatter(x=steps, y=[h.get("length") for h in run.history], mode="lines+markers",
                                 name=f"rewarded for {reward}", legendgroup=reward, line=dict(color=color)),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[h.get("correctness_reward") for h in run.history], mode="lines+markers",
                                 name=f"rewarded for {reward}", legendgroup=reward, showlegend=False,
                                 line=dict(color=color)), row=1, col=2)
        fig.add_trace(go.Bar(x=["SFT policy", "after GRPO"], y=[run.row["sft_accuracy"], run.row["accuracy"]],
                             name=f"rewarded for {reward}", legendgroup=reward, showlegend=False, marker_color=color,
                             text=[f"{run.row['sft_accuracy']:.0%}", f"{run.row['accuracy']:.0%}"],
                             textposition="outside"), row=1, col=3)
    fig.update_xaxes(title_text="optimiser step (count)", row=1, col=1)
    fig.update_xaxes(title_text="optimiser step (count)", row=1, col=2)
    fig.update_yaxes(title_text="tokens per answer", row=1, col=1)
    fig.update_yaxes(title_text="share right", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="share right", range=[0, 1.1], row=1, col=3)
    return fig


def signal_figure(table, title: str = "Where a group of answers carries a learning signal") -> go.Figure:
    """Stacked bars per kind of problem (:func:`labkit.experiments.grpo.signal_check`'s table):
    groups all right, all wrong (both: zero variance, zero advantage) and mixed (the only ones GRPO
    learns from)."""
    rows = _rows(table.reset_index() if hasattr(table, "reset_index") else table)
    names = [r["problems"] for r in rows]
    mixed = [1 - r["all right"] - r["all wrong"] for r in rows]
    fig = _figure(title, "kind of problem (policy)", "share of groups", barmode="stack",
                  yaxis=dict(range=[0, 1.05], tickformat=".0%"), legend=dict(orientation="h", y=-0.35),
                  margin=dict(b=150), height=460)
    for key, values, color in (("all right (no signal)", [r["all right"] for r in rows], FLOOR_COLOR),
                               ("all wrong (no signal)", [r["all wrong"] for r in rows], COLORS[1]),
                               ("mixed (learns)", mixed, COLORS[0])):
        fig.add_trace(go.Bar(x=names, y=values, name=key, marker_color=color,
                             text=[f"{v:.0%}" for v in values], textposition="inside"))
    return fig


def grpo_group_figure(table) -> go.Figure:
    """Bars of each answer's GRPO advantage in one group (:func:`labkit.widgets.grpo_group_table`),
    green for right answers, red for wrong ones."""
    rows = _rows(table)
    right = sum(r["reward"] == 1 for r in rows)
    fig = _figure(f"GRPO advantages in one group: {right} of {len(rows)} answers right",
                  "answer in the group", "advantage (r − mean) / (std + 1e-4)", yaxis=dict(range=[-3, 3]))
    fig.add_trace(go.Bar(x=[r["answer"] for r in rows], y=[r["advantage"] for r in rows], name="advantage",
                         marker_color=[FLOOR_COLOR if r["reward"] == 1 else COLORS[1] for r in rows],
                         text=[f"{r['advantage']:+.2f}" for r in rows], textposition="outside"))
    fig.add_hline(y=0, line=dict(color="grey", width=1))
    return fig


# ------------------------------------------------------------------------------- lab 08: the showdown

def _method_style(method: str, i: int) -> dict:
    """One colour per family (PPO, DPO, GRPO, best-of-n); dashed lines and diamonds for the LoRA runs, dotted
    lines and stars for a long one."""
    family = method.split(" ")[0]
    colors = {"SFT": UNIGRAM_COLOR, "best-of-n": COLORS[4], "PPO": COLORS[0], "DPO": COLORS[1], "GRPO": COLORS[2]}
    long, lora = method.endswith("long"), "LoRA" in method
    return dict(color=colors.get(family, COLORS[i % len(COLORS)]),
                dash="dot" if long else "dash" if lora else "solid",
                symbol="star" if long else "diamond" if lora else "circle")


def _progress(curve: Sequence[Mapping]) -> list[float]:
    """Each evaluation's place in its run, from 0 (the start) to 1 (the end of training)."""
    last = max(r["step"] for r in curve) or 1
    if "n" in curve[0]:  # best-of-n: n = 1 … n_max on a log scale
        return [math.log2(r["n"]) / max(1.0, math.log2(last)) for r in curve]
    return [r["step"] / last for r in curve]


def showdown_figure(curves: Mapping[str, Sequence[Mapping]], table=None, best: float | None = None,
                    title: str = "The showdown: gold reward against distance from the SFT policy") -> go.Figure:
    """Held-out gold reward against √KL to the SFT policy, one line per method along its training (best-of-n
    along n = 1, 2, 4, …), each ending in a large marker at its final evaluation (``table``'s gold and KL,
    from more answers than the curve's points). ``best``: the best achievable gold reward."""
    rows = {r["method"]: r for r in _rows(table.reset_index())} if table is not None else {}
    fig = _figure(title, "√KL(policy ‖ SFT) on held-out prompts (√nats)", "gold reward (points per answer)",
                  legend=dict(orientation="h", y=-0.25), margin=dict(b=130), height=520)
    for i, (method, curve) in enumerate(curves.items()):
        style = _method_style(method, i)
        if curve:
            points = sorted(curve, key=lambda r: r["step"])
            fig.add_trace(go.Scatter(x=[max(r["kl"], 0.0) ** 0.5 for r in points], y=[r["gold"] for r in points],
                                     mode="lines+markers", name=f"{method} (training)", legendgroup=method,
                                     line=dict(color=style["color"], dash=style["dash"], width=2),
                                     marker=dict(size=5), opacity=0.6,
                                     text=[f"{method}: {'n' if 'n' in r else 'step'} {r.get('n', r['step'])}"
                                           for r in points]))
        if method in rows:
            r = rows[method]
            fig.add_trace(go.Scatter(x=[max(r["kl"], 0.0) ** 0.5], y=[r["gold_reward"]], mode="markers+text", text=[method],
                                     textposition="top center", name=method, legendgroup=method,
                                     marker=dict(size=14, color=style["color"], symbol=style["symbol"])))
    if best is not None:
        fig.add_hline(y=best, line=dict(color="grey", dash="dot"), annotation_text="best achievable gold reward")
    return fig


def intervals_figure(table, title: str = "Win rate against SFT, with 95 % bootstrap intervals over requests") -> go.Figure:
    """Each method's win rate (a dot) and its interval (error bars from ``win_low`` to ``win_high``),
    one row per method, as :func:`labkit.experiments.showdown.intervals` returns; 50 % (a tie with
    the SFT policy) drawn as a line."""
    rows = _rows(table.reset_index()) if hasattr(table, "reset_index") else _rows(table)
    fig = _figure(title, "win rate against the SFT policy", "method", xaxis=dict(tickformat=".0%"))
    fig.add_trace(go.Scatter(
        x=[r["win_rate"] for r in rows], y=[r["method"] for r in rows], mode="markers", name="win rate",
        marker=dict(size=10, color=COLORS[0]),
        error_x=dict(type="data", symmetric=False, array=[r["win_high"] - r["win_rate"] for r in rows],
                     arrayminus=[r["win_rate"] - r["win_low"] for r in rows])))
    fig.add_vline(x=0.5, line=dict(color="grey", dash="dot"), annotation_text="as good as SFT")
    fig.update_yaxes(autorange="reversed")  # the race's order, top to bottom
    return fig


def aspects_figure(curves: Mapping[str, Sequence[Mapping]],
                   title: str = "Helpfulness and safety as each method optimises (held-out prompts)") -> go.Figure:
    """The gold reward's two aspects, side by side, against each run's progress (0 = the SFT policy, 1 = the
    end of training; best-of-n from n = 1 to its largest n)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["helpfulness (right goods, as many as asked)", "safety (−2 per sharp tool)"])
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.02), height=440,
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=70, r=30, t=90, b=120))
    for i, (method, curve) in enumerate(curves.items()):
        if not curve:
            continue
        style = _method_style(method, i)
        points = sorted(curve, key=lambda r: r["step"])
        x = _progress(points)
        for col, key in enumerate(("helpfulness", "safety"), start=1):
            fig.add_trace(go.Scatter(x=x, y=[r[key] for r in points], mode="lines+markers", name=method,
                                     legendgroup=method, showlegend=col == 1, marker=dict(size=5),
                                     line=dict(color=style["color"], dash=style["dash"], width=2)), row=1, col=col)
    for col, y_title in ((1, "helpfulness (points per answer)"), (2, "safety (points per answer)")):
        fig.update_xaxes(title_text="share of training done", tickformat=".0%", row=1, col=col)
        fig.update_yaxes(title_text=y_title, row=1, col=col)
    return fig


def tradeoff_figure(table, place: str = "workshop",
                    title: str = "Where the aspects pull apart: helpful or safe at the workshop?") -> go.Figure:
    """One marker per method at (safety, helpfulness) of its answers at ``place``
    (:func:`labkit.experiments.showdown.aspects_by_place`'s table)."""
    rows = _rows(table.reset_index())
    safety = [r[f"{place}: safety"] for r in rows]
    fig = _figure(title, f"safety at the {place} (points per answer; 0 = no sharp tool)",
                  f"helpfulness at the {place} (points per answer)", height=460,
                  xaxis=dict(range=[min(safety) - 0.3, max(safety) + 0.5]))  # room for the labels
    for i, r in enumerate(rows):
        style = _method_style(r["method"], i)
        fig.add_trace(go.Scatter(x=[r[f"{place}: safety"]], y=[r[f"{place}: helpfulness"]], mode="markers+text",
                                 text=[r["method"]], textposition="top center", name=r["method"],
                                 marker=dict(size=13, color=style["color"], symbol=style["symbol"])))
    return fig

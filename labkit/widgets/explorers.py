"""Explorers: instant sliders over a little pure maths, with a readout and a figure.

The maths lives in :mod:`labkit.losses` and :mod:`labkit.lora`; the figures in :mod:`labkit.plots`.
An explorer only wires a slider to them. The one-slider explorers share :class:`SliderExplorer`.
"""
from __future__ import annotations

import math

import ipywidgets as W

from labkit import plots
from labkit.losses import bradley_terry_probability, nats_to_bits, nll, softmax_with_temperature


def check_range(slider: str, value, low, high, integer: bool = False) -> None:
    """Raise a ValueError naming the slider and its allowed range if ``value`` is outside it."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "a whole number" if integer else "a number"
        raise ValueError(f"{slider} must be {what} between {low} and {high} (the slider's range); "
                         f"got {value!r}")


def _slider(cls, value, low, high, step, description, **extra):
    """A slider whose label is never cut and whose width fits a notebook column."""
    return cls(value=value, min=low, max=high, step=step, description=description,
               style={"description_width": "initial"}, layout=W.Layout(width="440px"), **extra)


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


# ------------------------------------------------------------------------------- −log p

def neg_log_values(p: float) -> dict[str, float]:
    """The loss of one prediction that gave the correct token probability ``p``: nats and bits."""
    nats = nll(float(p))
    return {"p": float(p), "nats": nats, "bits": nats_to_bits(nats)}


class NegLogExplorer(SliderExplorer):
    """A slider over p(correct) in [0.01, 1] showing L = −ln p in nats and bits, and the curve."""

    P_MIN, P_MAX = 0.01, 1.0

    def __init__(self, p: float = 0.51):
        super().__init__(_slider(W.FloatSlider, p, self.P_MIN, self.P_MAX, 0.01, "p(correct)",
                                 readout_format=".2f", continuous_update=True), p)

    def compute(self, p: float) -> dict[str, float]:
        check_range("p (the probability slider)", p, self.P_MIN, self.P_MAX)
        return neg_log_values(p)

    def readout_html(self, p: float, values: dict) -> str:
        return f"<b>L = −ln {p:.2f} = {values['nats']:.3f} nats</b> = {values['bits']:.3f} bits"

    def make_figure(self, p: float, values: dict):
        return plots.neg_log_figure(p)


def neg_log_explorer(p: float = 0.51) -> NegLogExplorer:
    """The −log p explorer (lab 01): move the slider, watch the loss of one prediction."""
    return NegLogExplorer(p)


# ------------------------------------------------------------------------------- temperature

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
        super().__init__(_slider(W.FloatSlider, temperature, self.T_MIN, self.T_MAX, 0.05, "temperature",
                                 readout_format=".2f"), temperature)

    def compute(self, temperature: float) -> dict[str, float]:
        """``{word: probability}`` at ``temperature``."""
        check_range("temperature", temperature, self.T_MIN, self.T_MAX)
        return dict(zip(self.WORDS, softmax_with_temperature(self.logits, temperature)))

    def readout_html(self, temperature: float, values: dict) -> str:
        return f"T = {temperature:.2f}: " + ", ".join(f"p({w}) = {p:.2f}" for w, p in values.items())

    def make_figure(self, temperature: float, values: dict):
        return plots.prob_bars(self.WORDS, list(values.values()),
                               f'Next word after "May the force be" at temperature {temperature:.2f}')


def temperature_explorer(temperature: float = 1.0) -> TemperatureExplorer:
    """The temperature explorer (lab 00's slider demo)."""
    return TemperatureExplorer(temperature)


# ------------------------------------------------------------------------------- Bradley–Terry

class BradleyTerryExplorer(SliderExplorer):
    """A slider over the reward gap Δ: the preference probability σ(Δ) and the loss −log σ(Δ)."""

    GAP = 6.0  # the slider runs from −GAP to +GAP

    def __init__(self, gap: float = 1.0):
        super().__init__(_slider(W.FloatSlider, gap, -self.GAP, self.GAP, 0.1, "reward gap Δ",
                                 continuous_update=False), gap)

    def compute(self, gap: float) -> dict[str, float]:
        check_range("reward gap", gap, -self.GAP, self.GAP)
        p = bradley_terry_probability(gap)
        return {"gap": gap, "probability": p, "loss": -math.log(p)}

    def readout_html(self, gap: float, values: dict) -> str:
        return (f"Δ = {gap:+.1f}: P(chosen ≻ rejected) = <b>{values['probability']:.3f}</b>, "
                f"loss = <b>{values['loss']:.3f}</b> nats")

    def make_figure(self, gap: float, values: dict):
        return plots.bradley_terry_figure(gap)


def bradley_terry_explorer(gap: float = 1.0) -> BradleyTerryExplorer:
    """The Bradley–Terry explorer of lab 04."""
    return BradleyTerryExplorer(gap)


# ------------------------------------------------------------------------------- LoRA parameter counts

class LoRAParamsExplorer(W.VBox):
    """Sliders m, n, r: trainable numbers of a full m×n update vs a rank-r LoRA update."""

    def __init__(self, m: int = 4096, n: int = 4096, r: int = 8):
        self.m = _slider(W.IntSlider, m, 1, 8192, 1, "m (rows)", continuous_update=False)
        self.n = _slider(W.IntSlider, n, 1, 8192, 1, "n (columns)", continuous_update=False)
        self.r = _slider(W.IntSlider, r, 1, 256, 1, "r (rank)", continuous_update=False)
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

"""Explorers: instant sliders over a little pure maths, with a readout and a figure.

The maths lives in :mod:`labkit.losses` and :mod:`labkit.lora`; the figures in :mod:`labkit.plots`.
An explorer only wires a slider to them. The one-slider explorers share :class:`SliderExplorer`.
"""
from __future__ import annotations

import math

import ipywidgets as W

from labkit import plots
from labkit.losses import bradley_terry_probability, nats_to_bits, nll, ppo_clip_objective, softmax_with_temperature


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


# ------------------------------------------------------------------------------- PPO clip range

PPO_WORKED_CASES = ((0.3, 0.2), (0.2, 0.3))  # the lecture's (P_cur, P_prev): ratios 1.5 and 2/3


def ppo_clip_table(eps: float, advantage: float = 2.0):
    """The lecture's two PPO worked cases at clip range ``eps`` and ``advantage`` A, one row each.

    For (P_cur, P_prev) = (0.3, 0.2) and (0.2, 0.3), i.e. r = 1.5 and r = 2/3: the unclipped term
    r·A, the clipped ratio clip(r, 1−ε, 1+ε) and clipped·A, the objective min(r·A, clipped·A) from
    :func:`labkit.losses.ppo_clip_objective`, its gradient d objective / d r from autograd, and
    whether the clip binds (gradient zero). With ε = 0.2, A = 2: r = 1.5 → min(3.0, 2.4) = 2.4,
    gradient 0 (clipped); r = 2/3 → min(4/3, 1.6) = 4/3, gradient 2 (not clipped).
    """
    import pandas as pd
    import torch

    check_range("ε (the clip range)", eps, 0.05, 0.5)
    if isinstance(advantage, bool) or not isinstance(advantage, (int, float)) or not math.isfinite(advantage) \
            or advantage == 0:
        raise ValueError(f"advantage A must be a non-zero finite number; got {advantage!r}")
    ratios = [cur / prev for cur, prev in PPO_WORKED_CASES]
    ratio = torch.tensor(ratios, requires_grad=True)
    objective = ppo_clip_objective(ratio, torch.tensor(float(advantage)), eps)
    objective.sum().backward()  # rows are independent, so each ratio's gradient is its own row's
    rows = []
    for (cur, prev), r, obj, grad in zip(PPO_WORKED_CASES, ratios, objective.tolist(), ratio.grad.tolist()):
        clipped = min(max(r, 1 - eps), 1 + eps)
        rows.append({"P_cur": cur, "P_prev": prev, "ratio": r, "unclipped r·A": r * advantage,
                     "clipped ratio": clipped, "clipped·A": clipped * advantage, "objective (min)": obj,
                     "d objective / d ratio": grad, "clip binds?": grad == 0.0})
    return pd.DataFrame(rows)


class PPOClipExplorer(SliderExplorer):
    """A slider over PPO's clip range ε: the lecture's two ratios for A = +2 and A = −2, and the curves.

    The min in min(r·A, clip(r)·A) makes clipping one-sided: for A > 0 only r > 1+ε is flattened,
    for A < 0 only r < 1−ε.
    """

    EPS_MIN, EPS_MAX = 0.05, 0.5
    ADVANTAGE = 2.0

    def __init__(self, eps: float = 0.2):
        super().__init__(_slider(W.FloatSlider, eps, self.EPS_MIN, self.EPS_MAX, 0.01, "clip range ε",
                                 readout_format=".2f", continuous_update=False), eps)

    def compute(self, eps: float) -> dict:
        return {"eps": eps, "positive": ppo_clip_table(eps, self.ADVANTAGE),
                "negative": ppo_clip_table(eps, -self.ADVANTAGE)}

    def readout_html(self, eps: float, values: dict) -> str:
        def table(df):
            return df.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)

        pos, neg = values["positive"], values["negative"]
        a = self.ADVANTAGE
        return (f'<div style="font-size: 0.85em">'
                f"<b>A = +{a:g}</b> (a better-than-expected action) at ε = {eps:.2f}:{table(pos)}"
                f"<b>A = −{a:g}</b> (a worse-than-expected action):{table(neg)}"
                f"<p>Clipping is one-sided. For A &gt; 0 only the upper clip 1+ε = {1 + eps:.2f} can bind: "
                f"at r = 2/3 the gradient is still {pos['d objective / d ratio'].iloc[1]:.3f}, so "
                f"“the ratio should not fall below 1−ε” does not apply when A &gt; 0. For A &lt; 0 only the "
                f"lower clip 1−ε = {1 - eps:.2f} can bind: at r = 1.5 the gradient is still "
                f"{neg['d objective / d ratio'].iloc[0]:.3f}.</p></div>")

    def make_figure(self, eps: float, values: dict):
        return plots.ppo_clip_figure(eps, self.ADVANTAGE)


def ppo_clip_explorer(eps: float = 0.2) -> PPOClipExplorer:
    """The PPO clip-range explorer of lab 05 (starts at the lecture's ε = 0.2)."""
    return PPOClipExplorer(eps)


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


# ------------------------------------------------------------------------------- DPO's derivation, in numbers

DPO_TOY_REQUEST = ("harbor", 2, 0)  # (place, count, phrasing): "name two goods sold at the harbor ."
DPO_TOY_ANSWERS = (                 # (answer, its SFT probability); the best answer is the least likely
    ("fish , shells , ropes", 0.4),  # right goods, but one more than asked for
    ("fish , fish", 0.3),            # a repeated good counts as a wrong one
    ("apples , cakes", 0.2),         # goods of other places
    ("fish , shells", 0.1),          # the best answer: two right goods, nothing sharp
)
DPO_BETA_MIN, DPO_BETA_MAX = plots.DPO_BETA_RANGE  # the β slider's range


def dpo_toy() -> dict:
    """Lab 06's toy prompt: a real request of the village and four candidate answers to it.

    Returns ``place``, ``count``, ``prompt`` (the request in words: "name two goods sold at the
    harbor ."), ``answers`` (four strings), ``sft`` (the SFT policy's probabilities of them: fixed toy
    numbers, 0.4 / 0.3 / 0.2 / 0.1, as if the model could say only these four) and ``rewards`` (each
    answer's gold reward, computed here by :func:`labkit.world.preferences.gold_reward`: 1, 0, −2, 2).
    The best answer is the one the SFT policy finds least likely, so tilting towards reward has mass
    to move.
    """
    from labkit.world import preferences as prefs

    place, count, phrasing = DPO_TOY_REQUEST
    answers = [a for a, _ in DPO_TOY_ANSWERS]
    return {"place": place, "count": count, "prompt": prefs.prompt_text(place, count, phrasing),
            "answers": answers, "sft": [p for _, p in DPO_TOY_ANSWERS],
            "rewards": [prefs.gold_reward(place, a, count) for a in answers]}


def _check_beta(beta) -> None:
    check_range("β (the KL strength)", beta, DPO_BETA_MIN, DPO_BETA_MAX)


def _toy_optimum(beta: float):
    """:func:`dpo_toy` at ``beta`` as float64 tensors: ``(toy, π_SFT, r, π*, log Z)``."""
    import torch

    from labkit import losses

    _check_beta(beta)
    toy = dpo_toy()
    sft = torch.tensor(toy["sft"], dtype=torch.float64)
    rewards = torch.tensor(toy["rewards"], dtype=torch.float64)
    return toy, sft, rewards, losses.tilted_policy(sft, rewards, beta), losses.log_partition(sft, rewards, beta)


def dpo_tilt_table(beta: float):
    """The optimum π*(y) = π_SFT(y)·exp(r(y)/β)/Z on lab 06's toy (:func:`dpo_toy`), and r read back from it.

    One row per answer: ``answer``, ``π_SFT``, ``gold r``, ``π*`` (from
    :func:`labkit.losses.tilted_policy`), ``β·log(π*/π_SFT)`` (the implicit reward: r shifted down by
    the same β·log Z for every answer) and ``+ β·log Z`` (which gives r back exactly).

    Returns ``(table, summary)``; ``summary`` holds ``beta``, ``Z``, ``beta_log_Z``, ``sft_reward``
    (E_SFT[r]), ``reward`` (E_π*[r]) and ``kl`` (KL(π* ‖ π_SFT), nats). At β = 1:
    Z = 0.4·e + 0.3 + 0.2·e⁻² + 0.1·e² = 2.153, π* = (0.505, 0.139, 0.013, 0.343), E_π*[r] = 1.166
    (E_SFT[r] = 0.2) and KL = 0.399 nats.
    """
    import pandas as pd

    from labkit import losses

    toy, sft, rewards, star, log_z = _toy_optimum(beta)
    implied = losses.implicit_reward(star.log(), sft.log(), beta)
    table = pd.DataFrame({"answer": toy["answers"], "π_SFT": toy["sft"], "gold r": toy["rewards"],
                          "π*": star.tolist(), "β·log(π*/π_SFT)": implied.tolist(),
                          "+ β·log Z": (implied + beta * log_z).tolist()})
    summary = {"beta": float(beta), "Z": math.exp(log_z), "beta_log_Z": beta * log_z,
               "sft_reward": float((sft * rewards).sum()),
               "reward": losses.tilted_expected_reward(sft, rewards, beta), "kl": losses.tilted_kl(sft, rewards, beta)}
    return table, summary


def dpo_objective_check(beta: float, policies: int = 10_000, seed: int = 0) -> dict:
    """Why π* is the optimum, on lab 06's toy: J(π) = E_π[r] − β·KL(π ‖ π_SFT) = β·log Z − β·KL(π ‖ π*).

    Writing E_π[r] as Σ π·β·log(exp(r/β)) and gathering the logs, J(π) = −β·Σ π·log(π / (π_SFT·exp(r/β)))
    = −β·Σ π·log(π / (π*·Z)) = β·log Z − β·KL(π ‖ π*). KL ≥ 0, and 0 only at π = π*: no policy beats
    π*, and J(π*) = β·log Z. Checked on ``policies`` random policies over the toy's four answers
    (Dirichlet(1) draws, ``seed``): ``J_star`` and ``beta_log_Z`` (equal), ``best_random`` (the
    highest J among them, below J(π*)), ``identity_error`` (the largest |J(π) − (β·log Z − β·KL(π ‖ π*))|,
    round-off) and ``beaten`` (how many random policies scored above π*: 0).
    """
    import torch

    _, sft, rewards, star, log_z = _toy_optimum(beta)

    def objective(pi):  # E_π[r] − β·KL(π ‖ π_SFT), one value per row of π
        return (pi * rewards).sum(-1) - beta * (pi * (pi / sft).log()).sum(-1)

    gen = torch.Generator().manual_seed(seed)
    draws = -torch.rand(policies, len(sft), dtype=torch.float64, generator=gen).log()  # exponential(1) draws
    pis = draws / draws.sum(-1, keepdim=True)  # normalised: Dirichlet(1), uniform over the policies on four answers
    values = objective(pis)
    via_star = beta * log_z - beta * (pis * (pis / star).log()).sum(-1)
    j_star = float(objective(star[None])[0])
    return {"beta": float(beta), "J_star": j_star, "beta_log_Z": beta * log_z, "best_random": float(values.max()),
            "identity_error": float((values - via_star).abs().max()), "beaten": int((values > j_star).sum()),
            "policies": policies}


def dpo_bt_check(beta: float):
    """Z cancels: Bradley–Terry's P(y_w ≻ y_l) from the true rewards and from the implicit ones agree.

    One row per pair of :func:`dpo_toy`'s answers, y_w the one with the higher gold reward (six
    pairs): the gap r_w − r_l and P(y_w ≻ y_l) = σ(r_w − r_l); the gap of the implicit rewards
    r̂ = β·log(π*/π_SFT), which lack β·log Z, and σ of it; and the difference of the two
    probabilities, zero up to round-off (about 1e-16). This is why DPO never needs Z.
    """
    import pandas as pd

    from labkit.losses import bradley_terry_probability

    table, _ = dpo_tilt_table(beta)
    rows = []
    for w in table.itertuples(index=False):
        for lose in table.itertuples(index=False):
            if w[2] <= lose[2]:
                continue
            true_gap, implied_gap = w[2] - lose[2], w[4] - lose[4]
            p_true, p_implied = bradley_terry_probability(true_gap), bradley_terry_probability(implied_gap)
            rows.append({"y_w (better)": w[0], "y_l": lose[0], "r_w − r_l": true_gap, "P(y_w ≻ y_l) from r": p_true,
                         "r̂_w − r̂_l (no log Z)": implied_gap, "P(y_w ≻ y_l) from r̂": p_implied,
                         "difference": p_implied - p_true})
    return pd.DataFrame(rows)


def _three(x) -> str:
    """Three decimals, with round-off like −2e-16 shown as 0.000 (not −0.000)."""
    return f"{round(x, 3) + 0.0:.3f}"


def _probability(x) -> str:
    """Three decimals, or scientific notation for a tiny probability (π* of a hopeless answer)."""
    return f"{x:.1e}" if 0 < x < 5e-4 else _three(x)


class DPOTiltExplorer(SliderExplorer):
    """A log slider over β: the tilted optimum π* on lab 06's toy prompt, r read back from it, and Z cancelling.

    Small β lets π* move far from π_SFT towards the best answer (high reward, large KL); large β
    keeps it close (reward and KL of the SFT policy).
    """

    BETA_MIN, BETA_MAX = DPO_BETA_MIN, DPO_BETA_MAX

    def __init__(self, beta: float = 1.0):
        self.toy = dpo_toy()
        super().__init__(_slider(W.FloatLogSlider, beta, math.log10(self.BETA_MIN), math.log10(self.BETA_MAX), 0.01,
                                 "β (KL strength)", base=10, readout_format=".3g", continuous_update=False), beta)

    def compute(self, beta: float) -> dict:
        """The table, summary and Bradley–Terry check at ``beta``, with ``pi_star``, ``reward``, ``kl``."""
        if isinstance(beta, float):
            beta = float(f"{beta:.12g}")  # the log slider's end 10^log10(0.05) is 0.04999…: read 0.05
        table, summary = dpo_tilt_table(beta)
        return {"beta": beta, "table": table, "summary": summary, "bt": dpo_bt_check(beta),
                "pi_star": table["π*"].tolist(), "reward": summary["reward"], "kl": summary["kl"]}

    def readout_html(self, beta: float, values: dict) -> str:
        def table(df, formatters):
            return df.to_html(index=False, float_format=_three, formatters=formatters, border=0)

        s, bt = values["summary"], values["bt"]
        return (f'<div style="font-size: 0.85em">'
                f"<b>β = {values['beta']:.3g}</b>: π*(y) = π_SFT(y)·exp(r(y)/β) / Z for the request "
                f"“{self.toy['prompt']}”{table(values['table'], {'π*': _probability})}"
                f"<p>Z = {s['Z']:.4g}, β·log Z = {s['beta_log_Z']:.3f}; E_SFT[r] = {s['sft_reward']:.3f} → "
                f"<b>E_π*[r] = {s['reward']:.3f}</b>; <b>KL(π* ‖ π_SFT) = {s['kl']:.3f} nats</b>.</p>"
                f"<p>Bradley–Terry sees only reward differences, so β·log Z cancels: P(y_w ≻ y_l) from "
                f"r̂ = β·log(π*/π_SFT) equals P from r (largest difference "
                f"{bt['difference'].abs().max():.1e}).</p>{table(bt, {'difference': lambda x: f'{x:.1e}'})}</div>")

    def make_figure(self, beta: float, values: dict):
        return plots.dpo_tilt_figure(self.toy["answers"], self.toy["sft"], self.toy["rewards"], values["beta"])


def dpo_tilt_explorer(beta: float = 1.0) -> DPOTiltExplorer:
    """The β explorer of lab 06: DPO's derivation in numbers on one prompt with four answers."""
    return DPOTiltExplorer(beta)


def dpo_gradient_table(beta: float, seed: int = 0):
    """DPO's gradient on lab 06's toy: autograd, the formula, finite differences, the slide as written.

    A policy with one logit per answer of :func:`dpo_toy`, drifted at random from π_SFT (``seed``),
    and the pair y_w = the best answer, y_l = the SFT policy's favourite. One row per logit θ_y:
    ``answer``, ``gold r``, ``π_SFT``, ``π_θ`` and ∂L/∂θ_y by ``autograd``, by the ``formula``
    −β·σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)), by ``finite differences``, and ``slide as written``
    −σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)): the lecture slide's right weight without the factor β
    that ∇r̂ = β·∇log π carries, so 1/β times the true gradient. See
    :func:`labkit.losses.dpo_gradient_check`.

    Returns ``(table, summary)``; ``summary`` holds ``beta``, ``chosen`` and ``rejected`` (answers),
    ``margin`` (u = r̂_w − r̂_l), ``logratio_margin`` (u/β, the log-ratio difference the policy has
    drifted to), ``weight`` (σ(−u)), ``push`` (β·σ(−u), how far autograd moves each of the pair's two
    logits), ``slide_push`` (the same by the slide as written), ``slide_ratio`` (slide over autograd,
    1/β), ``loss``, and the largest gaps between autograd and the formula, the finite differences, and
    β times the slide as written.
    """
    import pandas as pd

    from labkit.losses import dpo_gradient_check

    _check_beta(beta)
    toy = dpo_toy()
    chosen = max(range(len(toy["answers"])), key=lambda i: toy["rewards"][i])
    rejected = max(range(len(toy["answers"])), key=lambda i: toy["sft"][i])
    check = dpo_gradient_check(toy["sft"], chosen, rejected, beta, seed=seed)
    table = pd.DataFrame({"answer": toy["answers"], "gold r": toy["rewards"], "π_SFT": toy["sft"],
                          "π_θ": check["policy"].tolist(), "autograd": check["autograd"].tolist(),
                          "formula": check["formula"].tolist(),
                          "finite differences": check["finite_difference"].tolist(),
                          "slide as written": check["slide"].tolist()})

    def gap(gradient):
        return float((gradient - check["autograd"]).abs().max())

    push, slide_push = -float(check["autograd"][chosen]), -float(check["slide"][chosen])  # the chosen logit rises
    summary = {"beta": float(beta), "chosen": toy["answers"][chosen], "rejected": toy["answers"][rejected],
               "margin": float(check["margin"]), "logratio_margin": float(check["margin"]) / beta,
               "weight": float(check["weight"]), "push": push, "slide_push": slide_push,
               "slide_ratio": slide_push / push, "loss": float(check["loss"]),
               "formula_gap": gap(check["formula"]), "finite_difference_gap": gap(check["finite_difference"]),
               "slide_times_beta_gap": gap(beta * check["slide"])}
    return table, summary


# ------------------------------------------------------------------------------- GRPO's group advantage

def grpo_group_table(group_size: int = 8, right: int = 1):
    """One group of ``group_size`` answers of which ``right`` are right (reward 1) and the rest wrong (0).

    Columns: ``answer`` (1..G), ``reward``, and ``advantage`` as GRPO computes it
    (:func:`labkit.losses.grpo_advantages`: reward minus the group mean, over the group's unbiased
    std + 1e-4). With ``right`` 0 or G every advantage is 0: the group teaches nothing.
    """
    import pandas as pd
    import torch

    from labkit.losses import grpo_advantages

    check_range("group size G", group_size, 2, 64, integer=True)
    check_range("right answers in the group", right, 0, group_size, integer=True)
    rewards = torch.tensor([1.0] * right + [0.0] * (group_size - right))
    advantages = grpo_advantages(rewards, group_size)
    return pd.DataFrame({"answer": range(1, group_size + 1), "reward": rewards.tolist(),
                         "advantage": advantages.tolist()})


class GRPOGroupExplorer(SliderExplorer):
    """A slider over how many of a group's G answers are right: each answer's GRPO advantage."""

    def __init__(self, group_size: int = 8, right: int = 1):
        self.group_size = group_size
        super().__init__(_slider(W.IntSlider, right, 0, group_size, 1, f"right answers of G = {group_size}",
                                 continuous_update=False), right)

    def compute(self, right: int) -> dict:
        table = grpo_group_table(self.group_size, int(right))
        return {"right": int(right), "table": table,
                "right_advantage": float(table.loc[table.reward == 1, "advantage"].iloc[0]) if right else None,
                "wrong_advantage": float(table.loc[table.reward == 0, "advantage"].iloc[0])
                if right < self.group_size else None}

    def readout_html(self, right: int, values: dict) -> str:
        g = self.group_size
        if right in (0, g):
            return (f"<b>{right} of {g} right: every reward is {'1' if right else '0'}, the group's std is 0, and "
                    "every advantage is 0.</b> This group teaches nothing, however many answers it has.")
        plus, minus = (f"{values[k]:+.3f}".replace("-", "−") for k in ("right_advantage", "wrong_advantage"))
        return (f"<b>{right} of {g} right</b>: mean reward {right / g:.3f}; each right answer gets advantage "
                f"<b>{plus}</b>, each wrong one <b>{minus}</b>. "
                "The advantages sum to 0: the group's mean is the baseline a critic would otherwise learn.")

    def make_figure(self, right: int, values: dict):
        return plots.grpo_group_figure(values["table"])


def grpo_group_explorer(group_size: int = 8, right: int = 1) -> GRPOGroupExplorer:
    """The group-advantage explorer of lab 07 (G = 8, one right answer to start)."""
    return GRPOGroupExplorer(group_size, right)

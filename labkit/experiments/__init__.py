"""The labs' experiments: demonstrations and sweeps, each a function a notebook calls once.

They sit above the pipeline (they start from its cached stages) and below the widgets (whose run
panels call them). Trainers live in :mod:`labkit.train`; an experiment prepares its data, calls a
trainer and measures the result.

* :mod:`labkit.experiments.pretraining` — lab 01's small pretraining runs (memorisation, the size
  sweep, the run panel): :func:`~labkit.experiments.pretraining.quick_run`.
* :mod:`labkit.experiments.instruction` — lab 02's SFT demonstrations (forgetting, imbalance, label
  noise, ambiguity) and lab 03's LoRA rank runs.
* :mod:`labkit.experiments.reward` — lab 04's reward-model data-size sweep.
* :mod:`labkit.experiments.alignment` — lab 05's PPO runs (the run panel, over-optimisation) and lab
  06's DPO runs (the β panel, off-policy vs on-policy pairs).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    """One run of a lab experiment: a row for a runs table, its training curve, and what it produced.

    Every experiment function returns one; the run panels put ``row`` in their table, draw
    ``history`` and keep ``outputs`` (e.g. the trained model) at hand.
    """

    row: dict                                           # settings and results (numbers, short strings)
    history: list[dict] = field(default_factory=list)   # logged training points ({"step", "train_loss"})
    outputs: dict = field(default_factory=dict)         # trained model and tokenizer, per-example scores, …

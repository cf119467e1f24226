"""The labs' experiments: demonstrations and sweeps, each a function a notebook calls once.

They sit above the pipeline (they start from its cached stages) and below the widgets (whose run
panels call them). Trainers live in :mod:`labkit.train`; an experiment prepares its data, calls a
trainer and measures the result.

* :mod:`labkit.experiments.pretraining` — lab 01's small pretraining runs (memorisation, the size
  sweep, the run panel): :func:`~labkit.experiments.pretraining.quick_run`.
* :mod:`labkit.experiments.instruction` — lab 02's SFT demonstrations (forgetting, imbalance, label
  noise, ambiguity) and lab 03's LoRA rank runs.
"""

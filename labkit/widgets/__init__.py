"""Interactive widgets (ipywidgets), in two kinds.

* **Explorers** (:mod:`labkit.widgets.explorers`) are instant: a slider moves, a small pure function
  from :mod:`labkit.losses` or :mod:`labkit.lora` runs, a number and a figure change.
  :func:`neg_log_explorer` (−log p), :func:`temperature_explorer`, :func:`bradley_terry_explorer`,
  :func:`lora_params_explorer`, :func:`ppo_clip_explorer` (lab 05's clip range ε),
  :func:`dpo_tilt_explorer` (lab 06's β: DPO's derivation in numbers, with :func:`dpo_tilt_table`,
  :func:`dpo_bt_check` and :func:`dpo_gradient_table` on the toy of :func:`dpo_toy`),
  :func:`grpo_group_explorer` (lab 07: each answer's advantage in a group of G, :func:`grpo_group_table`).
* **Run panels** (:mod:`labkit.widgets.panels`) train for real, all on one base, :class:`RunPanel`:
  sliders choose the settings, *Train* runs the training, curves grow live, and every finished run
  stays on the figures and in a table so runs can be compared. :func:`pretrain_panel` (lab 01),
  :func:`imbalance_panel` and :func:`noise_panel` (lab 02), :func:`lora_panel` (lab 03),
  :func:`ppo_panel` (lab 05: ε, β, LoRA rank, learning rate), :func:`dpo_panel` (lab 06: β on a
  log scale, LoRA rank, learning rate) and :func:`grpo_panel` (lab 07: group size G, ε, β, μ), the
  last three one :class:`PolicyPanel` configured by a :class:`PolicySpec` per method.

Every callback is an ordinary method that works without a browser (``explorer.update(0.3)``,
``panel.train_once(steps=100)``, ``panel.runs_table()``); the buttons and sliders only call them.
That is how the tests drive the widgets, and how you can script them too.
"""
from labkit.widgets.explorers import (BradleyTerryExplorer, DPOTiltExplorer, GRPOGroupExplorer, LoRAParamsExplorer,
                                      NegLogExplorer, grpo_group_explorer, grpo_group_table,
                                      PPOClipExplorer, SliderExplorer, TemperatureExplorer, bradley_terry_explorer,
                                      dpo_bt_check, dpo_gradient_table, dpo_objective_check, dpo_tilt_explorer, dpo_tilt_table, dpo_toy,
                                      lora_params_explorer, neg_log_explorer, neg_log_values, ppo_clip_explorer,
                                      ppo_clip_table, temperature_explorer)
from labkit.widgets.panels import (ExperimentPanel, PolicyPanel, PolicySpec, PretrainPanel, RunPanel, dpo_panel,
                                   grpo_panel, imbalance_panel, lora_panel, noise_panel, ppo_panel, pretrain_panel)

__all__ = ["BradleyTerryExplorer", "DPOTiltExplorer", "ExperimentPanel", "GRPOGroupExplorer", "PolicyPanel", "PolicySpec",
           "grpo_group_explorer", "grpo_group_table", "grpo_panel", "LoRAParamsExplorer", "NegLogExplorer",
           "PPOClipExplorer", "PretrainPanel", "RunPanel", "SliderExplorer", "TemperatureExplorer",
           "bradley_terry_explorer", "dpo_bt_check", "dpo_gradient_table", "dpo_objective_check", "dpo_panel", "dpo_tilt_explorer", "dpo_tilt_table",
           "dpo_toy", "imbalance_panel", "lora_panel", "lora_params_explorer", "neg_log_explorer", "neg_log_values",
           "noise_panel", "ppo_clip_explorer", "ppo_clip_table", "ppo_panel", "pretrain_panel",
           "temperature_explorer"]

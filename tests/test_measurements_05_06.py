"""Labs 05 and 06's demonstrations as measurements: the figures their cells show are the figures the
reference run stores (same helpers, same names), worked on small made-up inputs; nothing trains here."""
import fnmatch
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from labkit import reference
from labkit.experiments import alignment
from labkit.presets import get_preset

LABS = Path(__file__).resolve().parent.parent / "labs"

EVALUATIONS = [  # a made-up over-optimisation run: the gold reward peaks twice at 1.0, the proxy keeps rising
    {"step": 0, "heldout_gold": -0.5, "heldout_proxy": -1.0, "heldout_kl": 0.0},
    {"step": 5, "heldout_gold": 1.0, "heldout_proxy": 0.0, "heldout_kl": 2.0},
    {"step": 10, "heldout_gold": 1.0, "heldout_proxy": 0.5, "heldout_kl": 5.0},
    {"step": 15, "heldout_gold": -0.25, "heldout_proxy": 2.0, "heldout_kl": 50.0},
]
BEST_OF_N = pd.DataFrame([{"n": 1, "proxy": -1.0, "gold": -0.5, "kl": 0.0},
                          {"n": 2, "proxy": -0.5, "gold": 0.0, "kl": 0.19},
                          {"n": 4, "proxy": 0.25, "gold": 0.5, "kl": 0.64}])
DPO_ROW = {"beta": 0.05, "rank": 0, "pairs": "world pairs", "win_rate": 0.7, "gold_reward": 0.5,
           "sft_gold_reward": -0.5, "kl": 8.0, "implicit_accuracy": 0.75, "chosen_logratio": -8.0,
           "rejected_logratio": -20.0, "train_seconds": 40.0, "trainable_parameters": 1000}
PAIRS = [{"gold_chosen": 2.0, "gold_rejected": 1.0}, {"gold_chosen": 0.0, "gold_rejected": 1.0},  # right, wrong,
         {"gold_chosen": 1.0, "gold_rejected": 1.0}, {"gold_chosen": 3.0, "gold_rejected": -1.0}]  # a tie, right


CLIP_ROWS = [{"eps": eps, "beta": beta, "rank": 8, "win_rate": 0.5 + beta, "gold_reward": 1.0 - eps, "kl": 4.0,
              "proxy_reward": 2.0, "sft_gold_reward": -0.5, "train_seconds": 50.0, "trainable_parameters": 41_000}
             for eps, beta in alignment.CLIP_VS_PENALTY]


def test_clip_vs_penalty_figures_and_the_panels_starting_table(monkeypatch):
    figures = alignment.clip_vs_penalty_figures(CLIP_ROWS)
    assert list(figures) == ["eps_0p05_beta_0", "eps_0p2_beta_0", "eps_0p5_beta_0", "eps_0p5_beta_0p1",
                             "eps_0p5_beta_0p5"]
    assert figures["eps_0p5_beta_0p1"] == {"eps": 0.5, "beta": 0.1, "win_rate": 0.6, "gold_reward": 0.5, "kl": 4.0,
                                           "proxy_reward": 2.0}
    asked = []
    monkeypatch.setattr(reference, "figure", lambda name, preset="cpu": asked.append((name, preset)) or figures)
    table = alignment.clip_vs_penalty_table()
    assert asked == [("demos.lab05_clip_vs_penalty", "cpu")]
    assert table[["eps", "beta"]].values.tolist() == [list(p) for p in alignment.CLIP_VS_PENALTY]
    monkeypatch.setattr(reference, "figure", lambda name, preset="cpu": None)
    assert alignment.clip_vs_penalty_table() is None  # not measured yet: the lab says so


class Stop(Exception):
    """Raised by a stand-in to end a run before it trains."""


def _ppo_calls(monkeypatch, *names: str, preset) -> list[dict]:
    """The keyword arguments each measurement in ``names`` hands :func:`alignment.ppo_experiment` (nothing trains)."""
    calls = []

    def record(**kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(alignment, "ppo_experiment", record)
    for name in names:
        with pytest.raises(Stop):
            reference.MEASUREMENTS[name].run(preset)
    return calls


def test_gold_reward_figures_are_the_rows_win_rate_gold_kl_and_proxy():
    assert alignment.gold_reward_figures(CLIP_ROWS[3]) == {"win_rate": 0.6, "gold_reward": 0.5, "kl": 4.0,
                                                           "proxy_reward": 2.0}


def test_the_ceiling_run_is_the_stages_recipe_scored_by_the_gold_reward(monkeypatch):
    """Lab 05, section 7: ``lab05_gold_reward`` changes no PPO setting, only the reward (``gold=True``),
    and ``run_ppo`` then hands PPO the world's gold reward, not the reward model."""
    from labkit import evaluate
    from labkit.stages import ppo as ppo_stage

    preset = get_preset("cpu")
    assert _ppo_calls(monkeypatch, "lab05_gold_reward", preset=preset) == [{"preset": preset, "gold": True}]

    handed = []
    monkeypatch.setattr(ppo_stage.checkpoint, "load_checkpoint", lambda *a, **k: (object(), object(), {}))
    monkeypatch.setattr(ppo_stage, "heldout_judge", lambda *a, **k: None)
    monkeypatch.setattr(ppo_stage, "train_ppo", lambda policy, tok, prompts, reward_fn, *a, **k:
                        handed.append(reward_fn) or (_ for _ in ()).throw(Stop()))
    for gold in (True, False):
        with pytest.raises(Stop):
            ppo_stage.run_ppo(preset, Path("sft"), Path("reward"), gold=gold)
    assert handed[0] is evaluate.gold_reward_fn and handed[1] is not evaluate.gold_reward_fn


def test_ppo_and_dpo_runs_record_their_stages_recipe_as_read(monkeypatch):
    """Every lab 05 PPO run takes the `ppo` stage's settings (and lab 06's DPO runs the `dpo` stage's), so
    a measurement made with one is out of date once that stage's key moves (:func:`labkit.results.outdated`)."""
    from labkit import pipeline

    def stop(*args, **kwargs):
        raise Stop

    preset = get_preset("smoke")
    monkeypatch.setattr(alignment.pipeline, "ensure", lambda stage, preset, progress=False: Path(stage))
    monkeypatch.setattr(alignment, "run_ppo", stop)
    monkeypatch.setattr(alignment, "run_dpo", stop)
    for run, stage in ((lambda: alignment.ppo_experiment(preset=preset, gold=True), "ppo"),
                       (lambda: alignment.dpo_experiment(preset=preset), "dpo")):
        with pipeline.reading(preset) as found, pytest.raises(Stop):
            run()
        assert found == {stage: pipeline.stage_key(stage, preset)}


def test_overoptimisation_figures_take_the_first_peak_the_ends_and_best_of_n_at_its_largest_n():
    found = alignment.overoptimisation_figures(EVALUATIONS, BEST_OF_N)
    assert found == {"start_gold": -0.5, "peak_gold": 1.0, "peak_kl": 2.0, "peak_iteration": 5, "final_gold": -0.25,
                     "final_kl": 50.0, "start_proxy": -1.0, "final_proxy": 2.0, "best_of_n_gold": 0.5,
                     "best_of_n_proxy": 0.25}
    assert "best_of_n_gold" not in alignment.overoptimisation_figures(EVALUATIONS)
    json.dumps(found, allow_nan=False)  # plain numbers, ready for results/<preset>.json


def test_memory_dpo_and_onpolicy_figures():
    rows = [{"rank": 0, "measure": "rss", "before_MB": 300.0, "peak_MB": 340.0, "added_MB": 40.0,
             "trainable_parameters": 450_000, "parameters_in_memory": 1_300_000, "state_MB": 12.0},
            {"rank": 8, "measure": "rss", "before_MB": 300.0, "peak_MB": 335.0, "added_MB": 35.0,
             "trainable_parameters": 41_000, "parameters_in_memory": 900_000, "state_MB": 4.2}]
    memory = alignment.memory_figures(rows)
    assert set(memory) == {"full", "lora"} and memory["lora"]["trainable_parameters"] == 41_000
    assert set(memory["full"]) == set(alignment.MEMORY_FIGURES)
    assert alignment.dpo_figures(DPO_ROW) == {k: DPO_ROW[k] for k in alignment.DPO_FIGURES}
    found = alignment.onpolicy_figures(PAIRS, PAIRS[:2], DPO_ROW)
    assert found["world_label_accuracy"] == pytest.approx(2.5 / 4)  # a gold tie counts half
    assert found["onpolicy_label_accuracy"] == pytest.approx(0.5)
    assert found["kl"] == 8.0


def _figures(name: str) -> set[str]:
    """Every figure key a measurement returns (made-up inputs through its figures helper)."""
    made_up = {"lab05_overoptimisation": alignment.overoptimisation_figures(EVALUATIONS, BEST_OF_N),
               "lab05_overopt_penalty": alignment.overoptimisation_figures(EVALUATIONS),
               "lab05_clip_vs_penalty": alignment.clip_vs_penalty_figures(CLIP_ROWS),
               "lab05_gold_reward": alignment.gold_reward_figures(CLIP_ROWS[1]),
               "lab05_memory": {"full": dict.fromkeys(alignment.MEMORY_FIGURES, 1.0),
                                "lora": dict.fromkeys(alignment.MEMORY_FIGURES, 1.0)},
               "lab06_small_beta": alignment.dpo_figures(DPO_ROW),
               "lab06_onpolicy": alignment.onpolicy_figures(PAIRS, PAIRS[:2], DPO_ROW)}
    return set(reference.flatten(made_up[name]))


@pytest.mark.parametrize("name, lab", [("lab05_overoptimisation", "05"), ("lab05_overopt_penalty", "05"),
                                       ("lab05_clip_vs_penalty", "05"), ("lab05_gold_reward", "05"),
                                       ("lab05_memory", "05"),
                                       ("lab06_small_beta", "06"), ("lab06_onpolicy", "06")])
def test_each_demonstration_is_declared_and_its_tolerances_name_its_figures(name, lab):
    declared = reference.MEASUREMENTS[name]
    assert declared.lab == lab and declared.seconds > 0
    keys = {key.rsplit(".", 1)[-1] for key in _figures(name)}
    for pattern in declared.across_machines:
        assert any(fnmatch.fnmatchcase(key, pattern) for key in keys), f"{name}: {pattern!r} matches no figure"


def _code(lab: str) -> list[str]:
    cells = json.loads(next(LABS.glob(f"{lab}_*.ipynb")).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("lab", ["05", "06"])
def test_the_labs_show_figures_the_measurements_store(lab):
    shown = set()
    for cell in _code(lab):
        prefix = re.search(r'prefix = "demos\.(\w+)\."', cell)
        if prefix:
            shown |= {(prefix.group(1), key) for key in re.findall(r'prefix \+ "(\w+)"', cell)}
        shown |= {(name, f"{layout}.{key}") for name in re.findall(r'f"demos\.(lab05_memory)\.\{layout\}', cell)
                  for layout in ("full", "lora") for key in ("trainable_parameters", "state_MB", "added_MB")}
    names = {name for name, _ in shown}
    assert names == {"05": {"lab05_overoptimisation", "lab05_overopt_penalty", "lab05_gold_reward", "lab05_memory"},
                     "06": {"lab06_small_beta", "lab06_onpolicy"}}[lab]
    for name, key in shown:
        assert key in _figures(name), f"lab {lab} shows demos.{name}.{key}, which the measurement does not store"


def test_both_over_optimisation_runs_take_the_demos_learning_rate_and_budget_and_differ_only_in_beta(monkeypatch):
    """Lab 05, section 7: the β = 0 run and the penalised one share ``ppo_demos``' learning rate and
    iterations (the lab's cells pass the same), so the KL penalty is the only difference."""
    preset = get_preset("cpu")
    free, held = _ppo_calls(monkeypatch, "lab05_overoptimisation", "lab05_overopt_penalty", preset=preset)
    demos = preset.ppo_demos
    assert free.pop("beta") == demos.overopt_beta and held.pop("beta") == preset.ppo.beta
    assert free == held and free["lr"] == demos.overopt_lr and free["iterations"] == demos.overopt_iterations
    assert free["reward_stage"] == "reward_naive"
    runs = [cell for cell in _code("05") if "reward_stage=\"reward_naive\"" in cell]
    assert len(runs) == 2 and all("lr=demos.overopt_lr" in cell and "iterations=demos.overopt_iterations" in cell
                                  for cell in runs)

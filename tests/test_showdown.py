"""Lab 08's showdown: the shared budget, the open problems' measures on answers worked out by hand,
the cached race under the smoke preset, and its figures."""
import json
import math

import pandas as pd
import pytest

from labkit import evaluate, plots
from labkit.experiments import showdown as sd
from labkit.metrics import win_rate
from labkit.presets import get_preset
from labkit.world import preferences as prefs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ppo_and_grpo_sample_the_same_number_of_answers():
    cpu = get_preset("cpu")
    assert sd.grpo_steps(cpu) == 60  # 60 PPO iterations × 32 prompts × 4 answers = 60 GRPO steps × 16 × 8
    assert (sd.grpo_steps(cpu) * cpu.grpo.prompts_per_step * cpu.grpo.group_size
            == cpu.ppo.iterations * cpu.ppo.prompts_per_batch * cpu.ppo.samples_per_prompt == 7680)
    smoke = get_preset("smoke")  # 3 × 4 × 2 = 24 answers; GRPO steps of 2 × 2 = 4 answers: 6 steps
    assert sd.grpo_steps(smoke) == 6


def test_unknown_method_and_changed_preset_are_refused():
    with pytest.raises(ValueError, match="Unknown method 'RLHF'. Methods: SFT, best-of-n, PPO"):
        sd.run_method("smoke", "RLHF")
    changed = get_preset("smoke").replace(seed=3)
    with pytest.raises(ValueError, match="reads its preset by name"):
        sd.showdown(changed, progress=False)


def _race(answers: dict[str, list[str]], greedy: dict[str, list[str] | None]) -> sd.Showdown:
    """A race whose answers are given: one answer per held-out prompt for each method."""
    heldout = prefs.alignment_prompts("heldout")
    tables, rows = {}, {}
    for method, texts in answers.items():
        scored = [prefs.gold_aspects(p["place"], a, p["count"]) for p, a in zip(heldout, texts)]
        tables[method] = pd.DataFrame({
            "group": [p["group"] for p in heldout], "place": [p["place"] for p in heldout], "answer": texts,
            "helpfulness": [s["helpfulness"] for s in scored], "safety": [s["safety"] for s in scored],
            "gold": [s["helpfulness"] + s["safety"] for s in scored],
            "proxy": [s["helpfulness"] for s in scored]})  # a 'reward model' blind to safety
        rows[method] = {"gold_reward": tables[method]["gold"].mean()}
    table = pd.DataFrame(rows).T.rename_axis("method")
    return sd.Showdown(table=table, curves={m: [] for m in answers}, answers=tables, greedy=greedy)


def _answers(by_place) -> list[str]:
    return [by_place(p) for p in prefs.alignment_prompts("heldout")]


def test_aspects_at_the_workshop_pull_apart():
    helpful = _answers(lambda p: "hammers , nails , saws" if p["place"] == "workshop" else prefs.best_response(p["place"]))
    safe = _answers(lambda p: prefs.best_response(p["place"], p["count"]))
    table = sd.aspects_by_place(_race({"helpful": helpful, "safe": safe}, {"helpful": None, "safe": None}))
    workshop = [p for p in prefs.alignment_prompts("heldout") if p["place"] == "workshop"]
    assert len(workshop) == 4 and workshop[0]["count"] is not None  # the workshop's held-out request asks for a number
    # naming three sharp tools: −2 each; as many right goods as asked (or 3 if more are asked)
    count = workshop[0]["count"]
    assert table.loc["helpful", "workshop: safety"] == -6.0
    assert table.loc["helpful", "workshop: helpfulness"] == min(3, count) - max(0, 3 - count)
    assert table.loc["safe", "workshop: safety"] == 0.0
    assert table.loc["safe", "workshop: helpfulness"] == prefs.best_gold_reward("workshop", count)


def test_instability_counts_agreeing_phrasings():
    heldout = prefs.alignment_prompts("heldout")
    steady = [prefs.best_response(p["place"], p["count"]) for p in heldout]
    # the first phrasing of every request gets an empty answer: 3 of its 6 pairs disagree
    shaky = ["" if p["phrasing"] == 0 else a for p, a in zip(heldout, steady)]
    table = sd.instability(_race({"steady": steady, "shaky": shaky, "bon": steady},
                                 {"steady": steady, "shaky": shaky, "bon": None}))
    assert "bon" not in table.index  # no greedy answer: left out
    assert table.loc["steady", "same answer"] == 1.0 and table.loc["steady", "gold spread"] == 0.0
    assert table.loc["shaky", "same answer"] == pytest.approx(0.5)
    spread = sum(prefs.best_gold_reward(g[0]["place"], g[0]["count"]) - prefs.gold_reward(g[0]["place"], "", g[0]["count"])
                 for g in prefs.paraphrase_groups("heldout").values()) / 12
    assert table.loc["shaky", "gold spread"] == pytest.approx(spread)
    assert table.loc["shaky", "requests"] == 12


def test_judge_difficulty_by_hand():
    heldout = prefs.alignment_prompts("heldout")
    best = [prefs.best_response(p["place"], p["count"]) for p in heldout]
    worse = ["" if i % 2 else a for i, a in enumerate(best)]  # half the answers empty, half the same
    race = _race({"SFT": worse, "A": best, "B": best}, {})
    table = sd.judge_difficulty(race, [("SFT", "A"), ("A", "B")])
    row = table.loc["SFT vs A"]
    assert row["ties"] == 0.5 and row["pairs"] == 48
    gaps = [prefs.best_gold_reward(p["place"], p["count"]) - prefs.gold_reward(p["place"], "", p["count"])
            for i, p in enumerate(heldout) if i % 2]
    assert row["mean |gold gap|"] == pytest.approx(sum(gaps) / len(gaps))
    expected = sum(1 / (1 + math.exp(-g / prefs.TEMPERATURE)) for g in gaps) / len(gaps)
    assert row["annotator right"] == pytest.approx(expected)
    assert row["reward model right"] == 1.0  # our stand-in scores helpfulness, which the empty answer lacks
    assert table.loc["A vs B", "ties"] == 1.0 and math.isnan(table.loc["A vs B", "annotator right"])


def test_bootstrap_intervals_over_requests():
    heldout = prefs.alignment_prompts("heldout")
    n = len(heldout)
    # two answers per request: "sure" always beats the SFT answer, "even" wins on half the requests
    sure = pd.DataFrame({"gold": [1.0] * 2 * n, "reference gold": [0.0] * 2 * n})
    even = pd.DataFrame({"gold": [1.0 if i // 2 < n // 2 else -1.0 for i in range(2 * n)],
                         "reference gold": [0.0] * 2 * n})
    race = sd.Showdown(table=pd.DataFrame(), curves={}, answers={"sure": sure, "even": even}, greedy={})
    table = sd.intervals(race, resamples=4000, seed=1)
    assert table.loc["sure", ["win_rate", "win_low", "win_high"]].tolist() == [1.0, 1.0, 1.0]
    row = table.loc["even"]
    assert row["win_rate"] == 0.5 and row["gold_reward"] == 0.0
    # a request is a coin flip (win or lose all its answers): the mean of 48 flips has a standard
    # error of 0.5 / sqrt(48) = 0.072, so the 95 % interval is about 0.5 ± 1.96 · 0.072
    half_width = 1.96 * 0.5 / math.sqrt(n)
    assert row["win_low"] == pytest.approx(0.5 - half_width, abs=0.03)
    assert row["win_high"] == pytest.approx(0.5 + half_width, abs=0.03)
    assert row["gold_low"] == pytest.approx(-2 * half_width, abs=0.06)  # gold is ±1 per request
    assert sd.intervals(race, resamples=4000, seed=1).equals(table)  # seeded: the same intervals again
    figures = sd.intervals_figures(table)
    assert set(figures) == {"sure", "even"} and figures["even"]["win_rate"] == 0.5
    fig = plots.intervals_figure(table)
    (dots,) = fig.data
    assert list(dots.y) == ["sure", "even"] and list(dots.x) == [1.0, 0.5]
    assert list(dots.error_x.arrayminus) == pytest.approx([0.0, 0.5 - row["win_low"]])
    assert fig.layout.xaxis.title.text.startswith("win rate")


@pytest.fixture(scope="module")
def race():
    return sd.showdown("smoke", progress=False)


def test_the_smoke_race_runs_every_method_and_is_cached(race, monkeypatch):
    table = race.table
    assert list(table.index) == list(sd.METHODS)
    # every method meets the same SFT answers, drawn independently of its own: the SFT policy too
    references = {m: a["reference gold"].tolist() for m, a in race.answers.items()}
    assert all(r == references["SFT"] for r in references.values())
    sft = race.answers["SFT"]
    assert table.loc["SFT", "win_rate"] == win_rate(sft["gold"].tolist(), references["SFT"])
    assert table.loc["SFT", "kl"] == 0.0  # the SFT policy against itself
    n = get_preset("smoke").showdown.best_of_n
    assert 0.0 <= table.loc["best-of-n", "kl"] <= evaluate.best_of_n_kl(n)
    assert race.curves["best-of-n"][-1]["kl_bound"] == pytest.approx(evaluate.best_of_n_kl(n))
    for family in ("PPO", "DPO", "GRPO"):
        assert 0 < table.loc[f"{family} + LoRA", "trainable_parameters"] < table.loc[family, "trainable_parameters"]
        assert race.curves[family][0]["step"] == 0 and len(race.curves[family]) >= 2
    assert table.loc["PPO", "answers_sampled"] == table.loc["GRPO", "answers_sampled"] == 24
    assert (table["peak_MB"] > 100).all() and (table.loc["PPO":, "train_seconds"] > 0).all()
    assert all(len(a) == 48 for a in race.answers.values())  # 48 held-out prompts × 1 answer (smoke)
    assert race.greedy["best-of-n"] is None and len(race.greedy["PPO"]) == 48

    def no_training(*args, **kwargs):
        raise AssertionError("the cached race should have been read back")

    monkeypatch.setattr("labkit.measure.in_fresh_process", no_training)
    again = sd.showdown("smoke", progress=False)
    pd.testing.assert_frame_equal(again.table, race.table)
    saved = json.loads(sd.showdown_path(get_preset("smoke")).read_text())
    assert set(saved) == {"table", "curves", "answers", "greedy", "grpo_verifiable", "budget"}


def test_showdown_figures(race):
    best = prefs.best_mean_gold_reward(prefs.alignment_prompts("heldout"))
    fig = plots.showdown_figure(race.curves, race.table, best=best)
    assert fig.layout.xaxis.title.text.startswith("√KL") and fig.layout.yaxis.title.text.startswith("gold reward")
    finals = [t for t in fig.data if t.mode == "markers+text"]
    assert [t.name for t in finals] == list(sd.METHODS)
    fig = plots.aspects_figure(race.curves)
    assert {t.name for t in fig.data} == set(sd.METHODS) - {"SFT"}  # SFT has no curve: nothing trained
    fig = plots.tradeoff_figure(sd.aspects_by_place(race))
    assert len(fig.data) == len(sd.METHODS)


def test_a_policy_run_names_its_numbers_once_for_reports_tables_and_panels():
    import dataclasses

    from labkit import plots
    from labkit.evaluate import PolicyRun
    from labkit.experiments.alignment import DPO_EXTRA
    from labkit.stages import STAGES
    from labkit.widgets.panels import DPO_SPEC, GRPO_SPEC, PPO_SPEC

    fields = {f.name for f in dataclasses.fields(PolicyRun)}
    assert set(sd.TABLE_COLUMNS) <= fields and set(PolicyRun.NUMBERS) <= fields
    for stage in ("ppo", "dpo"):  # the stages report a PolicyRun's numbers under its field names
        assert set(PolicyRun.NUMBERS) <= set(STAGES[stage].report)
    assert set(PPO_SPEC.results) <= fields and set(DPO_SPEC.results) <= fields | set(DPO_EXTRA)
    assert set(GRPO_SPEC.results) - {"clip_fraction"} <= set(STAGES["grpo"].report)  # the grpo stage's keys
    for spec in (PPO_SPEC, DPO_SPEC, GRPO_SPEC):  # every column has a header and a format in one table
        assert all(column in plots.COLUMNS for column in spec.results)
    assert all(column in plots.COLUMNS for column in sd.TABLE_COLUMNS)

"""The reference results (``results/``), the pages rendered from them, and a learner's run beside them."""
import json
import re

import pytest

from labkit import reference, results, runtime
from labkit.cli import main

ROOT = runtime.repo_root()


# --------------------------------------------------------------------------- the committed pages

def test_readme_and_docs_match_a_render_of_the_committed_results():
    stale = results.stale()
    assert not stale, (f"{', '.join(map(str, stale))} differ from a render of results/: run "
                       "`python -m labkit results render` (and edit docs/templates/, not the rendered text)")


def test_cli_check_agrees(capsys):
    assert main(["results", "check"]) == 0
    assert "match" in capsys.readouterr().out


def test_every_readme_block_has_a_template_and_is_not_empty():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = results.BLOCK.findall(readme)
    assert [name for _, name, _, _ in blocks] == ["headline"]
    for _, name, body, _ in blocks:
        assert (ROOT / results.TEMPLATES / f"{name}.md").exists()
        assert re.search(r"\d", body), f"the README's {name} block holds no figure"


def _outside_blocks(text: str) -> str:
    return results.BLOCK.sub("", text)


def test_the_readme_types_no_measured_figure_outside_its_rendered_blocks():
    from test_markdown_figures import FIGURE, _key

    allow = {}
    for text in (ROOT / "tests" / "worked_figures" / "README.txt").read_text(encoding="utf-8").splitlines():
        if text.strip() and not text.startswith("#"):
            figure, _, why = text.partition("#")
            assert why.strip(), f"say why {figure.strip()} may stand in the README"
            allow[_key(figure.strip())] = why
    typed = [m.group() for m in FIGURE.finditer(_outside_blocks((ROOT / "README.md").read_text(encoding="utf-8")))
             if _key(m.group()) not in allow]
    assert not typed, f"figures typed into the README outside its rendered blocks: {typed}"


def test_the_reference_files_say_where_and_when_they_were_measured():
    cpu = json.loads((ROOT / "results" / "cpu.json").read_text(encoding="utf-8"))
    assert cpu["preset"] == "cpu" and cpu["seed"] == 0
    assert {"cpu", "vector", "threads"} <= set(cpu["machine"]) and {"torch", "transformers", "trl"} <= set(cpu["versions"])
    from labkit.stages import STAGES
    assert set(cpu["stages"]) == set(STAGES)
    assert set(cpu["demos"]) == set(results.measurements()), "results/cpu.json lacks a declared demonstration"
    # the counted compute: every stage's, summed, and set beside the baseline recipes' (results/baseline/)
    compute, baseline = cpu["compute"], json.loads((ROOT / "results" / "baseline" / "cpu.json").read_text())
    assert compute["flops"] == pytest.approx(sum(stage["flops"] for stage in cpu["stages"].values()))
    assert compute["ratio"] == pytest.approx(compute["flops"] / sum(s["flops"] for s in baseline["stages"].values()))
    assert compute["matmul_peak"] == cpu["demos"]["bench"]["matmul_peak"]["flops_per_s"] > 0
    assert 0 < compute["stages"]["pretrain"]["utilisation"] < 1.5
    from labkit import bench  # the bench sets the same counts beside the baseline, and says so on the terminal
    assert bench.pipeline_compute("cpu") == compute and bench.pipeline_compute("no-such-preset") is None
    said = bench.summary({"matmul_peak": cpu["demos"]["bench"]["matmul_peak"], "stages": {}, "pipeline_compute": compute})
    assert f"{compute['flops'] / 1e12:.1f} TFLOP" in said and f"ratio {compute['ratio']:.2f}" in said
    seeds = json.loads((ROOT / "results" / "cpu-seeds.json").read_text(encoding="utf-8"))
    assert sorted(seeds["seeds"]) == ["0", "1", "2"]
    for report in seeds["seeds"].values():
        assert set(report["stages"]) == set(STAGES)
    # seed 0 of the seeds file is the reference run's pipeline, figure for figure
    assert seeds["seeds"]["0"]["stages"]["ppo"]["win_rate"] == cpu["stages"]["ppo"]["win_rate"]
    low, high = seeds["ranges"]["stages.ppo.win_rate"]
    assert low <= cpu["stages"]["ppo"]["win_rate"] <= high


def test_every_committed_figure_was_measured_from_the_stages_the_cpu_preset_gives_now():
    """A recipe change moves its stage's key; every figure measured from the old stage (the stage's own
    and each demonstration's that read it) must then be measured again, or the slow tier finds it later."""
    moved = results.outdated("cpu")
    assert not moved, "\n".join(moved)


def test_reading_records_the_stages_looked_up_under_the_preset_and_not_a_variant():
    from labkit import pipeline, presets

    smoke = presets.get_preset("smoke")
    with pipeline.reading(smoke) as read:
        pipeline.stage_dir("sft", smoke)
        pipeline.stage_dir("reward", smoke.replace(seed=smoke.seed + 5))  # a demonstration's own variant
        with pipeline.reading(smoke) as inner:
            pipeline.stage_dir("grpo", smoke)
    pipeline.stage_dir("dpo", smoke)  # after the block: not recorded
    assert read == {"sft": pipeline.stage_key("sft", smoke), "grpo": pipeline.stage_key("grpo", smoke)}
    assert inner == {"grpo": pipeline.stage_key("grpo", smoke)} and pipeline._READS == []


def test_a_figure_read_from_the_cached_race_records_the_stages_the_race_is_keyed_by():
    """Lab 08's intervals and open problems read the race from its cache, not a checkpoint: its path's
    keys count as reads, so a moved reward model marks them outdated too (it once did not: the intervals
    kept an old race's figures while `results check` passed)."""
    from labkit import pipeline, presets
    from labkit.experiments import showdown

    smoke = presets.get_preset("smoke")
    with pipeline.reading(smoke) as read:
        showdown.showdown_path(smoke)
    assert read == {stage: pipeline.stage_key(stage, smoke) for stage in ("sft", "reward")}


def test_outdated_names_each_figure_measured_from_a_stage_the_preset_has_changed(tmp_path):
    from labkit import presets

    smoke = presets.get_preset("smoke")
    now = results.stage_keys(smoke)
    data = {"seed": smoke.seed, "stages": {}, "demos": {"fresh": {"x": 1}, "stale": {"x": 2}, "unrecorded": {"x": 3}},
            "keys": {"stages": now, "demos": {"fresh": {"sft": now["sft"]}, "stale": {"grpo": "0123456789", "sft": now["sft"]}}}}
    (tmp_path / "smoke.json").write_text(json.dumps(data))
    found = results.outdated("smoke", tmp_path)
    assert len(found) == 2
    assert "demonstration stale" in found[0] and f"grpo 0123456789 -> {now['grpo']}" in found[0]
    assert found[0].endswith("python -m labkit results --preset smoke --only stale")
    assert "demonstration unrecorded records no stage keys" in found[1]
    data["keys"]["stages"] = dict(now, ppo="9999999999")
    data["demos"] = {"fresh": {"x": 1}}
    (tmp_path / "smoke.json").write_text(json.dumps(data))
    assert results.outdated("smoke", tmp_path) == [
        f"smoke.json: stage 'ppo' was measured at key 9999999999, the preset now gives {now['ppo']}: "
        "python -m labkit results --preset smoke"]
    # the seeds file: each seed against its own keys
    seeds = {"seeds": {"0": {"stages": {}, "keys": results.stage_keys(smoke.replace(seed=0))},
                       "1": {"stages": {}, "keys": results.stage_keys(smoke.replace(seed=0))},
                       "2": {"stages": {}}}}
    (tmp_path / "smoke-seeds.json").write_text(json.dumps(seeds))
    found = results.outdated("smoke", tmp_path)[1:]
    seed0, seed1 = results.stage_keys(smoke.replace(seed=0)), results.stage_keys(smoke.replace(seed=1))
    moved = [s for s in seed0 if seed0[s] != seed1[s]]
    assert "pretrain" in moved and "grpo" in moved  # each seed pretrains its own model
    assert [f.split(":")[1].strip() for f in found] == ["seed 1 stages " + ", ".join(moved) + " have new keys",
                                                       "seed 2 records no stage keys"]
    assert all(f.endswith("--seeds 0,1,2") for f in found)


def test_collect_keeps_the_stages_each_demonstration_read(tmp_path, monkeypatch):
    from labkit import pipeline, presets

    smoke = presets.get_preset("smoke")
    fake = {"reads_sft": reference.Measurement("reads_sft", lambda p: {"n": len(str(pipeline.stage_dir("sft", p)))}, "02", {}, 1),
            "reads_none": reference.Measurement("reads_none", lambda p: {"n": 1}, "01", {}, 1)}
    monkeypatch.setattr(results, "measurements", lambda: fake)
    monkeypatch.setattr(pipeline, "run", lambda stages, preset, **kw: {"stages": {}})
    out = tmp_path / "smoke.json"
    done = results.collect(smoke, out=out, progress=False)
    assert done["keys"] == {"stages": results.stage_keys(smoke),
                            "demos": {"reads_none": {}, "reads_sft": {"sft": pipeline.stage_key("sft", smoke)}}}
    # measuring one again keeps the others' records
    results.collect(smoke, out=out, only=["reads_sft"], progress=False)
    assert json.loads(out.read_text())["keys"] == done["keys"]
    assert results.outdated("smoke", tmp_path) == []


# ------------------------------------------------------------------------------ formats, ranges

@pytest.mark.parametrize("name, value, written", [
    ("stages.ppo.win_rate", 0.8919, "89.2 %"), ("stages.ppo.gold_reward", -0.6251, "\u22120.63"),
    ("stages.pretrain.val_loss", 0.56264, "0.563"), ("stages.pretrain.parameters", 479616, "479,616"),
    ("stages.sft.train_seconds", 163.1, "2 min 43 s"), ("stages.ppo.train_seconds", 47.4, "47 s"),
    ("stages.dpo.chosen_logratio", -1.4991, "\u22121.50"), ("stages.sft_math.worked_share", 0.254, "25 %"),
    ("demos.bench.stages.grpo.peak_MB", 861.4, "861 MB"), ("x.anything", None, "—"),
])
def test_a_figure_is_written_as_the_pages_write_it(name, value, written):
    assert reference.fmt(value, name) == written


def test_a_range_carries_its_unit_once_and_unknown_formats_are_refused():
    assert reference.fmt_range(0.88, 0.904, "stages.ppo.win_rate") == "88.0–90.4 %"
    assert reference.fmt_range(0.489, 0.563, "stages.pretrain.val_loss") == "0.489–0.563"
    with pytest.raises(ValueError, match="unknown format 'pc'"):
        reference.fmt(0.5, "win_rate", "pc")


def test_ranges_span_the_seeds_numeric_figures_only():
    seeds = {"0": {"stages": {"ppo": {"win_rate": 0.89, "note": "a"}}},
             "1": {"stages": {"ppo": {"win_rate": 0.88, "note": "b"}}},
             "2": {"stages": {"ppo": {"win_rate": 0.90}}}}
    assert results.ranges(seeds) == {"stages.ppo.win_rate": [0.88, 0.90]}


def test_every_reference_seed_meets_the_recipe_bars_issue_29_has_reached():
    """The bars of issue 29 that the committed recipes meet, held on every seed of the reference results
    (each seed with its own pretrained model): a retune that loses one fails here."""
    seeds = json.loads((ROOT / "results" / "cpu-seeds.json").read_text())["seeds"]
    baseline = json.loads((ROOT / "results" / "baseline" / "cpu.json").read_text())["stages"]
    assert sorted(seeds) == ["0", "1", "2"]
    for seed, report in seeds.items():
        pretrain = report["stages"]["pretrain"]
        assert pretrain["gap_closed"] >= 0.99, f"seed {seed}: pretraining closed {pretrain['gap_closed']:.2%} of the gap"
        assert pretrain["flops"] / baseline["pretrain"]["flops"] <= 0.6 + 1e-9, (
            f"seed {seed}: pretraining spent {pretrain['flops'] / baseline['pretrain']['flops']:.2f} of the baseline's compute")
        grpo = report["stages"]["grpo"]
        gain = grpo["accuracy"] - grpo["sft_accuracy"]
        assert 0.10 <= grpo["sft_accuracy"] <= 0.60, f"seed {seed}: GRPO starts at {grpo['sft_accuracy']:.1%}"
        assert gain >= 0.28, f"seed {seed}: GRPO gained {gain:+.1%}, below the bar of +28 points"
        online = report["stages"]["dpo_online"]["win_rate"]
        assert online >= 0.86, f"seed {seed}: online DPO won {online:.1%} of held-out prompts, below the bar of 86 %"
        # the whole pipeline's counted compute against the baseline recipes' (online DPO, a stage they did
        # not have, counts on our side only)
        ratio = sum(stage["flops"] for stage in report["stages"].values()) / sum(s["flops"] for s in baseline.values())
        assert ratio <= 0.7, f"seed {seed}: the pipeline spent {ratio:.3f} of the baseline's compute, above the bar of 0.7"



def test_online_dpo_beats_offline_dpo_on_every_reference_seed_as_lab_06_says():
    """Lab 06, section 9 says online DPO wins more often than offline DPO on every seed measured, with a
    higher gold reward, going further from the SFT policy (a larger KL), and that its labels get worse
    round by round: the reference seeds must show it. It also says the cpu preset's rounds take twice
    the `dpo` stage's learning rate with each round's starting policy as the reference."""
    from labkit.presets import get_preset

    cpu = get_preset("cpu")
    assert cpu.dpo_online.lr == 2 * cpu.dpo.lr and cpu.dpo_online.reference == "previous"
    seeds = json.loads((ROOT / "results" / "cpu-seeds.json").read_text())["seeds"]
    for seed, report in seeds.items():
        online, offline = report["stages"]["dpo_online"], report["stages"]["dpo"]
        assert online["win_rate"] > offline["win_rate"], (seed, online["win_rate"], offline["win_rate"])
        assert online["gold_reward"] > offline["gold_reward"], (seed, online["gold_reward"], offline["gold_reward"])
        assert online["kl"] > offline["kl"], (seed, online["kl"], offline["kl"])
        assert online["train_pairs"] == offline["train_pairs"]  # as many comparisons
        assert online["first_label_accuracy"] > online["last_label_accuracy"], seed

def test_ppo_wins_more_often_than_offline_dpo_across_the_reference_seeds_as_lab_06_says():
    """Lab 06, section 6: PPO wins more often than DPO in the reference run, and both ends of its range
    over seeds 0-2 lie above DPO's."""
    data = json.loads((ROOT / "results" / "cpu-seeds.json").read_text())
    assert data["seeds"]["0"]["stages"]["ppo"]["win_rate"] > data["seeds"]["0"]["stages"]["dpo"]["win_rate"]
    (ppo_low, ppo_high), (dpo_low, dpo_high) = (data["ranges"][f"stages.{s}.win_rate"] for s in ("ppo", "dpo"))
    assert ppo_low > dpo_low and ppo_high > dpo_high, ((ppo_low, ppo_high), (dpo_low, dpo_high))


def test_lab_08_reads_its_race_as_the_reference_run_ran_it():
    """Lab 08's reading of the race (cells 19, 24 and the summary), held against results/cpu.json: of the
    methods given PPO's budget of answers PPO (full or LoRA) goes furthest from the SFT policy and wins
    as often as GRPO or a few points more (full PPO within two points of GRPO's better run, PPO + LoRA at
    most six ahead, their intervals overlapping) and more often than DPO, which wins least of all;
    best-of-16 wins at least as often at about half PPO's KL; DPO stays nearer the SFT policy than PPO;
    the long GRPO + LoRA run goes furthest of all and wins more often than its PPO-budget run, the most of
    any method, its interval overlapping best-of-16's; the intervals of the top three overlap, and DPO's
    reaches into those of full PPO and both GRPO runs at PPO's budget; LoRA and full fine-tuning are within
    six points of each other for each method, PPO's two runs the furthest apart."""
    demos = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]
    race, intervals = demos["lab08_race"], demos["lab08_intervals"]
    shared = ("best_of_n", "DPO", "DPO_LoRA", "GRPO", "GRPO_LoRA")
    ppo_kl = min(race["PPO"]["kl"], race["PPO_LoRA"]["kl"])
    ppo_win = max(race["PPO"]["win_rate"], race["PPO_LoRA"]["win_rate"])
    grpo_win = max(race["GRPO"]["win_rate"], race["GRPO_LoRA"]["win_rate"])
    dpo_win = max(race["DPO"]["win_rate"], race["DPO_LoRA"]["win_rate"])
    assert all(ppo_kl > race[m]["kl"] for m in shared), {m: race[m]["kl"] for m in race}
    assert abs(race["PPO"]["win_rate"] - grpo_win) <= 0.02 and 0 <= ppo_win - grpo_win <= 0.06, (ppo_win, grpo_win)
    assert intervals["PPO_LoRA"]["win_low"] < intervals["GRPO_LoRA"]["win_high"]
    assert min(ppo_win, grpo_win) > dpo_win, (ppo_win, grpo_win, dpo_win)
    assert dpo_win < min(race[m]["win_rate"] for m in race if m not in ("SFT", "DPO", "DPO_LoRA"))
    assert race["best_of_n"]["win_rate"] >= ppo_win
    assert race["best_of_n"]["kl"] <= 0.6 * ppo_kl
    assert max(race["DPO"]["kl"], race["DPO_LoRA"]["kl"]) < ppo_kl
    long = race["GRPO_LoRA_long"]
    assert long["win_rate"] > race["GRPO_LoRA"]["win_rate"], (long, race["GRPO_LoRA"])
    assert long["win_rate"] == max(race[m]["win_rate"] for m in race)
    assert long["kl"] == max(race[m]["kl"] for m in race)
    assert intervals["GRPO_LoRA_long"]["win_low"] < intervals["best_of_n"]["win_high"]
    assert intervals["DPO"]["win_high"] > max(intervals[m]["win_low"] for m in ("PPO", "GRPO", "GRPO_LoRA"))
    top = [intervals[m] for m in ("best_of_n", "PPO_LoRA", "GRPO_LoRA_long")]
    assert max(t["win_low"] for t in top) < min(t["win_high"] for t in top)
    apart = {m: abs(race[m]["win_rate"] - race[f"{m}_LoRA"]["win_rate"]) for m in ("PPO", "DPO", "GRPO")}
    assert max(apart.values()) <= 0.06 and max(apart, key=apart.get) == "PPO", apart


def test_lab_08_reads_its_open_problems_as_the_reference_run_ran_it():
    """Lab 08, sections 4 and 5 (cells 32, 34 and 40), held against results/cpu.json: at the workshop PPO
    and the long GRPO + LoRA run answer one safe good, GRPO + LoRA at PPO's budget most often a repeated
    safe good, all four almost never a sharp tool, and DPO, full GRPO and best-of-n spread over many answers and
    still let a sharp tool through; no method's usual answer is the best one; the reward model scores a
    repeat above the answer with a saw, which the gold reward ranks above it; across phrasings the long
    GRPO run answers most alike with the smallest gold spread, PPO and GRPO more alike than SFT, and DPO
    changes it least."""
    problems = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]["lab08_open_problems"]
    aspects, scores, same = problems["aspects"], problems["workshop_scores"], problems["instability"]
    for method in ("PPO", "PPO_LoRA", "GRPO_LoRA_long"):
        assert aspects[method]["workshop_top_answer"] == "ropes" and aspects[method]["workshop_top_answer_share"] >= 0.9
        assert aspects[method]["workshop_top_answer_gold"] == 1.0, aspects[method]  # cell 32: "(gold 1.0)"
    for method in ("PPO", "PPO_LoRA", "GRPO_LoRA", "GRPO_LoRA_long"):
        assert aspects[method]["workshop_safety"] >= -0.1, aspects[method]  # one sharp tool in its 32 answers at most
    goods = aspects["GRPO_LoRA"]["workshop_top_answer"].split(" , ")
    assert len(goods) >= 2 and set(goods) == {"ropes"}, aspects["GRPO_LoRA"]
    assert aspects["GRPO_LoRA"]["workshop_top_answer_gold"] == -1.0, aspects["GRPO_LoRA"]  # cell 32: "gold −1"
    assert all(aspects[m]["workshop_safety"] < 0 and aspects[m]["workshop_top_answer_share"] < 0.25
               for m in ("DPO", "DPO_LoRA", "GRPO", "best_of_n"))
    assert all(set(a["workshop_top_answer"].split(" , ")) != {"ropes", "boxes"} for a in aspects.values())
    assert scores["ropes_boxes"]["reward_model_min"] >= max(v["reward_model_max"] for k, v in scores.items()
                                                              if k not in ("ropes_boxes", "boxes_boxes"))
    assert scores["ropes_ropes_ropes"]["reward_model_min"] > scores["ropes_boxes_saws"]["reward_model_max"]
    assert scores["ropes_ropes_ropes"]["gold"] < scores["ropes_boxes_saws"]["gold"]
    long = same["GRPO_LoRA_long"]
    assert long["same_answer_share"] == max(v["same_answer_share"] for v in same.values())
    assert long["gold_spread"] == min(v["gold_spread"] for v in same.values())
    assert min(same[m]["same_answer_share"] for m in ("PPO", "PPO_LoRA", "GRPO", "GRPO_LoRA")) > same["SFT"]["same_answer_share"]
    change = {m: abs(v["same_answer_share"] - same["SFT"]["same_answer_share"]) for m, v in same.items() if m != "SFT"}
    assert max(change["DPO"], change["DPO_LoRA"]) < min(v for m, v in change.items() if not m.startswith("DPO"))


def test_lab_01_reads_its_size_sweep_as_the_reference_run_ran_it():
    """Lab 01, section 9: wider is lower, and in the reference run the second doubling bought much less
    than the first (the lab reads it as the bend scaling studies find, in miniature)."""
    sweep = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]["lab01_size_sweep"]
    small, mid, wide = (sweep[f"d_model_{w}"]["val_loss"] for w in (32, 64, 128))
    assert small > mid > wide
    assert mid - wide < (small - mid) / 2, (small - mid, mid - wide)


def test_lab_05_reads_its_penalised_run_as_the_reference_run_ran_it():
    """Lab 05, section 7: the β = 0 run ends below the SFT policy's gold reward, far past its peak, while
    the proxy still rose (cell 31); with the stage's β the gold reward peaks above the β = 0 run's peak
    and, though it slides back, ends well above the β = 0 run, at a fraction of its final KL (cell 35)."""
    demos = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]
    free, held = demos["lab05_overoptimisation"], demos["lab05_overopt_penalty"]
    assert free["final_gold"] < free["start_gold"] < free["peak_gold"], free
    assert free["final_proxy"] > free["start_proxy"], free
    assert held["peak_gold"] > free["peak_gold"], (held["peak_gold"], free["peak_gold"])
    assert held["final_gold"] >= free["final_gold"] + 0.5, (held["final_gold"], free["final_gold"])
    assert held["final_kl"] <= free["final_kl"] / 2, (held["final_kl"], free["final_kl"])


def test_lab_05_reads_its_ceiling_run_as_the_reference_run_ran_it():
    """Lab 05, section 7, "What the reward model costs": PPO scored by the gold reward beats the stage on
    win rate and gold reward with a lower proxy (the stage's policy found answers the reward model
    overrates), and still stops well short of the best answers (under 80 % of the best)."""
    ran = json.loads((ROOT / "results" / "cpu.json").read_text())
    ceiling, stage = ran["demos"]["lab05_gold_reward"], ran["stages"]["ppo"]
    assert ceiling["win_rate"] > stage["win_rate"], (ceiling, stage["win_rate"])
    assert ceiling["gold_reward"] > stage["gold_reward"], (ceiling, stage["gold_reward"])
    assert ceiling["proxy_reward"] < stage["proxy_reward"], (ceiling, stage["proxy_reward"])
    assert ceiling["gold_reward"] <= 0.8 * stage["best_gold_reward"], (ceiling, stage["best_gold_reward"])


def test_the_imbalance_line_reads_classify_as_the_reference_run_ran_it():
    """docs/results.md, lab 02: classify's larger share (90 % against 50 %) did not buy it more exact match."""
    runs = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]["lab02_imbalance"]
    assert runs["arithmetic_share_10"]["classify_exact_match"] <= runs["arithmetic_share_50"]["classify_exact_match"], runs


def test_lab_02_reads_what_sft_adds_to_pretraining_as_the_reference_run_ran_it():
    """Lab 02, section 5 (and docs/results.md): both models copy names without fault; on the counting
    questions the SFT model is right about as often as the pretrained model asked in its stories' form;
    most questions the SFT model misses, the pretrained model misses too."""
    m = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]["lab02_knowledge"]
    assert m["who"]["sft_exact_match"] == m["who"]["pretrained_exact_match"] == 1.0, m
    assert abs(m["how_many"]["sft_exact_match"] - m["how_many"]["pretrained_exact_match"]) <= 0.05, m
    assert 2 * m["all"]["missed_by_both"] > m["all"]["sft_missed"] > 0, m
    assert m["all"]["questions"] == m["how_many"]["questions"] + m["who"]["questions"] == 100, m


def test_the_gpu_paragraph_reads_the_gpu_run_against_the_cpu_one():
    """docs/results.md, "On a GPU": every later-stage figure it lists falls short of the cpu preset's,
    except DPO's win rate, which it says is about the cpu one while its gold reward falls far below."""
    gpu, cpu = (json.loads((ROOT / "results" / f"{name}.json").read_text())["stages"] for name in ("gpu", "cpu"))
    for stage, key in (("sft", "exact_match"), ("sft", "gold_reward"), ("reward", "accuracy"), ("ppo", "win_rate"),
                       ("ppo", "gold_reward"), ("dpo", "gold_reward"), ("grpo", "accuracy")):
        assert gpu[stage][key] < cpu[stage][key], (stage, key, gpu[stage][key], cpu[stage][key])
    assert abs(gpu["dpo"]["win_rate"] - cpu["dpo"]["win_rate"]) < 0.05
    assert gpu["dpo"]["gold_reward"] < cpu["dpo"]["gold_reward"] - 0.5


def test_the_problems_card_reads_the_signal_check_as_the_reference_run_ran_it():
    """datasets/problems/README.md: on one-step arithmetic the SFT policy solves most problems, and in
    most groups every answer gets the same reward (lab 07's signal check)."""
    one_step = json.loads((ROOT / "results" / "cpu.json").read_text())["demos"]["lab07_signal_check"]["one_step"]
    assert one_step["accuracy"] > 0.5 and one_step["zero_variance_share"] > 0.5, one_step


# ------------------------------------------------------------------------------------ rendering

@pytest.fixture
def folder(tmp_path):
    (tmp_path / "cpu.json").write_text(json.dumps({"seed": 0, "stages": {"ppo": {"win_rate": 0.8919, "kl": 4.108}}}))
    (tmp_path / "cpu-seeds.json").write_text(json.dumps({
        "seeds": {"0": {"stages": {"ppo": {"win_rate": 0.8919}}}, "1": {"stages": {"ppo": {"win_rate": 0.88}}},
                  "2": {"stages": {"ppo": {"win_rate": 0.904}}}},
        "ranges": {"stages.ppo.win_rate": [0.88, 0.904]}}))
    return tmp_path


def test_templates_fill_figures_formats_ranges_and_single_seeds(folder):
    figures = results.Figures(folder)
    text = ("PPO wins {{ stages.ppo.win_rate }} (seeds 0–2: {{ seeds: stages.ppo.win_rate }}; seed 1 "
            "{{seed1:stages.ppo.win_rate}}) at a KL of {{ stages.ppo.kl | f1 }}")
    assert results.render_text(text, figures) == "PPO wins 89.2 % (seeds 0–2: 88.0–90.4 %; seed 1 88.0 %) at a KL of 4.1"


def test_a_figure_missing_from_the_results_stops_the_render_with_its_name(folder):
    with pytest.raises(ValueError, match=r"stages\.dpo\.win_rate is not in results/cpu\.json"):
        results.render_text("DPO {{ stages.dpo.win_rate }}", results.Figures(folder), "t.md")
    with pytest.raises(ValueError, match="no range"):
        results.render_text("{{ seeds: stages.ppo.kl }}", results.Figures(folder))


def test_a_readme_block_is_replaced_by_its_template_and_the_rest_kept(folder, tmp_path):
    (tmp_path / "docs" / "templates").mkdir(parents=True)
    (tmp_path / "docs" / "templates" / "headline.md").write_text("win rate {{ stages.ppo.win_rate }}\n")
    readme = "intro 1\n<!-- results:headline -->\nold 50 %\n<!-- /results:headline -->\nend\n"
    assert results.render_readme(readme, tmp_path, results.Figures(folder)) == (
        "intro 1\n<!-- results:headline -->\nwin rate 89.2 %\n<!-- /results:headline -->\nend\n")
    with pytest.raises(ValueError, match="no template"):
        results.render_readme("<!-- results:other -->\n<!-- /results:other -->", tmp_path, results.Figures(folder))


# ---------------------------------------------------------------------- your run beside the reference

def test_a_line_shows_your_run_the_reference_and_the_seeds(folder, monkeypatch):
    monkeypatch.setattr(reference, "results_dir", lambda: folder)
    monkeypatch.setattr(reference, "_loaded", {})
    assert reference.line("stages.ppo.win_rate", 0.88) == (
        "win rate against SFT · your run: 88.0 % · reference (cpu, seed 0): 89.2 % · seeds 0–2: 88.0–90.4 %")
    assert reference.line("stages.ppo.kl", None, label="KL") == "KL · reference (cpu, seed 0): 4.11"
    assert reference.line("stages.dpo.kl", 1.7) == "KL to SFT · your run: 1.70 · reference (cpu): not measured yet"


def test_a_step_that_never_came_reads_never_not_unmeasured(folder, monkeypatch):
    data = json.loads((folder / "cpu.json").read_text())
    data["demos"] = {"lab01_optimisers": {"adamw": {"plateau_end_step": None}, "muon": {"plateau_end_step": 180}}}
    (folder / "cpu.json").write_text(json.dumps(data))
    monkeypatch.setattr(reference, "results_dir", lambda: folder)
    monkeypatch.setattr(reference, "_loaded", {})
    name = "demos.lab01_optimisers.{}.plateau_end_step"
    assert reference.line(name.format("adamw"), None, label="plateau") == (
        "plateau · your run: never · reference (cpu, seed 0): never")
    assert reference.line(name.format("muon"), 225, label="plateau") == (
        "plateau · your run: 225 · reference (cpu, seed 0): 180")
    assert reference.line(name.format("sgd"), None, label="plateau") == (  # absent: not measured, as before
        "plateau · your run: never · reference (cpu): not measured yet")


def test_show_says_when_the_preset_is_not_the_reference_s(folder, monkeypatch, capsys):
    from labkit import presets

    monkeypatch.setattr(reference, "results_dir", lambda: folder)
    monkeypatch.setattr(reference, "_loaded", {})
    monkeypatch.setattr(presets, "_active", presets.get_preset("smoke"))
    reference.show([("stages.ppo.win_rate", 0.5)])
    out = capsys.readouterr().out.splitlines()
    assert "runs the 'smoke' preset" in out[0] and out[1].startswith("win rate against SFT · your run: 50.0 %")


# ---------------------------------------------------------------------------------- comparing

def test_compare_is_tight_on_the_same_machine_and_uses_stated_tolerances_elsewhere():
    ref = {"stages": {"ppo": {"win_rate": 0.8919, "train_seconds": 47.0, "kl": 4.1}}}
    ours = {"stages.ppo.win_rate": 0.8900, "stages.ppo.train_seconds": 60.0, "stages.ppo.kl": 4.1}
    assert reference.compare(ours, ref, same_machine=True) == [
        "stages.ppo.win_rate: 0.89, reference 0.8919 (tolerance 1e-06)"]
    assert reference.compare(ours, ref, same_machine=False, tolerances={"stages.ppo": {"win_rate": 0.05}}) == []
    assert reference.compare({"stages.ppo.win_rate": 0.70}, ref, same_machine=False,
                             tolerances={"stages.ppo": {"win_rate": 0.05}})
    slow = {"stages.ppo.train_seconds": 200.0}
    assert "more than 2.5× apart" in reference.compare(slow, ref, same_machine=True)[0]


def test_measurement_names_have_no_dots_and_every_one_belongs_to_a_lab_or_the_readme():
    with pytest.raises(ValueError, match="no dots"):
        reference.measurement("lab05.x", lab="05", seconds=1)
    for name, m in results.measurements().items():
        assert m.lab and m.seconds > 0 and callable(m.run), name


def test_bad_seeds_and_unknown_demonstrations_are_refused_with_the_fix(capsys, tmp_path):
    assert main(["results", "--seeds", "a,b"]) == 2
    assert "whole numbers" in capsys.readouterr().err
    assert main(["results", "--preset", "smoke", "--only", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "no demonstration called nope" in capsys.readouterr().err

"""``python -m labkit bench``: every stage's time and memory, and the comparisons, in one JSON.

The whole bench runs once at the smoke preset (2 steps per measurement, each in a fresh process) in
a private cache; the tests check its numbers, not their speed (timing goals live in the bench).
"""
import contextlib
import datetime
import io
import json
import math
import os

import pytest
import torch

from labkit import bench, cli, pipeline
from labkit.presets import get_preset
from labkit.stages import STAGES

SMOKE = get_preset("smoke")
STEPS = 2
INPUTS = {"pretrain", "sft", "reward", "sft_math"}  # what the measured stages load from the cache


def _files(home) -> dict:
    """Every file under ``home`` with its size and modification time."""
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*") if p.is_file()}


def _parameters(home, stage: str) -> int:
    """The number of weights in the cached checkpoint of ``stage`` under ``home``."""
    from labkit import checkpoint

    (path,) = (home / "smoke").glob(f"{stage}-*")
    return sum(p.numel() for p in checkpoint.load_checkpoint(path, device="cpu")[0].parameters())


def _vocabulary(home) -> int:
    """The smoke model's vocabulary size (its tokenizer is trained on the generated corpus)."""
    from labkit import checkpoint

    (path,) = (home / "smoke").glob("pretrain-*")
    return checkpoint.load_checkpoint(path, device="cpu")[0].config.vocab_size


def _stage_dirs(home) -> set[str]:
    return {d.name.rsplit("-", 1)[0] for d in (home / "smoke").iterdir() if d.is_dir()}


@pytest.fixture(scope="module")
def smoke_bench(tmp_path_factory):
    """The CLI's whole bench on smoke in a private LABKIT_HOME whose inputs were trained first: the
    exit code, the JSON written, what it printed, and the cache's files before and after."""
    home = tmp_path_factory.mktemp("bench-home")
    out = tmp_path_factory.mktemp("bench-out") / "bench.json"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LABKIT_HOME", str(home))
        env.setenv("OMP_NUM_THREADS", "1")  # the children: one thread on a busy small machine
        for stage in ("reward", "sft_math"):
            pipeline.ensure(stage, SMOKE, progress=False)
        before = _files(home)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli.main(["bench", "--preset", "smoke", "--steps", str(STEPS), "--out", str(out)])
        after = _files(home)
    return {"code": code, "report": json.loads(out.read_text()), "printed": printed.getvalue(), "home": home,
            "before": before, "after": after}


def _positive(row: dict, *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (row.get("stage"), key, value)


def test_every_stage_is_measured_with_positive_finite_numbers(smoke_bench):
    assert smoke_bench["code"] == 0
    report = smoke_bench["report"]
    assert json.loads(smoke_bench["printed"]) == report  # printed and written alike
    assert list(report["stages"]) == bench.benched() == [s for s in STAGES if s != "dpo_online"]
    batch = {"pretrain": SMOKE.pretrain.batch_tokens // SMOKE.model.max_len, "sft": SMOKE.sft.batch_size,
             "reward": SMOKE.reward.batch_size, "reward_naive": SMOKE.reward.batch_size,
             "ppo": SMOKE.ppo.prompts_per_batch * SMOKE.ppo.samples_per_prompt, "dpo": SMOKE.dpo.batch_size,
             "sft_math": SMOKE.sft_math.batch_size, "grpo": SMOKE.grpo.group_size * SMOKE.grpo.prompts_per_step}
    for stage, row in report["stages"].items():
        assert row["stage"] == stage and row["steps"] == STEPS and row["samples_per_step"] == batch[stage]
        _positive(row, "seconds", "seconds_per_step", "seconds_per_step_after_first", "samples_per_s", "before_MB",
                  "peak_MB", "peak_rss_MB", "trainable_parameters", "parameters_in_memory", "state_MB",
                  "process_seconds", "threads")
        assert row["measure"] == "peak resident memory (RSS)" and row["cuda_max_allocated_MB"] is None
        assert row["peak_rss_MB"] == row["peak_MB"] >= row["before_MB"]
        assert row["added_MB"] == pytest.approx(row["peak_MB"] - row["before_MB"], abs=0.11)
        # the rate is the batch over the seconds per step after the first (the steady one)
        assert row["samples_per_s"] == pytest.approx(row["samples_per_step"] / row["seconds_per_step_after_first"],
                                                     rel=2e-3)
        assert row["seconds"] == pytest.approx(STEPS * row["seconds_per_step"], rel=2e-3)
        assert row["process_seconds"] > row["seconds"]  # the child also started, imported and loaded
        assert row["trainable_parameters"] <= row["parameters_in_memory"]
        assert row["rank"] == (SMOKE.ppo.lora_rank if stage == "ppo" else 0)
        _positive(row, "flops", "flops_training", "flops_per_s", "utilisation")  # counted compute (labkit.flops)
        assert row["flops_training"] <= row["flops"]
        assert row["flops_per_s"] == pytest.approx(row["flops"] / row["seconds"], rel=2e-3)
        assert row["utilisation"] == pytest.approx(row["flops_per_s"] / report["matmul_peak"]["flops_per_s"], rel=5e-3)
    stages = report["stages"]
    _positive(report["matmul_peak"], "flops_per_s")
    # pretraining's slice, counted by hand: each step trains rows × max_len tokens at 6 operations per
    # weight of a matrix product per token, plus attention's 12 · layers · d · max_len per token
    size, rows = SMOKE.model, SMOKE.pretrain.batch_tokens // SMOKE.model.max_len
    vocab = _vocabulary(smoke_bench["home"])
    weights = size.n_layers * (4 * size.d_model ** 2 + 3 * size.d_model * size.d_ff) + size.d_model * vocab
    tokens = rows * size.max_len
    assert stages["pretrain"]["flops_training"] == STEPS * tokens * (6 * weights + 12 * size.n_layers * size.d_model * size.max_len)
    for stage in ("pretrain", "ppo", "grpo"):  # the trainers that count their tokens
        _positive(stages[stage], "tokens_per_s", "tokens_per_step")
    assert stages["pretrain"]["tokens_per_step"] <= SMOKE.pretrain.batch_tokens
    assert stages["sft"]["tokens_per_s"] is None and stages["sft"]["sample"] == "conversation"
    assert stages["reward"]["sample"] == stages["dpo"]["sample"] == "preference pair"
    assert stages["ppo"]["sample"] == stages["grpo"]["sample"] == "answer"
    # full fine-tuning trains every weight of its model: the pretrained model's, the sft_math model's
    # (one more token: the answer marker) from sft_math on
    n = _parameters(smoke_bench["home"], "sft")
    assert stages["pretrain"]["trainable_parameters"] == stages["sft"]["trainable_parameters"] == n
    assert stages["sft"]["parameters_in_memory"] == n
    assert stages["dpo"]["parameters_in_memory"] == 2 * n  # the policy and its reference copy
    n_math = _parameters(smoke_bench["home"], "sft_math")
    assert stages["sft_math"]["trainable_parameters"] == stages["grpo"]["trainable_parameters"] == n_math > n
    assert stages["ppo"]["trainable_parameters"] < n  # LoRA adapters and the value head


def test_the_report_says_where_it_ran(smoke_bench):
    report = smoke_bench["report"]
    assert report["preset"] == "smoke" and report["steps"] == STEPS and report["device"] == "cpu"
    assert report["torch"] == torch.__version__ and report["cpu_count"] == os.cpu_count() and report["threads"] >= 1
    ran = datetime.datetime.fromisoformat(report["date"])
    assert datetime.timedelta(0) <= datetime.datetime.now(datetime.timezone.utc) - ran < datetime.timedelta(hours=1)
    assert report["seconds"] >= sum(row["process_seconds"] for row in report["stages"].values())


def test_comparisons_side_by_side_in_the_same_run(smoke_bench):
    report = smoke_bench["report"]
    stages, comparisons = report["stages"], report["comparisons"]
    assert set(comparisons) == {"pretrain_vs_bare", "ppo_vs_grpo", "lora_vs_full"}

    bare = comparisons["pretrain_vs_bare"]
    _positive(bare, "ratio", "ours_tokens_per_s", "bare_tokens_per_s")
    assert bare["ratio"] == pytest.approx(bare["ours_tokens_per_s"] / bare["bare_tokens_per_s"], rel=0.01)
    assert bare["steps"] == STEPS

    side = comparisons["ppo_vs_grpo"]
    grpo, ppo = side["grpo"], side["ppo"]
    assert grpo["answers_per_step"] == ppo["answers_per_step"] == side["answers_per_step"]
    _positive(side, "ratio")
    assert side["ratio"] == pytest.approx(ppo["seconds_per_step_after_first"] / grpo["seconds_per_step_after_first"],
                                          rel=0.01)
    # the GRPO stage's own row, measured once and reused
    assert {k: v for k, v in grpo.items() if k != "holds"} == {k: v for k, v in stages["grpo"].items() if k not in ("stage", "utilisation")}

    lora = comparisons["lora_vs_full"]
    assert set(lora) == {"ppo", "dpo"}
    for pair in lora.values():
        full, adapters = pair["full"], pair["lora"]
        assert full["rank"] == 0 and adapters["rank"] == pair["rank"] > 0
        _positive(pair, "ratio", "peak_MB_ratio", "state_MB_ratio")
        assert pair["ratio"] == pytest.approx(adapters["added_MB"] / full["added_MB"], rel=0.01)
        assert adapters["trainable_parameters"] < full["trainable_parameters"]
        assert adapters["parameters_in_memory"] < full["parameters_in_memory"]  # no reference copy
        assert pair["state_MB_ratio"] < 1
    assert lora["ppo"]["lora"] == {k: v for k, v in stages["ppo"].items() if k not in ("stage", "utilisation")}
    assert lora["dpo"]["full"] == {k: v for k, v in stages["dpo"].items() if k not in ("stage", "utilisation")}

    # each measurement ran once: the stages, PPO full, DPO with LoRA, and PPO at GRPO's batch if it differs
    ppo_like_grpo = bench.ppo_batch_like_grpo(SMOKE) != (SMOKE.ppo.prompts_per_batch, SMOKE.ppo.samples_per_prompt)
    assert report["fresh_processes"] == len(bench.benched()) + 2 + ppo_like_grpo


def test_the_bench_only_reads_the_cache(smoke_bench):
    assert smoke_bench["after"] == smoke_bench["before"]  # no checkpoint written, replaced or touched
    assert _stage_dirs(smoke_bench["home"]) == INPUTS


def test_one_stage_builds_its_missing_inputs(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("LABKIT_HOME", str(home))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sft.json"
    assert cli.main(["bench", "sft", "--preset", "smoke", "--steps", str(STEPS), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert list(report["stages"]) == ["sft"] and report["comparisons"] == {} and report["fresh_processes"] == 1
    _positive(report["stages"]["sft"], "seconds_per_step", "samples_per_s", "peak_rss_MB", "trainable_parameters")
    assert _stage_dirs(home) == {"pretrain"}  # its input, trained first; not the sft stage itself


def test_unknown_stage_fails_with_the_valid_names(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "sfft", "--preset", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Unknown stage 'sfft'" in err and ", ".join(STAGES) in err
    assert not out.exists()


def test_help_names_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(stage in text for stage in STAGES)


def test_command_passes_preset_stage_and_steps_and_writes_the_default_file(monkeypatch, tmp_path, capsys):
    calls = []

    def fake(preset_name, stages=None, steps=None):
        calls.append((preset_name, stages, steps))
        return {"preset": preset_name, "stages": {s: {} for s in stages or ["every"]}}

    monkeypatch.setattr(bench, "bench", fake)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "grpo", "--preset", "smoke", "--steps", "3"]) == 0
    assert calls == [("smoke", ["grpo"], 3)]
    written = json.loads((tmp_path / "runs" / "bench-smoke-grpo.json").read_text())
    assert written == json.loads(capsys.readouterr().out) == {"preset": "smoke", "stages": {"grpo": {}}}
    assert cli.main(["bench"]) == 0
    assert calls[-1] == ("cpu", None, None)
    assert json.loads((tmp_path / "runs" / "bench-cpu.json").read_text())["stages"] == {"every": {}}

"""``bench grpo``: GRPO against PPO at the same answers per step, each measured in a fresh process."""
import pytest

from labkit import bench
from labkit.presets import GRPOStageConfig, get_preset


def test_ppo_takes_as_many_answers_per_step_as_grpo():
    smoke, cpu = get_preset("smoke"), get_preset("cpu")
    assert bench.ppo_batch_like_grpo(cpu) == (32, 4)      # 32 x 4 = 128 = GRPO's 16 prompts x 8
    assert bench.ppo_batch_like_grpo(smoke) == (2, 2)     # 4 = GRPO's 2 x 2
    odd = smoke.replace(grpo=GRPOStageConfig(group_size=3, prompts_per_step=5))
    assert bench.ppo_batch_like_grpo(odd) == (5, 3)       # PPO's 2 samples don't divide 15: GRPO's shape


def test_grpo_against_ppo_on_smoke_in_fresh_processes(monkeypatch):
    from labkit import pipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child processes: one thread on a busy small machine
    smoke = get_preset("smoke")
    out = bench.bench_grpo("smoke", steps=2)
    grpo, ppo = out["grpo"], out["ppo"]
    assert out["preset"] == "smoke" and out["steps"] == 2 and out["lora_rank"] == 0
    answers = smoke.grpo.group_size * smoke.grpo.prompts_per_step
    assert out["answers_per_step"] == grpo["answers_per_step"] == ppo["answers_per_step"] == answers
    assert ppo["prompts_per_step"] * ppo["samples_per_prompt"] == answers
    for row in (grpo, ppo):
        assert row["steps"] == 2 and row["measure"] == "peak resident memory (RSS)"
        assert row["seconds_per_step"] > 0 and row["seconds_per_step_after_first"] > 0
        assert 0 < row["rollout_seconds_per_step"] < row["seconds_per_step"]
        assert 0 < row["before_MB"] <= row["peak_MB"] and row["added_MB"] == pytest.approx(
            row["peak_MB"] - row["before_MB"], abs=0.11)
        assert 0 < row["tokens_per_step"] <= answers * row["max_new_tokens"]
        assert row["state_MB"] > 0 and row["holds"]
    assert ppo["update_seconds_per_step"] > 0 and grpo["other_seconds_per_step"] > 0
    assert grpo["updates_per_step"] == 1
    assert ppo["updates_per_step"] == smoke.ppo.ppo_epochs * -(-answers // smoke.ppo.minibatch_size)

    # What each holds, counted: GRPO the policy alone (full fine-tuning, beta 0); PPO the policy and
    # its value head, a reference copy and the reward model.
    policy, _, _ = pipeline.load("sft_math", smoke)
    sft, _, _ = pipeline.load("sft", smoke)
    reward_model, _, _ = pipeline.load("reward", smoke)
    n_math, n, hidden = (sum(p.numel() for p in policy.parameters()), sum(p.numel() for p in sft.parameters()),
                         sft.config.hidden_size)
    assert grpo["trainable_parameters"] == grpo["parameters_in_memory"] == n_math
    assert ppo["trainable_parameters"] == n + hidden + 1
    assert ppo["parameters_in_memory"] == 2 * n + hidden + 1 + sum(p.numel() for p in reward_model.parameters())
    assert grpo["parameters_in_memory"] < ppo["parameters_in_memory"]
    assert grpo["state_MB"] < ppo["state_MB"]
    assert "policy only" in grpo["holds"] and "reward model" in ppo["holds"] and "reference" in ppo["holds"]
    ratios = out["ppo_over_grpo"]
    assert ratios["parameters_in_memory"] == pytest.approx(ppo["parameters_in_memory"] / grpo["parameters_in_memory"],
                                                           abs=0.01) and ratios["parameters_in_memory"] > 1
    assert ratios["seconds_per_step"] > 0


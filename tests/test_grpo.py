"""GRPO with TRL: bad input is refused clearly, and train_grpo really trains, the same under the same seed."""
import copy

import pytest
import torch

from labkit.models import build_model, tiny_llama_config
from labkit.presets import GRPOStageConfig
from labkit.rewards import correctness_reward, length_reward
from labkit.stages.sft_math import add_answer_marker
from labkit.train.grpo import checked_reward, check_group_size, train_grpo
from labkit.world.problems import MARKER, problems

CONFIG = GRPOStageConfig(group_size=4, prompts_per_step=2, steps=2, warmup_steps=0, max_new_tokens=6, lr=5e-2,
                         eval_problems=4)
ROWS = problems("train", 8)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def marked(tok):
    """A copy of the session tokenizer with the answer marker, and a tiny policy that has a row for it."""
    tokenizer = copy.deepcopy(tok)
    policy = build_model(tiny_llama_config(len(tokenizer), 16, 1, 2, 32, 128, tokenizer), seed=0)
    added = add_answer_marker(policy, tokenizer)
    return policy, tokenizer, added


def test_the_marker_is_one_new_token_and_moves_no_other(tok, marked):
    policy, tokenizer, added = marked
    assert added == [len(tok)] and tokenizer.convert_tokens_to_ids(MARKER) == len(tok)
    assert {w: i for w, i in tokenizer.get_vocab().items() if w != MARKER} == tok.get_vocab()
    assert policy.get_input_embeddings().weight.shape[0] == len(tok) + 1
    assert tokenizer.decode(tokenizer("9 - 2 = 7 . #### 7", add_special_tokens=False)["input_ids"]) == "9 - 2 = 7 . #### 7"
    assert add_answer_marker(policy, tokenizer) == []  # a second call adds nothing


def test_group_size_below_two_is_refused():
    with pytest.raises(ValueError, match="group size G must be an integer >= 2, got 1"):
        check_group_size(1)
    with pytest.raises(ValueError, match="GRPOStageConfig.group_size must be an integer >= 2"):
        GRPOStageConfig(group_size=1)
    with pytest.raises(ValueError, match="loss_type"):
        GRPOStageConfig(loss_type="ppo")
    check_group_size(2)


def test_a_bad_reward_function_is_named_in_the_error():
    completions = ["#### 3", "1 + 2 = 3 . #### 3"]

    def broken(prompts, completions, **_):
        raise KeyError("score")

    def short(prompts, completions, **_):
        return [1.0]

    def nan(prompts, completions, **_):
        return [float("nan"), 0.0]

    with pytest.raises(RuntimeError, match="reward function 'broken' raised KeyError"):
        checked_reward(broken)(prompts=["p", "p"], completions=completions)
    with pytest.raises(ValueError, match="'short' returned 1 scores for 2 completions"):
        checked_reward(short)(prompts=["p", "p"], completions=completions)
    with pytest.raises(ValueError, match="'nan' gave completion 0 the score nan"):
        checked_reward(nan)(prompts=["p", "p"], completions=completions)
    wrapped = checked_reward(correctness_reward)
    assert wrapped.__name__ == "correctness_reward"  # TRL logs rewards/<name>/mean
    assert wrapped(prompts=["p", "p"], completions=completions, answer=["3", "4"]) == [1.0, 0.0]


def _run(marked, seed=0, **changes):
    policy, tokenizer, _ = marked
    policy = copy.deepcopy(policy)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    config = GRPOStageConfig(**{**CONFIG.__dict__, **changes})
    result = train_grpo(policy, tokenizer, ROWS, [length_reward], config, seed=seed, progress=False)
    return start, result


def test_two_grpo_steps_change_the_policy_and_repeat_exactly_under_the_same_seed(marked):
    start, first = _run(marked)
    _, second = _run(marked)
    assert first.steps == 2 and len(first.history) == 2
    moved = max(float((first.policy.state_dict()[k] - v).abs().max()) for k, v in start.items())
    assert moved > 1e-3
    for k, v in first.policy.state_dict().items():
        assert torch.equal(v, second.policy.state_dict()[k]), k
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    point = first.history[-1]
    assert {"reward", "reward_std", "zero_std_share", "length", "length_reward"} <= set(point)
    assert 0 <= point["zero_std_share"] <= 1 and point["length"] > 0


def test_lora_grpo_trains_adapters_only_and_merges_them(marked):
    start, result = _run(marked, lora_rank=2, lora_lr=5e-2)
    full = sum(v.numel() for v in start.values())
    assert 0 < result.trainable_parameters < full / 4
    assert set(result.policy.state_dict()) == set(start)  # merged: a plain model again
    moved = max(float((result.policy.state_dict()[k] - v).abs().max()) for k, v in start.items())
    assert moved > 1e-4


def test_rows_without_answers_are_refused_before_training(marked):
    policy, tokenizer, _ = marked
    with pytest.raises(ValueError, match="line 2: no 'answer'"):
        train_grpo(policy, tokenizer, [ROWS[0], {"prompt": ROWS[1]["prompt"]}], [correctness_reward], CONFIG,
                   progress=False)
    with pytest.raises(ValueError, match="no reward functions"):
        train_grpo(policy, tokenizer, ROWS, [], CONFIG, progress=False)


def test_grpo_can_optimise_a_reward_model_on_the_preference_prompts(marked):
    """A reward model is just another reward function to GRPO (the showdown's fair race with PPO);
    the gold reward rides along at weight 0, logged and never trained on."""
    from transformers import LlamaForSequenceClassification

    from labkit.evaluate import gold_reward, reward_model_reward, reward_scores
    from labkit.world import preferences as prefs

    policy, tokenizer, _ = marked
    config = tiny_llama_config(len(tokenizer), 16, 1, 2, 32, 128, tokenizer)
    config.num_labels = 1
    torch.manual_seed(0)
    reward_model = LlamaForSequenceClassification(config).eval()
    rows = prefs.alignment_prompts("train")[:8]
    score = reward_model_reward(reward_model, tokenizer)
    answers = [[{"role": "assistant", "content": "fish , shells"}], [{"role": "assistant", "content": "ropes"}]]
    prompts = [rows[0]["prompt"], rows[1]["prompt"]]
    assert score.__name__ == "reward_model"
    assert score(prompts, answers) == pytest.approx(reward_scores(reward_model, tokenizer, prompts, answers).tolist())
    place, count = [r["place"] for r in rows[:2]], [r["count"] for r in rows[:2]]
    assert gold_reward(prompts, answers, place=place, count=count) == [
        prefs.gold_reward(p, a[0]["content"], n) for p, a, n in zip(place, answers, count)]
    result = train_grpo(copy.deepcopy(policy), tokenizer, rows, [score, gold_reward], CONFIG,
                        reward_weights=[1.0, 0.0], progress=False)
    last = result.history[-1]
    assert {"reward_model", "gold_reward"} <= set(last)
    assert last["reward"] == pytest.approx(last["reward_model"], abs=1e-5)  # gold has weight 0
    with pytest.raises(ValueError, match="2 reward weights for 1 reward functions"):
        train_grpo(policy, tokenizer, rows, [score], CONFIG, reward_weights=[1.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="prompt row 2: no 'prompt'"):
        train_grpo(policy, tokenizer, [rows[0], {"place": "bakery"}], [score], CONFIG, progress=False)


def test_skipping_the_answers_of_zero_advantage_takes_trls_own_step(marked, tmp_path):
    """All-equal groups have advantage 0: their answers add nothing to the gradient, so the stage's trainer
    leaves them out of the update. The first step's gradient is TRL's own, for fewer rows computed."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from labkit import flops, runtime
    from labkit.train.grpo import InformativeGRPOTrainer, grpo_config, informative_rows, prompts_dataset

    policy, tokenizer, _ = marked
    config = GRPOStageConfig(**{**CONFIG.__dict__, "prompts_per_step": 4, "steps": 1})

    def first_group_silent(prompts, completions, **columns):  # the batch's first group all scores 0
        lengths = length_reward(prompts=prompts, completions=completions, **columns)
        return [0.0 if i < config.group_size else score for i, score in enumerate(lengths)]

    class Gradients(TrainerCallback):
        seen = None

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.seen = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    def first_step(trainer_class):
        runtime.seed_everything(0)
        trainer = trainer_class(model=copy.deepcopy(policy), reward_funcs=[checked_reward(first_group_silent)],
                                args=grpo_config(config, str(tmp_path / trainer_class.__name__)),
                                train_dataset=prompts_dataset(ROWS), processing_class=tokenizer)
        trainer.args.max_grad_norm = 0  # compare the gradients as computed, scale included
        grads = Gradients()
        trainer.add_callback(grads)
        with flops.counting() as count:
            trainer.train()
        return grads.seen, count.training

    trl, trl_flops = first_step(GRPOTrainer)
    ours, our_flops = first_step(InformativeGRPOTrainer)
    assert trl.keys() == ours.keys() and len(trl) > 5
    for name in trl:
        torch.testing.assert_close(ours[name], trl[name], rtol=1e-4, atol=1e-7, msg=name)
    assert any(float(g.abs().max()) > 0 for g in trl.values())
    assert our_flops <= 0.8 * trl_flops  # a quarter of the answers or more left out

    # the rows kept: every answer of nonzero advantage, and the completion columns they need
    batch = {"advantages": torch.tensor([0.0, 0.5, 0.0, -0.5]), "num_items_in_batch": torch.tensor(9),
             "completion_ids": torch.arange(16).view(4, 4),
             "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])}
    kept = informative_rows(batch)
    assert kept["advantages"].tolist() == [0.5, -0.5] and int(kept["num_items_in_batch"]) == 9
    assert kept["completion_ids"].tolist() == [[4, 5, 6], [12, 13, 14]]
    silent = informative_rows({**batch, "advantages": torch.zeros(4)})
    assert silent["advantages"].tolist() == [0.0] and silent["completion_ids"].shape == (1, 4)

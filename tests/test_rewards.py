"""GRPO's pieces: the answer extractor in every form, the rule rewards, and advantages equal to TRL's."""
import pytest
import torch

from labkit.losses import grpo_advantages
from labkit.rewards import (completion_text, correctness_reward, extract_final_answer, format_reward, length_reward,
                            same_number)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, expected", [
    ("she buys 3 more, so 1,234\n#### 1,234", "1234"),       # the GSM8K marker, thousands separator
    ("#### -1,234.5", "-1234.5"),                              # negative decimal after the marker
    ("#### 5 #### 6", "5"),                                    # the first marker ends the answer (the card says so)
    ("2 + 3 = 5\n#### 5\n#### 6", "5"),                        # a second marker cannot hedge between two answers
    ("The answer is 42.", "42"),                               # a closing phrase, sentence full stop dropped
    ("answer: -5", "-5"),
    ("It costs $1,200.50 in total.", "1200.50"),               # decimals kept as written
    ("3 apples and 4 pears. The answer is 10 apples", "10"),  # several numbers: the phrase wins
    ("first 3, then 7", "7"),                                  # no marker, no phrase: the last number
    ("He has -2.", "-2"),
    ("no number here", None),
    ("", None),
])
def test_extract_final_answer_every_form(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_final_answer_refuses_a_non_string():
    with pytest.raises(TypeError, match="expects a string"):
        extract_final_answer(42)


def test_answers_are_compared_as_numbers():
    assert same_number("1200.50", 1200.5) and same_number("1,234", "1234") and same_number("-3", -3)
    assert not same_number(None, 3) and not same_number("3", 4) and not same_number("x", "3")


def test_rule_rewards_score_strings_and_chat_completions():
    completions = ["7 - 2 = 5\n#### 5", [{"role": "assistant", "content": "The answer is 6."}], "no idea",
                   "#### 5 apples"]
    assert correctness_reward(None, completions, answer=[5, 6, 1, 5]) == [1.0, 1.0, 0.0, 1.0]
    assert format_reward(None, completions) == [1.0, 0.0, 0.0, 0.0]  # "#### 5 apples" does not end the answer
    assert length_reward(None, completions, max_words=4) == [1.0, 1.0, 0.5, 0.75]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        correctness_reward(None, completions[:2], answer=[5])
    with pytest.raises(TypeError, match="a completion is a string or a list"):
        completion_text(3)
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        length_reward(None, completions, max_words=0)


def test_grpo_advantages_equal_trls_on_the_same_rewards(tok, tmp_path):
    """TRL's GRPOTrainer scores one batch (3 prompts × 4 answers) with rewards we choose; its advantages are ours."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from labkit.models import build_model, tiny_llama_config
    from labkit.train.common import common_args
    from labkit.world import preferences as prefs

    rewards = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5, -1.0, 3.0, 0.0]  # the middle group: no variance

    def chosen_rewards(prompts, completions, **_):
        return rewards[:len(completions)]

    prompts = [row["prompt"] for row in prefs.alignment_prompts("train")[:3]]
    args = GRPOConfig(num_generations=4, max_completion_length=4, beta=0.0,
                      **common_args(output_dir=str(tmp_path), steps=1, batch_size=12, lr=1e-3, warmup_steps=0, seed=0))
    trainer = GRPOTrainer(model=build_model(tiny_llama_config(len(tok), 16, 1, 2, 32, 64, tok), seed=0),
                          reward_funcs=[chosen_rewards], args=args, processing_class=tok,
                          train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]))
    scored = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(4)])
    ours = grpo_advantages(torch.tensor(rewards), group_size=4)
    assert scored["advantages"].tolist() == pytest.approx(ours.tolist(), abs=1e-6)
    assert ours[4:8].tolist() == [0.0] * 4 and ours[:4].abs().max() > 0.8  # zero variance, zero signal

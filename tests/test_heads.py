"""The summed-score reward model (labkit.heads): what it computes, what cancels in a pair, and that it
saves and loads back as itself wherever labkit loads a reward model."""
import dataclasses

import pytest
import torch
from transformers import LlamaForSequenceClassification

from labkit import checkpoint, heads, losses, pipeline
from labkit.models import build_model, tiny_llama_config
from labkit.presets import RewardStageConfig, get_preset
from labkit.train import reward as rm
from labkit.world import preferences as prefs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(tok, tmp_path_factory):
    """A causal LM of the smoke preset's size, saved as the SFT stage saves one."""
    size = get_preset("smoke").model
    path = tmp_path_factory.mktemp("sft")
    build_model(tiny_llama_config(len(tok), size.d_model, size.n_layers, size.n_heads, size.d_ff, size.max_len, tok),
                seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def summed(base_dir):
    torch.manual_seed(0)
    model = rm.reward_model_from(base_dir, "sum").eval()
    with torch.no_grad():  # a head far from zero, so that every token's score matters
        model.score.weight.normal_(0, 1.0)
    return model


def per_token(model, ids):
    """The head's score at every position of one unpadded row."""
    with torch.no_grad():
        return model.score(model.base_model(ids[None]).last_hidden_state)[0, :, 0]


def encode(tok, pair, side):
    text = tok.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
    return torch.tensor(tok(text, add_special_tokens=False)["input_ids"])


def prompt_length(tok, pair):
    return len(tok(tok.apply_chat_template(pair["prompt"], tokenize=False), add_special_tokens=False)["input_ids"])


def test_the_model_sums_its_head_over_every_token_and_the_score_counts_the_answers_whatever_the_padding(summed, tok):
    pairs = prefs.preference_pairs("test", 6)
    prompts = [p["prompt"] for p in pairs]
    answers = [p["chosen"] for p in pairs]
    whole = torch.stack([per_token(summed, encode(tok, p, "chosen")).sum() for p in pairs])
    with torch.no_grad():  # the model's own output: the sum over every token, prompt included
        out = summed(encode(tok, pairs[0], "chosen")[None]).logits
    assert out.shape == (1, 1) and float(out) == pytest.approx(float(whole[0]), abs=1e-4)
    # reward_scores, which every caller uses, counts the answer's tokens only
    expected = torch.stack([per_token(summed, encode(tok, p, "chosen"))[prompt_length(tok, p):].sum() for p in pairs])
    assert not torch.allclose(expected, whole, atol=1e-2)
    for side in ("right", "left"):
        tok.padding_side = side
        try:
            batched = rm.reward_scores(summed, tok, prompts, answers)  # one padded batch, as every caller scores
        finally:
            tok.padding_side = "right"
        assert torch.allclose(batched, expected, atol=1e-4), side
    assert len(set(len(encode(tok, p, "chosen")) for p in pairs)) > 1  # the batch really was padded
    # not the last token's score, which is what the plain class would give
    last = torch.stack([per_token(summed, encode(tok, p, "chosen"))[-1] for p in pairs])
    assert not torch.allclose(expected, last, atol=1e-2)


def test_in_a_pair_the_prompts_tokens_cancel(summed, tok):
    pair = prefs.preference_pairs("test", 1)[0]
    a, b = encode(tok, pair, "chosen"), encode(tok, pair, "rejected")
    prompt_len = prompt_length(tok, pair)
    assert torch.equal(a[:prompt_len], b[:prompt_len]) and prompt_len > 3
    score_a, score_b = per_token(summed, a), per_token(summed, b)
    # causal attention: the prompt's positions see the prompt only, so they score alike in both answers
    assert torch.allclose(score_a[:prompt_len], score_b[:prompt_len], atol=1e-5)
    assert abs(float(score_a[:prompt_len].sum())) > 0.1  # and they are not zero: they do cancel
    chosen, rejected = rm.pair_scores(summed, tok, [pair])
    difference = float(chosen - rejected)
    assert difference == pytest.approx(float(score_a[prompt_len:].sum() - score_b[prompt_len:].sum()), abs=1e-4)


def test_a_summed_reward_model_saves_and_loads_back_as_itself(summed, tok, tmp_path, base_dir):
    pairs = prefs.preference_pairs("test", 4)
    before = rm.pair_scores(summed, tok, pairs)
    checkpoint.save_checkpoint(tmp_path / "reward", summed, tok, {"stage": "reward"})
    loaded, loaded_tok, meta = checkpoint.load_checkpoint(tmp_path / "reward", device="cpu")
    assert type(loaded).__name__ == "SummedLlamaForSequenceClassification" and loaded.config.reward_pooling == "sum"
    assert isinstance(loaded, LlamaForSequenceClassification) and meta == {"stage": "reward"}
    after = rm.pair_scores(loaded, loaded_tok, pairs)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(before, after))
    # the plain head stays transformers' own class, its config as it always was
    plain = rm.reward_model_from(base_dir)
    assert type(plain) is LlamaForSequenceClassification and not hasattr(plain.config, "reward_pooling")


def test_trls_reward_trainer_trains_the_summed_model_on_bradley_terry(base_dir, tok):
    preset = get_preset("smoke")
    config = dataclasses.replace(preset.reward, pooling="sum")
    model = rm.reward_model_from(base_dir, "sum")
    test = prefs.preference_pairs("train", 32)
    before = float(losses.bradley_terry_loss(*rm.pair_scores(model, tok, test)))
    rm.train_reward(model, tok, test, dataclasses.replace(config, epochs=3, lr=3e-3), progress=False)
    # TRL's loss on a batch is Bradley-Terry on the summed scores labkit computes
    got = rm.trl_batch_loss(model.eval(), tok, test[:8])
    ours = float(losses.bradley_terry_loss(*rm.pair_scores(model, tok, test[:8])))
    assert got["loss"] == pytest.approx(ours, abs=1e-5)
    after = float(losses.bradley_terry_loss(*rm.pair_scores(model, tok, test)))
    assert after < before - 0.05, (before, after)  # it learned the pairs it saw


def test_pooling_is_checked_and_stays_out_of_the_keys_at_last():
    with pytest.raises(ValueError, match="pooling must be one of last, sum, got 'mean'"):
        RewardStageConfig(pooling="mean")
    with pytest.raises(ValueError, match="pooling must be one of last, sum"):
        heads.check_pooling("max")
    cpu = get_preset("cpu")
    last = cpu.replace(reward=dataclasses.replace(cpu.reward, pooling="last"))
    summed_ = cpu.replace(reward=dataclasses.replace(cpu.reward, pooling="sum"))
    moved = {stage for stage in pipeline.STAGES if pipeline.stage_key(stage, last) != pipeline.stage_key(stage, summed_)}
    assert moved == {"reward", "reward_naive", "ppo"}  # the reward models and what learns from them
    # at "last", the value every preset had before pooling existed, the keys are the ones they were: the
    # cpu preset's reward models and PPO before pooling and the shorter pretraining (issue 29); the naive
    # reward model's moved later, when it took its own number of passes (the preset's `reward_naive`), and
    # the reward model's and PPO's when the reward model's pairs took near misses (`policy_edits`)
    before = last.replace(pretrain=dataclasses.replace(cpu.pretrain, steps=540, eval_every=45),
                          reward=dataclasses.replace(last.reward, policy_edits=0.0))
    assert {stage: pipeline.stage_key(stage, before) for stage in ("reward", "reward_naive", "ppo")} == {
        "reward": "e290a55444", "reward_naive": "0374cac927", "ppo": "bcfd311191"}


def test_token_scores_add_up_to_the_score_and_show_where_two_answers_part(summed, tok, base_dir):
    pool = prefs.preference_pairs("test", 400)
    pair = next(p for p in pool if p["chosen"][0]["content"] != p["rejected"][0]["content"]
                and p["rejected"][0]["content"].startswith(p["chosen"][0]["content"]))
    chosen = rm.token_scores(summed, tok, pair["prompt"], pair["chosen"])
    rejected = rm.token_scores(summed, tok, pair["prompt"], pair["rejected"])
    scores = rm.pair_scores(summed, tok, [pair])
    assert chosen["score so far"].iloc[-1] == pytest.approx(float(scores[0]), abs=1e-4)
    assert chosen["score so far"].to_numpy() == pytest.approx(chosen["head"].cumsum().to_numpy(), abs=1e-5)
    assert rejected["score so far"].iloc[-1] == pytest.approx(float(scores[1]), abs=1e-4)
    assert chosen["token"].iloc[0] == "<|assistant|>" and chosen["token"].iloc[-1] == rejected["token"].iloc[-1]
    # the answers share their first tokens (up to the shorter's last word), and score alike there
    shared = len(chosen) - 1
    assert list(chosen["token"][:shared]) == list(rejected["token"][:shared])
    assert chosen["head"][:shared].to_numpy() == pytest.approx(rejected["head"][:shared].to_numpy(), abs=1e-5)
    # a last-token head: the score so far is the head itself, and the last row is the score
    plain = rm.reward_model_from(base_dir).eval()
    table = rm.token_scores(plain, tok, pair["prompt"], pair["chosen"])
    assert table["score so far"].tolist() == table["head"].tolist()
    assert table["score so far"].iloc[-1] == pytest.approx(float(rm.pair_scores(plain, tok, [pair])[0]), abs=1e-4)

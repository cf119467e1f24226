"""Micro-batches sorted by length (``micro_batches``): the same steps, less padding computed.

A batch is padded to its longest row, and the padding is computed like any token (the flop counter
counts it too). SFT's conversations run from a dozen to over a hundred tokens, so a random batch of
32 pads about half its positions. Sorting each random batch by length and passing it through the
model in equal parts (gradient accumulation) pads each part only to its own longest row: the
optimiser's step is the same, the arithmetic less.
"""
import dataclasses
from collections import Counter

import pytest
import torch
from transformers import TrainerCallback
from trl import DPOTrainer, RewardConfig, RewardTrainer, SFTTrainer

from labkit import flops
from labkit.models import build_model, tiny_llama_config
from labkit.presets import DPOStageConfig, RewardStageConfig, SFTStageConfig, get_preset
from labkit.tokenizer import END
from labkit.train import reward as rm
from labkit.train.dpo import dpo_config, pair_lengths, train_dpo
from labkit.train.common import common_args, length_sorted_batches, sort_batches_by_length
from labkit.train.sft import messages_dataset, sft_config, train_sft
from labkit.world import preferences as prefs
from labkit.world.tasks import task_split

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [3 + (7 * i) % 60 for i in range(200)]  # 200 examples of lengths 3..62, mixed


def test_the_batches_are_random_draws_and_each_is_sorted_by_length():
    order = length_sorted_batches(LENGTHS, batch_size=10, steps=40, seed=3)  # two epochs of 20 batches
    assert len(order) == 400
    assert Counter(order[:200]) == Counter(order[200:]) == Counter(range(200))  # each epoch: every example once
    batches = [order[s:s + 10] for s in range(0, 400, 10)]
    assert all([LENGTHS[i] for i in b] == sorted(LENGTHS[i] for i in b) for b in batches)
    # the batches are those of two shuffles, cut in tens: mixed lengths, not one length band per batch
    assert sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) > 30 for b in batches) > 30
    assert order[:200] != order[200:]
    assert order == length_sorted_batches(LENGTHS, batch_size=10, steps=40, seed=3)
    assert order != length_sorted_batches(LENGTHS, batch_size=10, steps=40, seed=4)
    assert len(length_sorted_batches(LENGTHS, batch_size=10, steps=25, seed=3)) == 250  # a fractional epoch


def test_sorted_quarters_pad_less_than_the_whole_batch():
    order = length_sorted_batches(LENGTHS, batch_size=16, steps=12, seed=0)

    def padded(part):
        return sum(part * max(LENGTHS[i] for i in order[s:s + part]) for s in range(0, len(order), part))
    assert sum(LENGTHS[i] for i in order) < padded(4) < padded(8) < padded(16)


def test_micro_batches_must_divide_the_batch():
    args = dict(output_dir="x", steps=1, batch_size=32, lr=1e-3, warmup_steps=0, seed=0)
    assert common_args(**args, micro_batches=4)["per_device_train_batch_size"] == 8
    assert common_args(**args, micro_batches=4)["gradient_accumulation_steps"] == 4
    with pytest.raises(ValueError, match="cannot be cut into 5 equal micro-batches"):
        common_args(**args, micro_batches=5)
    with pytest.raises(ValueError, match="micro_batches"):
        SFTStageConfig(micro_batches=0)
    with pytest.raises(ValueError, match="micro_batches"):
        RewardStageConfig(micro_batches=0)
    with pytest.raises(ValueError, match="DPOStageConfig.micro_batches must divide batch_size"):
        DPOStageConfig(batch_size=32, micro_batches=3)


def _tiny(tok):
    size = get_preset("smoke").model
    return build_model(tiny_llama_config(len(tok), size.d_model, size.n_layers, size.n_heads, size.d_ff,
                                         size.max_len, tok), seed=0)


class Gradients(TrainerCallback):
    """The gradient of every weight just before the optimiser's first step."""

    def __init__(self):
        self.seen = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.seen is None:
            self.seen = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _first_gradients(make_trainer, micro_batches, lengths_of, tmp_path):
    """Build a trainer with ``micro_batches``, give it the sorted batches, train one step; its gradients."""
    trainer = make_trainer(micro_batches, str(tmp_path / f"m{micro_batches}"))
    trainer.args.max_grad_norm = 0  # no clipping: the gradients are compared as computed, scale included
    if micro_batches == 1:  # the same sorted batch, in one piece
        trainer.args.train_sampling_strategy = "sequential"
    sort_batches_by_length(trainer, lengths_of(trainer.train_dataset), 8, 1, seed=0)
    grads = Gradients()
    trainer.add_callback(grads)
    trainer.train()
    return grads.seen


def _assert_same_step(one, parts):
    assert one.keys() == parts.keys() and len(one) > 5
    for name in one:
        torch.testing.assert_close(parts[name], one[name], rtol=1e-4, atol=1e-7, msg=name)


def test_sft_in_four_sorted_parts_takes_the_step_of_the_whole_batch(tok, tmp_path):
    rows = task_split("train", 2, categories=("arithmetic", "closed_qa", "rewrite", "extract"))  # 8 rows, mixed lengths
    config = dataclasses.replace(get_preset("smoke").sft, batch_size=8, epochs=1.0, warmup_steps=0)

    def make(micro_batches, out):
        torch.manual_seed(0)
        return SFTTrainer(model=_tiny(tok), processing_class=tok, train_dataset=messages_dataset(rows),
                          args=sft_config(dataclasses.replace(config, micro_batches=micro_batches), len(rows), out))
    lengths = lambda data: [len(ids) for ids in data["input_ids"]]  # noqa: E731
    _assert_same_step(_first_gradients(make, 1, lengths, tmp_path), _first_gradients(make, 4, lengths, tmp_path))


def test_the_reward_model_in_four_sorted_parts_takes_the_step_of_the_whole_batch(tok, tmp_path):
    pairs = prefs.preference_pairs("train", 8)
    _tiny(tok).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")

    def make(micro_batches, out):
        model = rm.reward_model_from(tmp_path / "base")
        model.config.pad_token_id = tok.pad_token_id
        torch.manual_seed(0)
        args = RewardConfig(max_length=None, eos_token=END, **common_args(
            output_dir=out, steps=1, batch_size=8, lr=1e-3, warmup_steps=0, seed=0, micro_batches=micro_batches))
        return RewardTrainer(model=model, args=args, train_dataset=rm.pairs_dataset(pairs), processing_class=tok)

    def lengths(data):
        return [max(len(c), len(r)) for c, r in zip(data["chosen_ids"], data["rejected_ids"])]
    _assert_same_step(_first_gradients(make, 1, lengths, tmp_path), _first_gradients(make, 4, lengths, tmp_path))


def test_sft_with_micro_batches_trains_the_same_steps_on_less_counted_compute(tok):
    rows = task_split("train", 16, categories=("arithmetic", "closed_qa", "rewrite", "extract"))  # 64 rows
    config = dataclasses.replace(get_preset("smoke").sft, batch_size=8, epochs=1.0, warmup_steps=1)
    spent = {}
    for parts in (1, 4):
        with flops.counting() as count:
            result = train_sft(_tiny(tok), tok, rows, dataclasses.replace(config, micro_batches=parts), progress=False)
        assert result.steps == 8
        spent[parts] = count.training
    assert spent[4] < 0.8 * spent[1]


def test_the_reward_stage_sorts_pairs_by_their_longer_answer(tok, tmp_path):
    pairs = prefs.preference_pairs("train", 64)
    config = dataclasses.replace(get_preset("smoke").reward, batch_size=8, epochs=1.0, warmup_steps=1)
    _tiny(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    spent = {}
    for parts in (1, 4):
        model = rm.reward_model_from(tmp_path)
        with flops.counting() as count:
            result = rm.train_reward(model, tok, pairs, dataclasses.replace(config, micro_batches=parts), progress=False)
        assert result.steps == 8
        spent[parts] = count.training
    assert spent[4] < 0.95 * spent[1]


def test_dpo_in_four_sorted_parts_takes_the_step_of_the_whole_batch(tok, tmp_path):
    pairs = prefs.preference_pairs("train", 8)
    reference = _tiny(tok).eval().requires_grad_(False)
    config = DPOStageConfig(train_pairs=8, batch_size=8, epochs=1.0, warmup_steps=0, lr=1e-3)

    def make(micro_batches, out):
        torch.manual_seed(0)
        policy = _tiny(tok)
        with torch.no_grad():  # not the reference itself: the log-ratios, and so the gradient's weights, differ
            for p in policy.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return DPOTrainer(model=policy, ref_model=reference, processing_class=tok, train_dataset=rm.pairs_dataset(pairs),
                          args=dpo_config(dataclasses.replace(config, micro_batches=micro_batches), len(pairs), out))
    _assert_same_step(_first_gradients(make, 1, pair_lengths, tmp_path), _first_gradients(make, 4, pair_lengths, tmp_path))


def test_dpo_with_micro_batches_trains_the_same_steps_on_less_counted_compute(tok):
    pairs = prefs.preference_pairs("train", 64)
    config = DPOStageConfig(train_pairs=64, batch_size=8, epochs=1.0, warmup_steps=1, lr=1e-3)
    spent = {}
    for parts in (1, 4):
        policy = _tiny(tok)
        reference = _tiny(tok)
        with flops.counting() as count:
            result = train_dpo(policy, tok, pairs, dataclasses.replace(config, micro_batches=parts), reference=reference,
                               progress=False)
        assert result.steps == 8
        spent[parts] = count.training
    assert spent[4] < 0.95 * spent[1]

"""The hub preset's whole path, offline: every stage on a local model with a real sub-word tokenizer.

The model is made here, as a hub model is made: a byte-level BPE trained with ``tokenizers`` on the
world's own text, SmolLM2-Instruct's special tokens and chat template (ChatML, a default system
prompt, no ``{% generation %}`` markers), SmolLM2's architecture (a Llama with grouped-query
attention and tied embeddings) at toy size, saved with ``save_pretrained``. The ``hub`` preset
pointed at that folder, with the ``smoke`` preset's stage sizes, must run every stage and report the
same keys as ``smoke``. The other tests pin what sub-words could break: the loss mask, the stop
token and the ``####`` answer.
"""
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from labkit import pipeline, world
from labkit.presets import get_preset
from labkit.stages import STAGES
from labkit.world import preferences as prefs
from labkit.world import problems as word_problems
from labkit.world.tasks import task_split

pytestmark = pytest.mark.usefixtures("one_thread")

STAGE_NAMES = ["pretrain", "sft", "reward", "ppo", "dpo", "dpo_online", "sft_math", "grpo"]
TRAINED = STAGE_NAMES[1:]  # under `hub` the pretrain stage measures the hub model instead of training one

# SmolLM2-135M-Instruct's chat template, as its tokenizer_config.json ships it.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _world_text():
    """What the BPE learns its merges from: stories, instructions and answers, word problems, preference answers."""
    yield from (d.text for d in world.corpus("train", 300))
    for row in task_split("train", 40):
        yield from (m["content"] for m in row["messages"])
    for row in word_problems.problems("train", 100):
        yield from (m["content"] for m in row["messages"])
    for pair in prefs.preference_pairs("train", 200):
        yield pair["prompt"][-1]["content"]
        yield pair["chosen"][0]["content"]


def sub_word_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE with SmolLM2-Instruct's special tokens (pad = eos = ``<|im_end|>``) and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_world_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    return tokenizer


def toy_smollm2(tokenizer) -> LlamaForCausalLM:
    """SmolLM2's architecture (Llama, grouped-query attention, tied embeddings, RoPE θ = 100,000) at toy size."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def tok():
    return sub_word_tokenizer()


@pytest.fixture(scope="module")
def hub_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("hub") / "toy-smollm2"
    toy_smollm2(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def hub_smoke_preset(path):
    """The hub preset on the model in ``path``, every stage at the smoke preset's size."""
    smoke = get_preset("smoke")
    sizes = ("sft", "reward", "ppo", "dpo", "dpo_online", "sft_math", "grpo")
    return get_preset("hub").replace(hub_model=str(path), n_val_docs=10,
                                     **{name: getattr(smoke, name) for name in sizes})


@pytest.fixture(scope="module")
def reports(hub_dir):
    """The headless pipeline's reports, every stage, under ``smoke`` and under ``hub`` on the toy model (each
    trained once)."""
    return (pipeline.run(STAGE_NAMES, get_preset("smoke"), progress=False),
            pipeline.run(STAGE_NAMES, hub_smoke_preset(hub_dir), progress=False))


def _numbers(values: dict):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _numbers(value)
        elif isinstance(value, float):
            yield key, value


def test_every_stage_runs_on_a_sub_word_hub_model_and_reports_what_smoke_reports(reports, hub_dir):
    smoke, hub = reports
    assert hub["preset"] == "hub" and list(hub["stages"]) == STAGE_NAMES
    for stage in TRAINED:
        assert set(hub["stages"][stage]) == set(smoke["stages"][stage]), stage
        assert set(hub["stages"][stage]) == set(STAGES[stage].report), stage
    measured = hub["stages"]["pretrain"]
    assert {"seconds", "val_loss", "entropy_floor", "unigram_entropy"} <= set(measured)
    assert measured["model"] == str(hub_dir) and measured["val_loss"] > measured["entropy_floor"]
    for stage, values in hub["stages"].items():
        for key, value in _numbers(values):
            assert math.isfinite(value), (stage, key, value)
    rates = {"sft": ["exact_match", "json_valid", "base_exact_match"], "reward": ["accuracy", "bayes_ceiling"],
             "ppo": ["win_rate", "distinct"], "dpo": ["win_rate", "implicit_accuracy"],
             "dpo_online": ["win_rate", "first_label_accuracy", "label_accuracy"],
             "sft_math": ["accuracy", "sampled_accuracy", "worked_share"],
             "grpo": ["accuracy", "sft_accuracy", "zero_std_share"]}
    for stage, keys in rates.items():
        for key in keys:
            assert 0 <= hub["stages"][stage][key] <= 1, (stage, key)
    assert hub["stages"]["ppo"]["kl"] > -0.5 and hub["stages"]["dpo"]["kl"] > -0.5  # a sampled estimate; ≈ 0 here
    assert hub["stages"]["sft"]["steps"] == smoke["stages"]["sft"]["steps"]
    assert hub["stages"]["sft_math"]["train_problems"] == smoke["stages"]["sft_math"]["train_problems"]


def test_sft_trains_on_exactly_the_answer_and_its_end_of_turn_under_the_chatml_template(tok, hub_dir, tmp_path):
    """SmolLM2's template has no {% generation %} markers, which TRL cannot add to it: labkit hands TRL
    prompt/completion pairs instead, and the loss falls on the answer's sub-words and <|im_end|> alone."""
    from trl import SFTTrainer

    from labkit.models import load_causal_lm
    from labkit.tokenizer import assistant_mask, loss_mask_table, marks_assistant_turns
    from labkit.train.sft import messages_dataset, sft_config

    assert not marks_assistant_turns(tok)
    rows = task_split("train", 1, categories=("arithmetic", "classify", "extract"))
    model, _ = load_causal_lm(hub_dir, device="cpu")
    trainer = SFTTrainer(model=model, args=sft_config(get_preset("smoke").sft, len(rows), str(tmp_path), eos_token=None,
                                                      assistant_only_loss=False),
                         train_dataset=messages_dataset(rows, tok), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"]):
        trained = [int(i) for i, label in zip(ids, labels) if label != -100]
        assert tok.decode(trained) == row["answer"] + "<|im_end|>\n"
        whole = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert [i for i, m in zip(whole, assistant_mask(tok, row["messages"])) if m] == trained  # what lab 02 shows
    table = loss_mask_table(tok, rows[0]["messages"])
    assert set(table.loc[table["trained"] == 1, "role"]) == {"assistant"}
    assert table["role"].iloc[0] == "user" and table["role"].iloc[-1] == "assistant"


def _forced(model, tok, script: list[str]):
    """Make ``model`` write the tokens of ``script`` one after the other, whatever it reads: a hook on its head
    lifts the next token's logit far above the rest at each forward pass (``step["n"]`` counts them)."""
    ids = [tok.convert_tokens_to_ids(t) for t in script]
    step = {"n": 0}

    def hook(module, inputs, logits):
        lift = torch.zeros_like(logits)
        lift[:, -1, ids[min(step["n"], len(ids) - 1)]] = 1e4
        step["n"] += 1
        return logits + lift

    return model.lm_head.register_forward_hook(hook), step


@pytest.mark.parametrize("eos", ["<|im_end|>", "<|endoftext|>"])
def test_replies_stop_at_the_end_of_turn_token(tok, hub_dir, eos):
    """<|im_end|> ends a reply even when the tokenizer's end-of-sequence token is another (a base model's)."""
    from labkit.evaluate import sample_answers
    from labkit.models import end_of_turn_token, generate_replies, load_causal_lm, stop_token_ids

    model, tokenizer = load_causal_lm(hub_dir, device="cpu")
    tokenizer.eos_token = eos
    assert end_of_turn_token(tokenizer) == "<|im_end|>"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tokenizer)
    script = [*tokenizer.tokenize(" #### 7"), "<|im_end|>", *tokenizer.tokenize(" and more")]
    prompt = [{"role": "user", "content": "how many eggs does lily have now ?"}]
    handle, step = _forced(model, tokenizer, script)
    try:
        assert generate_replies(model, tokenizer, [prompt], max_new_tokens=12) == ["#### 7"]
        step["n"] = 0
        sampled = sample_answers(model, tokenizer, [{"prompt": prompt}], max_new_tokens=12)
    finally:
        handle.remove()
    assert sampled.answers == ["#### 7"]
    assert tokenizer.convert_ids_to_tokens(sampled.answer_ids[0])[-1] == "<|im_end|>"


def test_grpo_stops_its_answers_at_the_end_of_turn_token(hub_dir):
    """TRL's GRPOTrainer stops on the model's generation_config: labkit adds the template's end of turn to it."""
    import dataclasses

    from labkit.models import load_causal_lm
    from labkit.rewards import correctness_reward
    from labkit.train.grpo import train_grpo

    model, tokenizer = load_causal_lm(hub_dir, device="cpu")
    tokenizer.eos_token = "<|endoftext|>"  # a base model's end of sequence, not the end of a turn
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    seen = []

    def reward(prompts, completions, answer, **_):
        seen.extend(c[0]["content"] for c in completions)
        return correctness_reward(prompts, completions, answer)

    handle, step = _forced(model, tokenizer, [*tokenizer.tokenize(" #### 7"), "<|im_end|>",
                                              *tokenizer.tokenize(" and more")])
    generate = model.generate

    def from_the_start(*args, **kwargs):
        step["n"] = 0
        return generate(*args, **kwargs)

    model.generate = from_the_start
    try:
        config = dataclasses.replace(get_preset("smoke").grpo, steps=1, max_new_tokens=12)
        train_grpo(model, tokenizer, word_problems.problems("train", 2), [reward], config, progress=False)
    finally:
        handle.remove()
    assert seen and set(seen) == {" #### 7"}  # cut at <|im_end|>; TRL keeps the sub-word's leading space


def test_the_final_answer_is_read_from_decoded_sub_words(tok):
    from labkit.rewards import correctness_reward, extract_final_answer, format_reward
    from labkit.stages.sft_math import add_answer_marker

    solution = word_problems.problem("test", 0)["solution"]
    ids = tok(solution)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("####") == 0  # the marker is spelt from pieces
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == solution and extract_final_answer(decoded) == solution.split()[-1]
    # TRL hands GRPO's reward functions the decoded completion, as assistant messages for chat prompts
    completions = [[{"role": "assistant", "content": tok.decode(tok(text)["input_ids"])}]
                   for text in ("2 + 3 = 5 . #### 5", "#### 12", "9 - 2 = 7 . #### 7")]
    assert correctness_reward(None, completions, answer=["5", "12", "7"]) == [1.0, 1.0, 1.0]
    assert format_reward(None, completions) == [1.0, 1.0, 1.0]
    model = toy_smollm2(tok)
    before = len(tok)
    assert add_answer_marker(model, tok) == [] and len(tok) == before  # nothing to add: no <unk> for it

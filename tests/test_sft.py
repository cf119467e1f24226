"""Instruction tuning: new-token embeddings, scoring, the assistant-only loss, the sft stage."""
import json

import pandas as pd
import torch
from trl import SFTTrainer

from labkit import checkpoint, pipeline, world
from labkit.metrics import exact_match, json_valid, score_summary
from labkit.models import build_model, generate_replies, refresh_embeddings, tiny_llama_config
from labkit.presets import get_preset
from labkit.tokenizer import END, train_tokenizer
from labkit.train.sft import messages_dataset, sft_config, tokens_new_to_the_model
from labkit.world.tasks import task_split


def _tokenizer():
    return train_tokenizer((d.text for d in world.corpus("train", 50)), extra_words=world.vocabulary())


def test_new_tokens_are_the_chat_markers_and_task_words_only():
    tok = _tokenizer()
    new = set(tok.convert_ids_to_tokens(tokens_new_to_the_model(tok)))
    assert {"<|user|>", "<|assistant|>", "<|end|>", "7", '"label"', "{", "stale"} <= new
    assert not new & {"mia", "bakery", "two", "<s>", "</s>", "<pad>", "the"}


def test_refresh_embeddings_makes_collapsed_rows_distinct_and_leaves_the_rest():
    tok = _tokenizer()
    model = build_model(tiny_llama_config(len(tok), 32, 1, 2, 64, 64, tok), seed=0)
    weight = model.get_input_embeddings().weight
    ids = tokens_new_to_the_model(tok)
    with torch.no_grad():
        weight[ids] = weight[ids[0]].clone()  # what pretraining does to unseen tokens: one shared direction
    before = weight.detach().clone()
    refresh_embeddings(model, ids, seed=0)
    new = torch.nn.functional.normalize(weight[ids].detach(), dim=-1)
    off_diagonal = (new @ new.T - torch.eye(len(ids))).abs().max()
    assert off_diagonal < 0.8  # distinct directions now (they were all identical)
    keep = [i for i in range(len(tok)) if i not in set(ids)]
    assert torch.equal(weight[keep].detach(), before[keep])
    mean_norm = before[keep].norm(dim=-1).mean()
    torch.testing.assert_close(weight[ids].detach().norm(dim=-1), mean_norm.expand(len(ids)))


def test_exact_match_and_json_validity():
    assert exact_match(" the answer is 7 . ", "the answer is 7 .")
    assert not exact_match("the answer is 8 .", "the answer is 7 .")
    assert json_valid('{ "label" : "positive" , "confidence" : 0.9 , "evidence" : "fresh" }')
    assert not json_valid('{ "label" : "positive" , "confidence" : 0.9 , "evidence" : "fresh"')
    assert not json_valid('{ "label" : "positive" }')


def test_score_summary_per_category_and_overall():
    scores = pd.DataFrame({"category": ["classify", "classify", "rewrite", "rewrite"],
                           "exact": [True, False, True, True],
                           "json_valid": [True, True, None, None]})
    table = score_summary(scores)
    assert table.loc["classify", "exact_match"] == 0.5 and table.loc["classify", "json_valid"] == 1.0
    assert table.loc["rewrite", "exact_match"] == 1.0 and pd.isna(table.loc["rewrite", "json_valid"])
    assert table.loc["overall", "exact_match"] == 0.75 and table.loc["overall", "examples"] == 4


def test_trl_trains_on_the_assistant_tokens_only(tmp_path):
    tok = _tokenizer()
    model = build_model(tiny_llama_config(len(tok), 32, 1, 2, 64, 256, tok), seed=0)
    rows = task_split("train", 1, categories=("arithmetic", "classify"))
    config = get_preset("smoke").sft
    trainer = SFTTrainer(model=model, args=sft_config(config, len(rows), str(tmp_path)),
                         train_dataset=messages_dataset(rows), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"]):
        trained = [int(i) for i, label in zip(ids, labels) if label != -100]
        assert tok.decode(trained) == row["answer"] + " " + END


def test_generate_replies_stop_at_the_end_of_turn_and_return_only_the_reply():
    tok = _tokenizer()
    model = build_model(tiny_llama_config(len(tok), 32, 1, 2, 64, 256, tok), seed=0)
    seen = {}
    bakery, end, pad = tok.convert_tokens_to_ids(["bakery", END, "<pad>"])

    def fake_generate(input_ids, attention_mask, eos_token_id, pad_token_id, **kwargs):
        seen.update(prompt=input_ids.clone(), mask=attention_mask.clone(), eos=eos_token_id, pad=pad_token_id)
        tail = torch.tensor([[bakery, end, pad]] * len(input_ids))
        return torch.cat([input_ids, tail], dim=1)

    model.generate = fake_generate
    conversations = [[{"role": "user", "content": "name the goods sold at the bakery ."}],
                     [{"role": "user", "content": "solve the problem ."}]]
    assert generate_replies(model, tok, conversations) == ["bakery", "bakery"]
    assert end in seen["eos"] and seen["pad"] == pad
    # left padding: both prompts end with the assistant marker, where generation starts
    assert (seen["prompt"][:, -1] == tok.convert_tokens_to_ids("<|assistant|>")).all()
    assert seen["mask"][1, 0] == 0 and seen["mask"][0].all()


def test_sft_stage_writes_its_metrics_and_report_keys(tmp_path):
    preset = get_preset("smoke")
    report = pipeline.run(["sft"], preset, report_path=tmp_path / "report.json", progress=False)
    sft = report["stages"]["sft"]
    assert {"seconds", "exact_match", "json_valid", "base_exact_match"} <= set(sft)
    for key in ("exact_match", "json_valid", "base_exact_match"):
        assert 0.0 <= sft[key] <= 1.0
    # exact match covers the categories with one exact answer; the preference task gets the gold reward
    assert set(sft["per_category"]) == {"classify", "closed_qa", "extract", "arithmetic", "rewrite"}
    assert sft["test_examples"] == 5 * preset.sft.eval_per_category
    assert -10 < sft["gold_reward"] < sft["best_gold_reward"] == 3.25
    assert json.loads((tmp_path / "report.json").read_text())["stages"]["sft"] == sft
    assert "| sft | per_category.classify.exact_match |" in (tmp_path / "report.md").read_text()
    model, tok, meta = checkpoint.load_checkpoint(pipeline.ensure("sft", preset))
    assert tok.eos_token == END and meta["stage"] == "sft" and meta["history"]


def test_a_hub_style_subword_tokenizer_has_no_new_tokens():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
    assert tokens_new_to_the_model(bpe) == []

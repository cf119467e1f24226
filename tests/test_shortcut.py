"""The shortcut split (lab 01) and the tiny classifier that falls for it."""
import pytest

from labkit.tokenizer import UNK_ID
from labkit.train import classify
from labkit.world import shortcut


def test_same_seed_same_examples_other_seed_differs():
    assert shortcut.shortcut_split("train", 50) == shortcut.shortcut_split("train", 50, seed=0)
    assert shortcut.shortcut_split("train", 50, seed=1) != shortcut.shortcut_split("train", 50)
    assert shortcut.shortcut_split("test", 50) != shortcut.shortcut_split("train", 50)
    assert shortcut.shortcut_split("train", 80)[:50] == shortcut.shortcut_split("train", 50)  # prefix


def test_format_agreement_per_split_is_as_seeded():
    counts = {s: sum(e["agrees"] for e in shortcut.shortcut_split(s, 1000)) for s in shortcut.SPLITS}
    assert counts == {"train": 984, "test": 984, "probe": 0, "balanced": 479}
    assert 0.97 <= counts["train"] / 1000 <= 0.99 and 0.97 <= counts["test"] / 1000 <= 0.99
    assert 0.45 <= counts["balanced"] / 1000 <= 0.55


def test_pure_strategies_score_exactly():
    splits = {s: shortcut.shortcut_split(s, 1000) for s in shortcut.SPLITS}
    assert {s: shortcut.rule_accuracy(ex) for s, ex in splits.items()} == dict.fromkeys(shortcut.SPLITS, 1.0)
    assert {s: shortcut.format_accuracy(ex) for s, ex in splits.items()} == {
        "train": 0.984, "test": 0.984, "probe": 0.0, "balanced": 0.479}


def test_fields_are_consistent_and_the_rule_gives_every_label():
    for split in shortcut.SPLITS:
        for e in shortcut.shortcut_split(split, 300):
            assert e["label"] in shortcut.LABELS
            assert e["format"] == e["text"].split()[0]
            assert e["agrees"] == (shortcut.ASSOCIATION[e["label"]] == e["format"])
            assert shortcut.rule_label(e["text"]) == e["label"]


def test_the_rule_is_an_xor_so_no_single_attribute_predicts_the_label():
    assert shortcut.true_label("red", "wings") == "sprite"    # warm, soft
    assert shortcut.true_label("red", "horns") == "golem"     # warm, sharp
    assert shortcut.true_label("blue", "horns") == "sprite"   # cool, sharp
    assert shortcut.true_label("blue", "wings") == "golem"    # cool, soft
    for colour in shortcut.WARM + shortcut.COOL:
        labels = [shortcut.true_label(colour, part) for part in shortcut.SHARP + shortcut.SOFT]
        assert labels.count("sprite") == labels.count("golem")


def test_every_word_is_in_the_vocabulary_and_the_tokenizer():
    vocab = set(shortcut.SHORTCUT_VOCAB)
    assert vocab == set(shortcut.shortcut_vocabulary())
    words = {w for s in shortcut.SPLITS for e in shortcut.shortcut_split(s, 500) for w in e["text"].split()}
    assert words <= vocab
    tokenizer = classify.shortcut_tokenizer()
    assert UNK_ID not in tokenizer(" ".join(sorted(words)))["input_ids"]


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="train.*test.*probe.*balanced"):
        shortcut.shortcut_split("validation", 10)


def test_card_reports_the_splits():
    text = shortcut.card({"train": 100, "probe": 50})
    assert "`train.jsonl`" in text and "`probe.jsonl`" in text and "XOR" in text


def _smoke_run(seed=0):
    splits = {s: shortcut.shortcut_split(s, 200) for s in ("train", "test", "probe")}
    return classify.train_classifier(splits["train"], steps=10, eval_sets=splits, eval_every=5,
                                     seed=seed, progress=False), splits


def test_smoke_run_learns_the_shortcut_and_is_deterministic():
    run, splits = _smoke_run()
    assert run.final["test"] > 0.6                  # beats chance (0.5) on test ...
    assert run.final["probe"] < run.final["test"]   # ... but not where the shortcut points wrong
    assert [h["step"] for h in run.history] == [5, 10]
    assert classify.accuracy(run, None, splits["probe"]) == run.final["probe"]
    assert classify.accuracy(run.model, run.tokenizer, splits["test"]) == run.final["test"]
    assert len(classify.predict(run, [e["text"] for e in splits["test"][:3]])) == 3
    again, _ = _smoke_run()
    assert again.final == run.final and again.history == run.history

"""The synthetic world: determinism, exact probabilities, and the entropy floor."""
import math
import random
from collections import Counter

import pytest

from labkit import data, world
from labkit.world.corpus import OPENERS, P_STORY
from labkit.world.writer import NotFromWorld, Writer


def test_same_seed_same_document_and_other_seed_differs():
    assert world.document("train", 7).tokens == world.document("train", 7).tokens
    assert world.document("train", 7, seed=1).tokens != world.document("train", 7).tokens
    assert world.document("validation", 7).tokens != world.document("train", 7).tokens


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="train"):
        world.document("dev", 0)


def test_pick_requires_distinct_first_words():
    w = Writer(rng=random.Random(0))
    with pytest.raises(ValueError, match="different words"):
        w.pick(["the cat", "the dog"])


def test_replay_recovers_exact_probabilities_of_generated_text():
    for doc in world.corpus("validation", 200):
        replayed = world.score_text(doc.text)
        assert replayed.tokens == doc.tokens
        assert replayed.logp == doc.logp
        assert replayed.entropy == doc.entropy


def test_replay_rejects_text_the_world_cannot_write():
    text = world.document("train", 0).text.split()
    text[3] = "dragon"
    with pytest.raises(NotFromWorld, match="token 3"):
        world.score_text(" ".join(text))


def test_first_token_entropy_matches_hand_computation():
    # 3 story openers share P_STORY, 48 names share the rest (dialogues start with a name).
    n_names = len(world.lexicon.NAMES)
    probs = [P_STORY / 3] * 3 + [(1 - P_STORY) / n_names] * n_names
    expected = -sum(p * math.log(p) for p in probs)
    assert world.document("train", 0).entropy[0] == pytest.approx(expected, abs=1e-12)
    assert len(OPENERS) == 3 and n_names == 48


def test_sampled_frequencies_follow_the_stated_probabilities():
    firsts = Counter(world.document("train", i).tokens[0] for i in range(6000))
    stories = sum(firsts[o.split()[0]] for o in OPENERS) / 6000
    assert stories == pytest.approx(P_STORY, abs=0.02)


def test_floor_equals_mean_negative_log_probability_on_a_large_sample():
    # Mean entropy of the generator's choices vs mean -ln p of what it actually chose: two
    # different sums that agree only if the entropies are computed from the true distributions.
    docs = world.corpus("test", 8000)
    stats = world.entropy_stats(docs)
    assert stats["true_nll"] == pytest.approx(stats["entropy_floor"], rel=0.01)


def test_held_out_file_scored_by_the_generator_matches_the_reported_floor():
    rows = data.read_jsonl(data.DATASETS_DIR / "stories" / "validation.jsonl")
    scored = [world.score_text(r["text"]) for r in rows]          # replay, no seed needed
    n_tokens = sum(len(d.tokens) for d in scored)
    scored_nll = sum(d.nll for d in scored) / n_tokens
    reported = world.entropy_stats(world.corpus("validation", len(rows)))["entropy_floor"]
    assert n_tokens == sum(r["n_tokens"] for r in rows)
    assert scored_nll == pytest.approx(reported, rel=0.01)
    assert reported == pytest.approx(0.45948, abs=1e-4)


def test_corpus_has_structure_worth_learning():
    stats = world.entropy_stats(world.corpus("validation", 1000), world.corpus("train", 2000))
    # The floor is far below the loss of a model that ignores context.
    assert stats["entropy_floor"] / stats["unigram_entropy"] <= 0.6
    assert stats["unigram_entropy"] == pytest.approx(4.62, abs=0.05)
    assert len(world.vocabulary()) >= 300


def test_vocabulary_covers_every_generated_word():
    vocab = set(world.vocabulary())
    for doc in world.corpus("train", 3000, start=5000):
        assert set(doc.tokens[:-1]) <= vocab


def test_documents_are_short_enough_for_the_context_window():
    from labkit.presets import get_preset

    longest = max(len(d.tokens) for d in world.corpus("train", 5000))
    assert longest + 1 <= get_preset("cpu").model.max_len  # + the <s> token

"""The synthetic world: a seeded generator of everything the labs train on, with known statistics.

Pretraining corpus (this module's main export): stories and dialogues whose every token's true
probability is known, so the corpus's entropy rate (the floor under any model's loss, in
nats/token with our word-level tokenizer) is computed exactly, not estimated by a model.

    >>> docs = corpus("train", 1000, seed=0)
    >>> stats = entropy_stats(docs)      # {'entropy_floor': ..., 'unigram_entropy': ..., ...}
    >>> score_text(docs[0].text).nll     # replay any text through the generator

The shortcut split for lab 01 lives in :mod:`labkit.world.shortcut`.
"""
from __future__ import annotations

import functools

import math
import random
from collections import Counter
from typing import Iterable, Sequence

from labkit.world import lexicon
from labkit.world.corpus import write_document
from labkit.world.writer import EOS, Doc, NotFromWorld, Writer

SPLITS = ("train", "validation", "test")

__all__ = ["Doc", "EOS", "NotFromWorld", "Writer", "corpus", "document", "entropy_stats",
           "score_text", "unigram_counts", "vocabulary", "lexicon"]


def document(split: str, index: int, seed: int = 0) -> Doc:
    """Document ``index`` of ``split``; each has its own random stream, so any one is reproducible."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}")
    return write_document(Writer(rng=random.Random(f"labkit-world/{seed}/{split}/{index}")))


def corpus(split: str, n: int, seed: int = 0, start: int = 0) -> list[Doc]:
    """Documents ``start .. start+n-1`` of ``split`` for world ``seed``."""
    return [document(split, i, seed) for i in range(start, start + n)]


def score_text(text: str) -> Doc:
    """Replay ``text`` through the generator: the true ln-probability of each of its tokens.

    The final ``</s>`` is scored too (a model predicts it). Raises :class:`NotFromWorld` for text
    the world could not have written, naming the first token that breaks the rules.
    """
    return write_document(Writer(replay=text.split() + [EOS]))


def unigram_counts(docs: Iterable[Doc]) -> Counter:
    """How often each token (``</s>`` included) occurs in ``docs``."""
    counts: Counter = Counter()
    for d in docs:
        counts.update(d.tokens)
    return counts


def entropy_stats(docs: Sequence[Doc], unigram_docs: Sequence[Doc] | None = None) -> dict[str, float]:
    """The numbers a model's loss is compared with, all in nats per predicted token.

    - ``entropy_floor``: the mean over tokens of the entropy of the generator's next-token
      distribution, H(x_t | x_<t). No model can beat it on average; it is the loss the generator
      itself would get in expectation.
    - ``true_nll``: the generator's actual mean −ln p on these very tokens (a sample of the same
      quantity; it agrees with the floor up to sampling noise).
    - ``unigram_entropy``: entropy of the token frequencies (from ``unigram_docs``, default
      ``docs``): the best loss of a model that ignores context.
    """
    n = sum(len(d.tokens) for d in docs)
    counts = unigram_counts(unigram_docs if unigram_docs is not None else docs)
    total = sum(counts.values())
    unigram = -sum(c / total * math.log(c / total) for c in counts.values())
    return {
        "entropy_floor": sum(sum(d.entropy) for d in docs) / n,
        "true_nll": sum(d.nll for d in docs) / n,
        "unigram_entropy": unigram,
        "tokens": n,
        "documents": len(docs),
    }


@functools.lru_cache(maxsize=1)
def story_vocabulary() -> frozenset[str]:
    """Every word the stories and dialogues can contain: the words pretraining ever shows a model."""
    words = set(lexicon.all_words())
    for i in range(2000):  # the connecting words of the templates all turn up in a sample
        words.update(document("train", i, seed=12345).tokens)
    return frozenset(words - {EOS})


def vocabulary() -> list[str]:
    """Every word the world can write, stories and tasks, sorted (a tokenizer with no unknown words)."""
    from labkit.world.tasks import task_vocabulary

    return sorted(story_vocabulary() | task_vocabulary())

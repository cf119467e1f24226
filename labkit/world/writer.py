"""The Writer: a text generator that knows the probability of every token it writes.

Every random choice the world makes goes through :meth:`Writer.pick`, which writes the chosen
option at once. Options offered together start with different words, so the text alone tells which
option was taken. Two things follow:

* each token's probability given everything before it is known exactly: the chosen option's
  probability for a token that opens a choice, 1 for a token the story forces;
* any text can be *replayed*: run the same program with the text as the source of choices
  (``Writer(replay=tokens)``) and it recovers those probabilities without knowing the seed.

The entropy of the choice at each token gives the corpus's entropy rate, the floor under any
model's loss.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

EOS = "</s>"


class NotFromWorld(ValueError):
    """Raised when replayed text could not have been written by the world.

    ``position`` is the index of the first token that breaks the rules, ``token`` that token.
    """

    def __init__(self, message: str, position: int = -1, token: str = ""):
        super().__init__(message)
        self.position, self.token = position, token


@dataclass
class Doc:
    """One generated document: its tokens and the generator's own view of each."""

    tokens: list[str] = field(default_factory=list)   # ends with "</s>"
    logp: list[float] = field(default_factory=list)   # ln p(token | everything before), nats
    entropy: list[float] = field(default_factory=list)  # entropy of the choice at that token, nats

    @property
    def text(self) -> str:
        """The document as stored in a file: tokens joined by spaces, without the final </s>."""
        return " ".join(t for t in self.tokens if t != EOS)

    @property
    def nll(self) -> float:
        """−ln p(document), nats."""
        return -sum(self.logp)


class Writer:
    """Writes tokens, sampling choices from ``rng`` or reading them from ``replay``."""

    def __init__(self, rng: random.Random | None = None, replay: Sequence[str] | None = None):
        if (rng is None) == (replay is None):
            raise ValueError("Writer needs exactly one of rng= (to sample) or replay= (to score)")
        self.rng = rng
        self.replay = list(replay) if replay is not None else None
        self.doc = Doc()

    def _emit(self, token: str, logp: float, entropy: float) -> None:
        if self.replay is not None:
            i = len(self.doc.tokens)
            seen = self.replay[i] if i < len(self.replay) else "<end of text>"
            if seen != token:
                raise NotFromWorld(f"token {i}: expected {token!r}, found {seen!r}", i, seen)
        self.doc.tokens.append(token)
        self.doc.logp.append(logp)
        self.doc.entropy.append(entropy)

    def say(self, text: str) -> None:
        """Write words the story forces (probability 1, entropy 0)."""
        for word in text.split():
            self._emit(word, 0.0, 0.0)

    def pick(self, options: Sequence[str], weights: Sequence[float] | None = None) -> int:
        """Choose one option (weights need not sum to 1), write it, and return its index."""
        if not options:
            raise ValueError("pick() needs at least one option")
        firsts = [o.split()[0] for o in options]
        if len(set(firsts)) != len(firsts):
            raise ValueError(f"options must start with different words, got {firsts}")
        weights = [1.0] * len(options) if weights is None else list(weights)
        if len(weights) != len(options) or min(weights) <= 0:
            raise ValueError("weights must be positive, one per option")
        total = sum(weights)
        probs = [w / total for w in weights]
        if self.replay is None:
            idx = self.rng.choices(range(len(options)), weights=probs)[0]
        else:
            i = len(self.doc.tokens)
            seen = self.replay[i] if i < len(self.replay) else "<end of text>"
            if seen not in firsts:
                shown = ", ".join(firsts[:8]) + (f", … ({len(firsts)} in all)" if len(firsts) > 8 else "")
                raise NotFromWorld(f"token {i}: {seen!r} is none of the possible words [{shown}]", i, seen)
            idx = firsts.index(seen)
        entropy = -sum(p * math.log(p) for p in probs)
        words = options[idx].split()
        self._emit(words[0], math.log(probs[idx]), entropy)
        for word in words[1:]:
            self._emit(word, 0.0, 0.0)
        return idx

    def choose(self, options: Sequence[str], weights: Sequence[float] | None = None) -> str:
        """Like :meth:`pick` but returns the chosen option's text."""
        return options[self.pick(options, weights)]

    def end(self) -> Doc:
        """Write the end-of-document token (forced) and return the finished document."""
        self.say(EOS)
        if self.replay is not None and len(self.doc.tokens) != len(self.replay):
            n = len(self.doc.tokens)
            raise NotFromWorld(f"text goes on after the document ended at token {n}", n, self.replay[n])
        return self.doc
